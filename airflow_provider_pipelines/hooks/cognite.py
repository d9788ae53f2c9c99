"""Cognite Data Fusion (CDF) hook: entity matching pipelines, advanced joins, extraction pipelines.

Facts: ``shared/api/cognite.md``. Paths are relative to
``https://{cluster}.cognitedata.com/api/v1/projects/{project}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from airflow_provider_pipelines._compat import AirflowException, Connection
from airflow_provider_pipelines.hooks._auth import CachedTokenAuth, StaticHeaderAuth, credential_key
from airflow_provider_pipelines.hooks._base import PipelinesHook, ResolvedConnection, require
from airflow_provider_pipelines.hooks._http import (
    ApiRequest,
    HttpCore,
    HttpSettings,
    Redactor,
    require_https,
)

#: ``cdf-version`` header per API, following each API's documented maturity (cognite.md §0).
#: Whether the server *requires* it is unconfirmed; we always send it. Correct here if CDF
#: promotes an API (e.g. entity matching pipelines to stable).
CDF_VERSIONS: dict[str, str | None] = {
    "entity_matching_pipelines": "20230101-beta",
    "advanced_joins": "20230101-alpha",
    "extraction_pipelines": None,  # stable 20230101: the default, no header needed
}

#: Extraction pipeline run statuses (lower case, cognite.md §3a).
EXTPIPE_RUN_STATUSES = ("success", "failure", "seen")
#: Longest extraction pipeline run message (inferred from Cognite's own libraries, §3a).
EXTPIPE_MESSAGE_MAX = 1000
#: Page size when listing extraction pipeline runs (official maximum unconfirmed; 1000 assumed).
EXTPIPE_LIST_LIMIT = 1000


class CogniteProfile:
    """How CDF reports errors: ``{"error": {"code", "message", "missing"...}}`` + ``x-request-id``."""

    name = "Cognite"

    def error_message(self, status: int, body: Any, text: str) -> str:
        if not isinstance(body, dict):
            return ""
        error = body.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            for key in ("missing", "duplicated"):
                if error.get(key):
                    message += f" ({key}: {error[key]})"
            return message
        if isinstance(error, str):  # OAuth token endpoint or a plain-string CDF error
            description = body.get("error_description")
            return f"{error}: {description}" if description else error
        return ""

    def request_ids(
        self, response_headers: Mapping[str, str], sent_headers: Mapping[str, str]
    ) -> tuple[str | None, str | None]:
        return response_headers.get("x-request-id") or response_headers.get("X-Request-ID"), None

    def body_error(self, body: Any) -> str | None:
        return None


def _scopes(value: Any, host: str) -> str:
    if value in (None, ""):
        return f"{host}/.default"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return " ".join(str(value).replace(",", " ").split())


def _int_id(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer id, got {value!r}.")
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer id, got {value!r}.") from None
    if not 1 <= number <= 9007199254740991:
        raise ValueError(f"{name} must be between 1 and 9007199254740991, got {value!r}.")
    return number


class CogniteHook(PipelinesHook):
    """Talks to Cognite Data Fusion.

    Connection (conn type ``cognite``): host = ``https://{cluster}.cognitedata.com``;
    login = client id; password = client secret; extra: ``project`` (required), ``token_url``,
    ``scopes`` (default ``{host}/.default``), or ``token`` (a static bearer token instead of
    client credentials). Optional extras: ``connect_timeout``, ``read_timeout``, ``max_attempts``,
    ``max_retry_seconds``, ``ca_bundle``.

    :param cognite_conn_id: the Airflow connection id.
    """

    conn_name_attr = "cognite_conn_id"
    default_conn_name = "cognite_default"
    conn_type = "cognite"
    hook_name = "Cognite Data Fusion"
    profile: ClassVar[CogniteProfile] = CogniteProfile()

    def __init__(self, cognite_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(cognite_conn_id, **kwargs)
        self.cognite_conn_id = self.conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_provider_pipelines.get_provider_info import connection_ui

        return connection_ui("cognite")

    # ---- connection -------------------------------------------------------------------------

    def _resolve(self, conn: Connection, extra: Mapping[str, Any]) -> ResolvedConnection:
        cid = self.conn_id
        host = require(conn.host, "host", cid, "Set it to your cluster URL, e.g. https://westeurope-1.cognitedata.com.")
        if "://" not in host:
            host = f"https://{host}"
        host = require_https(host, conn_id=cid)
        project = require(extra.get("project"), "project in its extra", cid,
                          'Add {"project": "<your CDF project>"} to the connection extra.')
        http = HttpSettings.from_extra(extra, cid)
        static_token = extra.get("token")
        secrets: list[str] = []
        if static_token:
            auth: Any = StaticHeaderAuth("Authorization", f"Bearer {static_token}")
            secrets.append(str(static_token))
        else:
            client_id = require(conn.login, "client id (login)", cid,
                                "Set login to the OAuth client id, or put a static 'token' in the extra.")
            client_secret = require(conn.password, "client secret (password)", cid,
                                    "Set password to the OAuth client secret.")
            token_url = require(extra.get("token_url"), "token_url in its extra", cid,
                                'Add {"token_url": "https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token"}.')
            token_url = require_https(str(token_url), conn_id=cid, field_name="token_url")
            scope = _scopes(extra.get("scopes"), host)
            secrets.append(client_secret)
            auth = self._client_credentials(token_url, client_id, client_secret, scope, http, secrets)
        return ResolvedConnection(
            base_url=f"{host}/api/v1/projects/{quote(str(project), safe='')}",
            http=http, auth=auth, secrets=secrets, options={"project": project, "host": host},
        )

    def _client_credentials(
        self, token_url: str, client_id: str, client_secret: str, scope: str, http: HttpSettings,
        secrets: list[str],
    ) -> CachedTokenAuth:
        core = HttpCore(self.profile, http, None, Redactor(secrets), self._default_headers())

        def request() -> ApiRequest:
            return ApiRequest(
                "POST", token_url, "request an OAuth token", f"client {client_id} at {token_url}",
                data={"grant_type": "client_credentials", "client_id": client_id,
                      "client_secret": client_secret, "scope": scope},
                authenticated=False, idempotent=True,
            )

        def parse(body: Any) -> tuple[str, float]:
            if not isinstance(body, dict) or not body.get("access_token"):
                raise AirflowException(f"The token endpoint {token_url} answered without an access_token.")
            return str(body["access_token"]), float(body.get("expires_in") or 3600)

        def fetch() -> tuple[str, float]:
            return parse(core.request(request()).body)

        async def afetch() -> tuple[str, float]:
            return parse((await core.arequest(request())).body)

        key = credential_key("cognite", token_url, client_id, scope, client_secret)
        return CachedTokenAuth(key, fetch, afetch)

    # ---- request specs (shared by the sync and async methods) ----------------------------------

    @staticmethod
    def _cdf(api: str) -> dict[str, str]:
        version = CDF_VERSIONS[api]
        return {"cdf-version": version} if version else {}

    def _spec_run_pipeline(self, pipeline_id: int) -> dict[str, Any]:
        pid = _int_id("pipeline_id", pipeline_id)
        return {"method": "POST", "path": f"/context/entitymatching/pipelines/{pid}/runs",
                "operation": "run entity matching pipeline", "resource": f"pipeline {pid}",
                "headers": self._cdf("entity_matching_pipelines"), "idempotent": False}

    def _spec_get_pipeline_run(self, pipeline_id: int, job_id: int) -> dict[str, Any]:
        pid, jid = _int_id("pipeline_id", pipeline_id), _int_id("job_id", job_id)
        return {"method": "GET", "path": f"/context/entitymatching/pipelines/{pid}/runs/{jid}",
                "operation": "get entity matching pipeline run", "resource": f"pipeline {pid} run {jid}",
                "headers": self._cdf("entity_matching_pipelines")}

    def _spec_list_pipeline_runs(self, pipeline_id: int, limit: int, cursor: str | None) -> dict[str, Any]:
        pid = _int_id("pipeline_id", pipeline_id)
        return {"method": "GET", "path": f"/context/entitymatching/pipelines/{pid}/runs",
                "operation": "list entity matching pipeline runs", "resource": f"pipeline {pid}",
                "headers": self._cdf("entity_matching_pipelines"),
                "params": {"limit": max(1, min(int(limit), 100)), **({"cursor": cursor} if cursor else {})}}

    def _spec_latest_pipeline_run(self, pipeline_id: int) -> dict[str, Any]:
        pid = _int_id("pipeline_id", pipeline_id)
        return {"method": "GET", "path": f"/context/entitymatching/pipelines/{pid}/runs/latest",
                "operation": "get latest entity matching pipeline run", "resource": f"pipeline {pid}",
                "headers": self._cdf("entity_matching_pipelines"), "params": {"includeSkipped": "false"},
                "allow_statuses": frozenset({404})}

    def _spec_start_estimate_quality(self, advanced_join_external_id: str, matcher: dict[str, Any]) -> dict[str, Any]:
        return {"method": "POST", "path": "/advancedjoins/estimatequality",
                "operation": "start estimate-quality job", "resource": f"advanced join {advanced_join_external_id!r}",
                "headers": self._cdf("advanced_joins"), "idempotent": False,
                "json": {"advancedJoinExternalId": advanced_join_external_id, "matcher": matcher}}

    def _spec_get_estimate_quality(self, job_id: str) -> dict[str, Any]:
        if not job_id or not str(job_id).strip():
            raise ValueError("job_id of an estimate-quality job must be a non-empty string (a UUID).")
        return {"method": "GET", "path": f"/advancedjoins/estimatequality/{quote(str(job_id), safe='')}",
                "operation": "get estimate-quality job", "resource": f"job {job_id}",
                "headers": self._cdf("advanced_joins")}

    def _spec_create_extpipe_run(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"method": "POST", "path": "/extpipes/runs", "operation": "report extraction pipeline run",
                "resource": f"extraction pipeline {item.get('externalId')!r}",
                "headers": self._cdf("extraction_pipelines"), "idempotent": False, "json": {"items": [item]}}

    def _spec_list_extpipe_runs(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"method": "POST", "path": "/extpipes/runs/list", "operation": "list extraction pipeline runs",
                "resource": f"extraction pipeline {body['filter']['externalId']!r}",
                "headers": self._cdf("extraction_pipelines"), "idempotent": True, "json": body}

    def _spec_retrieve_extpipe(self, external_id: str) -> dict[str, Any]:
        return {"method": "POST", "path": "/extpipes/byids", "operation": "retrieve extraction pipeline",
                "resource": f"extraction pipeline {external_id!r}", "headers": self._cdf("extraction_pipelines"),
                "idempotent": True, "json": {"items": [{"externalId": external_id}], "ignoreUnknownIds": False}}

    @staticmethod
    def extpipe_run_item(external_id: str, status: str, message: str | None, created_time: int | None) -> dict[str, Any]:
        """One ``POST /extpipes/runs`` item, validated (the API takes exactly one per request)."""
        if not external_id or not str(external_id).strip():
            raise ValueError("external_id of the extraction pipeline must be a non-empty string.")
        if len(str(external_id)) > 255:
            raise ValueError("external_id of the extraction pipeline must be at most 255 characters.")
        if status not in EXTPIPE_RUN_STATUSES:
            raise ValueError(f"status must be one of {', '.join(EXTPIPE_RUN_STATUSES)}; got {status!r}.")
        item: dict[str, Any] = {"externalId": external_id, "status": status}
        if message:
            item["message"] = truncate_message(message)
        if created_time is not None:
            item["createdTime"] = int(created_time)
        return item

    @staticmethod
    def extpipe_runs_filter(
        external_id: str,
        statuses: list[str] | None = None,
        created_min: int | None = None,
        created_max: int | None = None,
        message_substring: str | None = None,
        limit: int = EXTPIPE_LIST_LIMIT,
    ) -> dict[str, Any]:
        filt: dict[str, Any] = {"externalId": external_id}
        if statuses:
            bad = [s for s in statuses if s not in EXTPIPE_RUN_STATUSES]
            if bad:
                raise ValueError(f"Unknown extraction pipeline run status {bad}; use {EXTPIPE_RUN_STATUSES}.")
            filt["statuses"] = list(statuses)
        if created_min is not None or created_max is not None:
            filt["createdTime"] = {k: int(v) for k, v in (("min", created_min), ("max", created_max)) if v is not None}
        if message_substring:
            filt["message"] = {"substring": message_substring}
        return {"filter": filt, "limit": limit}

    # ---- entity matching pipelines (beta) -----------------------------------------------------

    def run_pipeline(self, pipeline_id: int) -> dict[str, Any]:
        """Start a run; returns ``{jobId, status, createdTime, ...}``."""
        return self.call(**self._spec_run_pipeline(pipeline_id)).body

    async def arun_pipeline(self, pipeline_id: int) -> dict[str, Any]:
        return (await self.acall(**self._spec_run_pipeline(pipeline_id))).body

    def get_pipeline_run(self, pipeline_id: int, job_id: int) -> dict[str, Any]:
        return self.call(**self._spec_get_pipeline_run(pipeline_id, job_id)).body

    async def aget_pipeline_run(self, pipeline_id: int, job_id: int) -> dict[str, Any]:
        return (await self.acall(**self._spec_get_pipeline_run(pipeline_id, job_id))).body

    def list_pipeline_runs(self, pipeline_id: int, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
        return self.call(**self._spec_list_pipeline_runs(pipeline_id, limit, cursor)).body

    async def alist_pipeline_runs(self, pipeline_id: int, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
        return (await self.acall(**self._spec_list_pipeline_runs(pipeline_id, limit, cursor))).body

    def latest_pipeline_run(self, pipeline_id: int) -> dict[str, Any] | None:
        """The latest run, or ``None`` when the pipeline never ran."""
        resp = self.call(**self._spec_latest_pipeline_run(pipeline_id))
        return None if resp.status == 404 else resp.body

    async def alatest_pipeline_run(self, pipeline_id: int) -> dict[str, Any] | None:
        resp = await self.acall(**self._spec_latest_pipeline_run(pipeline_id))
        return None if resp.status == 404 else resp.body

    # ---- advanced joins (alpha) ----------------------------------------------------------------

    def start_estimate_quality(self, advanced_join_external_id: str, matcher: dict[str, Any]) -> dict[str, Any]:
        return self.call(**self._spec_start_estimate_quality(advanced_join_external_id, matcher)).body

    async def astart_estimate_quality(self, advanced_join_external_id: str, matcher: dict[str, Any]) -> dict[str, Any]:
        return (await self.acall(**self._spec_start_estimate_quality(advanced_join_external_id, matcher))).body

    def get_estimate_quality(self, job_id: str) -> dict[str, Any]:
        return self.call(**self._spec_get_estimate_quality(job_id)).body

    async def aget_estimate_quality(self, job_id: str) -> dict[str, Any]:
        return (await self.acall(**self._spec_get_estimate_quality(job_id))).body

    # ---- extraction pipelines (stable) ---------------------------------------------------------

    def create_extpipe_run(self, item: dict[str, Any]) -> dict[str, Any]:
        """Create exactly one extraction pipeline run (not idempotent: retried only on 429/connect errors)."""
        body = self.call(**self._spec_create_extpipe_run(item)).body
        return dict((body or {}).get("items", [{}])[0])

    async def acreate_extpipe_run(self, item: dict[str, Any]) -> dict[str, Any]:
        body = (await self.acall(**self._spec_create_extpipe_run(item))).body
        return dict((body or {}).get("items", [{}])[0])

    def list_extpipe_runs(self, body: dict[str, Any], max_items: int | None = None) -> list[dict[str, Any]]:
        """Runs matching ``body`` (from :meth:`extpipe_runs_filter`), newest first, following ``nextCursor``."""
        items: list[dict[str, Any]] = []
        request = dict(body)
        while True:
            page = self.call(**self._spec_list_extpipe_runs(request)).body or {}
            items.extend(page.get("items", []))
            cursor = page.get("nextCursor")
            if not cursor or (max_items is not None and len(items) >= max_items):
                return items[:max_items] if max_items is not None else items
            request = {**request, "cursor": cursor}

    async def alist_extpipe_runs(self, body: dict[str, Any], max_items: int | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        request = dict(body)
        while True:
            page = (await self.acall(**self._spec_list_extpipe_runs(request))).body or {}
            items.extend(page.get("items", []))
            cursor = page.get("nextCursor")
            if not cursor or (max_items is not None and len(items) >= max_items):
                return items[:max_items] if max_items is not None else items
            request = {**request, "cursor": cursor}

    def retrieve_extpipe(self, external_id: str) -> dict[str, Any]:
        body = self.call(**self._spec_retrieve_extpipe(external_id)).body or {}
        return dict(body.get("items", [{}])[0])

    async def aretrieve_extpipe(self, external_id: str) -> dict[str, Any]:
        body = (await self.acall(**self._spec_retrieve_extpipe(external_id))).body or {}
        return dict(body.get("items", [{}])[0])

    # ---- UI links ----------------------------------------------------------------------------------

    def fusion_url(self, path: str) -> str:
        """A link into Cognite's Fusion UI (URL pattern documented as unconfirmed in docs/)."""
        opts = self.resolved.options
        cluster = str(opts["host"]).split("://", 1)[-1].split(".", 1)[0]
        return f"https://fusion.cognite.com/{quote(str(opts['project']), safe='')}/{path}?cluster={cluster}.cognitedata.com"

    # ---- connection test ---------------------------------------------------------------------------

    def _probe(self) -> str:
        self.call("GET", "/context/entitymatching/pipelines", "list entity matching pipelines",
                  f"project {self.resolved.options['project']!r}", params={"limit": 1},
                  headers=self._cdf("entity_matching_pipelines"))
        return f"Connected to CDF project {self.resolved.options['project']!r}."


def truncate_message(message: str, limit: int = EXTPIPE_MESSAGE_MAX) -> str:
    """Shorten ``message`` to ``limit`` characters with a visible marker."""
    marker = " …[truncated]"
    if len(message) <= limit:
        return message
    return message[: limit - len(marker)] + marker
