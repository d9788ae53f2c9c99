"""Cognite Data Fusion (CDF) hook: entity matching pipelines, advanced joins, extraction pipelines.

Facts: ``shared/api/cognite.md``. Paths are relative to
``https://{cluster}.cognitedata.com/api/v1/projects/{project}``.
"""

from __future__ import annotations

import ast
import calendar
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from airflow_provider_pipelines._compat import AirflowException, Connection
from airflow_provider_pipelines.hooks._auth import CachedTokenAuth, StaticHeaderAuth, credential_key
from airflow_provider_pipelines.hooks._base import PipelinesHook, ResolvedConnection, require
from airflow_provider_pipelines.hooks._http import (
    ApiError,
    ApiRequest,
    ApiResponse,
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
#: Longest extraction pipeline external id (cognite.md §3c).
EXTPIPE_EXTERNAL_ID_MAX = 255


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


#: ``operation`` of the OAuth token request (``test_connection`` tells token failures apart by it).
TOKEN_OPERATION = "request an OAuth token"  # noqa: S105 - an operation name, not a secret
#: ``operation`` of ``test_connection``'s probe call.
PROBE_OPERATION = "list entity matching pipelines"
#: Token lifetime assumed when the token endpoint sends no usable ``expires_in`` (a 401 still
#: triggers one refresh if the real lifetime is shorter).
DEFAULT_TOKEN_LIFETIME = 3600.0


class TokenEndpointProfile(CogniteProfile):
    """Errors of the OAuth token endpoint: RFC 6749 ``{"error", "error_description"}`` bodies
    (handled by :meth:`CogniteProfile.error_message`) and Entra ID's ``x-ms-request-id``."""

    def request_ids(
        self, response_headers: Mapping[str, str], sent_headers: Mapping[str, str]
    ) -> tuple[str | None, str | None]:
        request_id = response_headers.get("x-request-id") or response_headers.get("x-ms-request-id")
        return request_id, response_headers.get("client-request-id")


TOKEN_ENDPOINT_PROFILE = TokenEndpointProfile()


def token_lifetime(expires_in: Any) -> float:
    """Seconds a token lives, from the token response's ``expires_in`` (number or numeric string)."""
    try:
        seconds = float(expires_in)
    except (TypeError, ValueError):
        return DEFAULT_TOKEN_LIFETIME
    return seconds if seconds > 0 and seconds != float("inf") else DEFAULT_TOKEN_LIFETIME


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


#: Fields of the Raw matcher, the only advanced-join matcher CDF documents (cognite.md §2a).
MATCHER_FIELDS = ("dbName", "tableName", "fromColumnKey", "toColumnKey")
#: Longest advanced join external id (cognite.md §2a).
ADVANCED_JOIN_EXTERNAL_ID_MAX = 255


def _parse_mapping_text(text: str) -> Any:
    """A dict from a JSON object, or from the Python literal a Jinja template renders a dict to."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(f"matcher must be a dict (or a JSON object), got the string {text!r}.") from None


def validate_matcher(matcher: Any) -> dict[str, Any]:
    """Check a Raw matcher: ``{"type": "raw", "dbName", "tableName", "fromColumnKey", "toColumnKey"}``."""
    if isinstance(matcher, str):
        matcher = _parse_mapping_text(matcher)
    if not isinstance(matcher, dict):
        raise ValueError(f"matcher must be a dict like {{'type': 'raw', 'dbName': ..., 'tableName': ..., "
                         f"'fromColumnKey': ..., 'toColumnKey': ...}}, got {type(matcher).__name__}.")
    if matcher.get("type") != "raw":
        raise ValueError(f"matcher['type'] must be 'raw' (the only matcher CDF documents), "
                         f"got {matcher.get('type')!r}.")
    missing = [f for f in MATCHER_FIELDS if not isinstance(matcher.get(f), str) or not matcher[f].strip()]
    if missing:
        raise ValueError(f"matcher is missing non-empty string field(s) {', '.join(missing)}.")
    unknown = sorted(set(matcher) - {"type", *MATCHER_FIELDS})
    if unknown:
        raise ValueError(f"matcher has unknown field(s) {', '.join(unknown)}; "
                         f"allowed: type, {', '.join(MATCHER_FIELDS)}.")
    return dict(matcher)


def validate_external_id(name: str, value: Any, max_len: int = ADVANCED_JOIN_EXTERNAL_ID_MAX) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}.")
    if len(value) > max_len:
        raise ValueError(f"{name} must be at most {max_len} characters, got {len(value)}.")
    return value


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
        host = require(conn.host, "host", cid,
                       "Set it to your cluster URL, e.g. https://westeurope-1.cognitedata.com.")
        if "://" not in host:
            host = f"https://{host}"
        host = require_https(host, conn_id=cid)
        project = require(extra.get("project"), "project in its extra", cid,
                          'Add {"project": "<your CDF project>"} to the connection extra.')
        http = HttpSettings.from_extra(extra, cid)
        static_token = extra.get("token")
        secrets: list[str] = []
        options: dict[str, Any] = {"project": project, "host": host}
        if static_token:
            auth: Any = StaticHeaderAuth("Authorization", f"Bearer {static_token}")
            secrets.append(str(static_token))
            options["auth"] = "static token"
        else:
            client_id = require(conn.login, "client id (login)", cid,
                                "Set login to the OAuth client id, or put a static 'token' in the extra.")
            client_secret = require(conn.password, "client secret (password)", cid,
                                    "Set password to the OAuth client secret.")
            token_url = require(
                extra.get("token_url"), "token_url in its extra", cid,
                'Add {"token_url": "https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token"}.',
            )
            token_url = require_https(str(token_url), conn_id=cid, field_name="token_url")
            scope = _scopes(extra.get("scopes"), host)
            secrets.append(client_secret)
            auth = self._client_credentials(token_url, client_id, client_secret, scope, http, secrets)
            options.update({"auth": "client credentials", "token_url": token_url, "scopes": scope})
        return ResolvedConnection(
            base_url=f"{host}/api/v1/projects/{quote(str(project), safe='')}",
            http=http, auth=auth, secrets=secrets, options=options,
        )

    def _client_credentials(
        self, token_url: str, client_id: str, client_secret: str, scope: str, http: HttpSettings,
        secrets: list[str],
    ) -> CachedTokenAuth:
        core = HttpCore(TOKEN_ENDPOINT_PROFILE, http, None, Redactor(secrets), self._default_headers())

        def request() -> ApiRequest:
            # RFC 6749 §4.4: repeating a client-credentials grant only mints another token
            return ApiRequest(
                "POST", token_url, TOKEN_OPERATION, f"client {client_id} at {token_url}",
                data={"grant_type": "client_credentials", "client_id": client_id,
                      "client_secret": client_secret, "scope": scope},
                authenticated=False, idempotent=True,
            )

        def parse(body: Any) -> tuple[str, float]:
            if not isinstance(body, dict) or not body.get("access_token"):
                raise AirflowException(f"The token endpoint {token_url} answered without an access_token.")
            return str(body["access_token"]), token_lifetime(body.get("expires_in"))

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

    def _spec_start_estimate_quality(
        self, advanced_join_external_id: str, matcher: dict[str, Any] | str
    ) -> dict[str, Any]:
        xid = validate_external_id("advanced_join_external_id", advanced_join_external_id)
        return {"method": "POST", "path": "/advancedjoins/estimatequality",
                "operation": "start estimate-quality job", "resource": f"advanced join {xid!r}",
                "headers": self._cdf("advanced_joins"), "idempotent": False,
                "json": {"advancedJoinExternalId": xid, "matcher": validate_matcher(matcher)}}

    def _spec_get_estimate_quality(self, job_id: str) -> dict[str, Any]:
        if not isinstance(job_id, str) or not job_id.strip():
            raise ValueError(f"job_id of an estimate-quality job must be a non-empty string (a UUID), "
                             f"got {job_id!r}.")
        # the job id is opaque (documented as int64, returned as a UUID): always URL-encoded
        return {"method": "GET", "path": f"/advancedjoins/estimatequality/{quote(job_id, safe='')}",
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
        external_id = validate_extpipe_external_id(external_id)
        return {"method": "POST", "path": "/extpipes/byids", "operation": "retrieve extraction pipeline",
                "resource": f"extraction pipeline {external_id!r}",
                "headers": self._cdf("extraction_pipelines"), "idempotent": True,
                "json": {"items": [{"externalId": external_id}], "ignoreUnknownIds": False}}

    @staticmethod
    def extpipe_run_item(
        external_id: str, status: str, message: Any = None, created_time: Any = None
    ) -> dict[str, Any]:
        """One ``POST /extpipes/runs`` item, validated (the API takes exactly one per request).

        ``message`` is shortened by :func:`truncate_message` (with a visible marker);
        ``created_time`` takes whatever :func:`to_epoch_ms` takes (epoch ms, datetime, ISO string).
        """
        item: dict[str, Any] = {
            "externalId": validate_extpipe_external_id(external_id),
            "status": validate_extpipe_status(status),
        }
        if message is not None and not isinstance(message, str):
            message = str(message)
        if message:
            item["message"] = truncate_message(message)
        if created_time is not None:
            item["createdTime"] = to_epoch_ms(created_time, "created_time")
        return item

    @staticmethod
    def extpipe_runs_filter(
        external_id: str,
        statuses: Sequence[str] | None = None,
        created_min: Any = None,
        created_max: Any = None,
        message_substring: str | None = None,
        limit: int = EXTPIPE_LIST_LIMIT,
    ) -> dict[str, Any]:
        """A ``POST /extpipes/runs/list`` body; ``created_min``/``created_max`` are inclusive bounds."""
        filt: dict[str, Any] = {"externalId": validate_extpipe_external_id(external_id)}
        if statuses:
            filt["statuses"] = validate_extpipe_statuses("statuses", statuses)
        created: dict[str, int] = {}
        if created_min is not None:
            created["min"] = to_epoch_ms(created_min, "created_min")
        if created_max is not None:
            created["max"] = to_epoch_ms(created_max, "created_max")
        if "min" in created and "max" in created and created["min"] > created["max"]:
            raise ValueError(f"created_min ({created['min']}) is after created_max ({created['max']}).")
        if created:
            filt["createdTime"] = created
        if message_substring:
            filt["message"] = {"substring": str(message_substring)}
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= EXTPIPE_LIST_LIMIT:
            raise ValueError(f"limit must be an integer between 1 and {EXTPIPE_LIST_LIMIT}, got {limit!r}.")
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

    def list_pipeline_runs(
        self, pipeline_id: int, limit: int = 100, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of a pipeline's runs: ``{"items": [...], "nextCursor": ...}`` (limit 1..100)."""
        return self.call(**self._spec_list_pipeline_runs(pipeline_id, limit, cursor)).body

    async def alist_pipeline_runs(
        self, pipeline_id: int, limit: int = 100, cursor: str | None = None
    ) -> dict[str, Any]:
        return (await self.acall(**self._spec_list_pipeline_runs(pipeline_id, limit, cursor))).body

    def latest_pipeline_run(self, pipeline_id: int) -> dict[str, Any] | None:
        """The latest run, or ``None`` when the pipeline never ran."""
        resp = self.call(**self._spec_latest_pipeline_run(pipeline_id))
        return None if resp.status == 404 else resp.body

    async def alatest_pipeline_run(self, pipeline_id: int) -> dict[str, Any] | None:
        resp = await self.acall(**self._spec_latest_pipeline_run(pipeline_id))
        return None if resp.status == 404 else resp.body

    # ---- advanced joins (alpha) ----------------------------------------------------------------

    def start_estimate_quality(
        self, advanced_join_external_id: str, matcher: dict[str, Any] | str
    ) -> dict[str, Any]:
        """Start an estimate-quality job (validates the id and the Raw matcher first); returns the job."""
        return self.call(**self._spec_start_estimate_quality(advanced_join_external_id, matcher)).body

    async def astart_estimate_quality(
        self, advanced_join_external_id: str, matcher: dict[str, Any] | str
    ) -> dict[str, Any]:
        spec = self._spec_start_estimate_quality(advanced_join_external_id, matcher)
        return (await self.acall(**spec)).body

    def get_estimate_quality(self, job_id: str) -> dict[str, Any]:
        return self.call(**self._spec_get_estimate_quality(job_id)).body

    async def aget_estimate_quality(self, job_id: str) -> dict[str, Any]:
        return (await self.acall(**self._spec_get_estimate_quality(job_id))).body

    # ---- extraction pipelines (stable) ---------------------------------------------------------

    def create_extpipe_run(self, item: dict[str, Any]) -> dict[str, Any]:
        """Create exactly one extraction pipeline run (an item from :meth:`extpipe_run_item`); return it.

        Not idempotent: the core retries it only on 429 and connect errors, and raises
        ``ApiError(ambiguous=True)`` after a read timeout, a dropped connection, a 502/503/504 or
        an unreadable 2xx answer. Use :meth:`report_extpipe_run` to resolve that ambiguity
        without losing or doubling the report.
        """
        _require_run_item(item)
        return _created_run(self.call(**self._spec_create_extpipe_run(item)), item)

    async def acreate_extpipe_run(self, item: dict[str, Any]) -> dict[str, Any]:
        _require_run_item(item)
        return _created_run(await self.acall(**self._spec_create_extpipe_run(item)), item)

    def iter_extpipe_run_pages(self, body: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        """Pages of runs matching ``body`` (from :meth:`extpipe_runs_filter`), newest first.

        Follows ``nextCursor`` until CDF sends none (a repeated cursor is an error, not a loop).
        """
        request: dict[str, Any] = dict(body)
        seen: set[str] = set()
        while True:
            items, cursor = _runs_page(self.call(**self._spec_list_extpipe_runs(request)), request, seen)
            yield items
            if cursor is None:
                return
            request = {**request, "cursor": cursor}

    async def avisit_extpipe_run_pages(
        self, body: dict[str, Any], visit: Callable[[list[dict[str, Any]]], bool | None]
    ) -> None:
        """Async :meth:`iter_extpipe_run_pages`: ``visit(page)`` for every page until it returns true.

        A callback rather than an async generator: a trigger lists runs on every poll, and a plain
        coroutine costs less per call than an async generator and the ``aclosing`` it needs.
        """
        request: dict[str, Any] = dict(body)
        seen: set[str] = set()
        while True:
            resp = await self.acall(**self._spec_list_extpipe_runs(request))
            items, cursor = _runs_page(resp, request, seen)
            if visit(items) or cursor is None:
                return
            request = {**request, "cursor": cursor}

    def list_extpipe_runs(self, body: dict[str, Any], max_items: int | None = None) -> list[dict[str, Any]]:
        """Runs matching ``body`` (from :meth:`extpipe_runs_filter`), newest first, up to ``max_items``."""
        items: list[dict[str, Any]] = []
        for page in self.iter_extpipe_run_pages(body):
            items.extend(page)
            if max_items is not None and len(items) >= max_items:
                return items[:max_items]
        return items

    async def alist_extpipe_runs(
        self, body: dict[str, Any], max_items: int | None = None
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []

        def collect(page: list[dict[str, Any]]) -> bool:
            items.extend(page)
            return max_items is not None and len(items) >= max_items

        await self.avisit_extpipe_run_pages(body, collect)
        return items if max_items is None else items[:max_items]

    def retrieve_extpipe(self, external_id: str) -> dict[str, Any]:
        """The extraction pipeline with this external id (an unknown one fails with CDF's 400 ``missing``)."""
        return _retrieved_extpipe(self.call(**self._spec_retrieve_extpipe(external_id)), external_id)

    async def aretrieve_extpipe(self, external_id: str) -> dict[str, Any]:
        return _retrieved_extpipe(await self.acall(**self._spec_retrieve_extpipe(external_id)), external_id)

    def find_extpipe_run(self, item: dict[str, Any]) -> dict[str, Any] | None:
        """The run CDF holds for ``item`` (same externalId, status, createdTime and message), if any.

        ``item`` must carry an explicit ``createdTime``: that, not the message, is what makes
        the match exact. The message is compared here rather than sent as a ``substring``
        filter, whose maximum length CDF does not document.
        """
        _require_run_item(item)
        if item.get("createdTime") is None:
            raise ValueError("Checking for a reported run needs the item's explicit createdTime.")
        body = self.extpipe_runs_filter(item["externalId"], [item["status"]], created_min=item["createdTime"],
                                        created_max=item["createdTime"])
        for page in self.iter_extpipe_run_pages(body):
            for run in page:
                if same_extpipe_run(run, item):
                    return {"externalId": item["externalId"], **run}
        return None

    def report_extpipe_run(
        self,
        item: dict[str, Any],
        *,
        max_sends: int | None = None,
        check_delay: float | None = None,
        check_first: bool = False,
    ) -> dict[str, Any]:
        """Report one run exactly once, even when CDF's answer is lost; return the run.

        Creating a run is not idempotent, so after an ambiguous failure (read timeout, dropped
        connection, 502/503/504, unreadable 2xx answer) this waits ``check_delay`` seconds and
        looks the run up with :meth:`find_extpipe_run` before sending it again, at most
        ``max_sends`` times in all. A report is thus never doubled and, unless every send
        failed, never lost. When the check itself fails, the outcome stays unknown and this
        raises rather than risk a duplicate.

        :param item: from :meth:`extpipe_run_item`; a missing ``createdTime`` is set to now, so
            the check can match exactly.
        :param check_first: look the run up before the first send (a retry of a report whose
            earlier attempt ended without an answer).
        """
        sends = REPORT_MAX_SENDS if max_sends is None else max_sends
        delay = REPORT_CHECK_DELAY if check_delay is None else check_delay
        if isinstance(sends, bool) or not isinstance(sends, int) or sends < 1:
            raise ValueError(f"max_sends must be a positive integer, got {sends!r}.")
        _require_run_item(item)
        item = dict(item)
        if item.get("createdTime") is None:
            item["createdTime"] = to_epoch_ms(datetime.now(timezone.utc))
        label = _report_label(item)
        if check_first:
            found = self._check_reported(item, label, None)
            if found is not None:
                self.log.info("Checked: %s was already recorded by CDF (run id %s); not sending it again.",
                              label, found.get("id"))
                return found
        last: ApiError | None = None
        for send in range(1, sends + 1):
            try:
                run = self.create_extpipe_run(item)
            except ApiError as err:
                if not err.ambiguous:
                    raise
                last = err
                self.log.warning("Reporting %s: no reliable answer from CDF (%s); checking whether it was "
                                 "recorded before sending it again.", label, err)
            else:
                self.log.info("Reported %s (run id %s).", label, run.get("id"))
                return run
            if delay > 0:
                time.sleep(delay)
            found = self._check_reported(item, label, last)
            if found is not None:
                self.log.info("Checked: %s was recorded by CDF despite the error (run id %s); not sending "
                              "it again.", label, found.get("id"))
                return found
            if send < sends:
                self.log.warning("Checked: %s was not recorded; sending it again (send %d of %d).",
                                 label, send + 1, sends)
        raise AirflowException(
            f"Could not report {label}: {sends} send(s) got no reliable answer from CDF, and each time a "
            f"check showed the run was not recorded. Last error: {last}"
        )

    def _check_reported(
        self, item: dict[str, Any], label: str, cause: ApiError | None
    ) -> dict[str, Any] | None:
        try:
            return self.find_extpipe_run(item)
        except ApiError as err:
            if cause is None:
                raise
            raise AirflowException(
                f"The outcome of {label} is unknown: the create request got no reliable answer ({cause}) and "
                f"checking whether CDF recorded it failed too ({err}). Not sending it again, to avoid a "
                "duplicate report (CogniteExtractionPipelineRunOperator checks again first when its task "
                "is retried)."
            ) from None

    # ---- UI links ----------------------------------------------------------------------------------

    def fusion_url(self, path: str) -> str:
        """A link into Cognite's Fusion UI (URL pattern documented as unconfirmed in docs/)."""
        opts = self.resolved.options
        cluster = urlsplit(str(opts["host"])).netloc  # e.g. westeurope-1.cognitedata.com
        project = quote(str(opts["project"]), safe="")
        return f"https://fusion.cognite.com/{project}/{path}?cluster={quote(cluster, safe='.:-')}"

    # ---- connection test ---------------------------------------------------------------------------

    def _probe(self) -> str:
        self.call("GET", "/context/entitymatching/pipelines", PROBE_OPERATION,
                  f"project {self.resolved.options['project']!r}", params={"limit": 1},
                  headers=self._cdf("entity_matching_pipelines"))
        return f"Connected to CDF project {self.resolved.options['project']!r}."

    def _explain_failure(self, err: ApiError) -> str:
        """Say which step of ``test_connection`` failed: the token endpoint, the network or the project."""
        opts = self.resolved.options
        if err.operation == TOKEN_OPERATION:
            if err.status is None:
                return f"Could not reach the token endpoint {opts.get('token_url')}: {err}"
            if 400 <= err.status < 500:
                return (f"The token endpoint refused the client credentials (HTTP {err.status}): check the "
                        f"client id, client secret, token_url and scopes ({opts.get('scopes')!r}). {err}")
            return f"The token endpoint {opts.get('token_url')} failed (HTTP {err.status}). {err}"
        if err.status is None:
            return f"Could not reach CDF at {opts['host']}: {err}"
        if err.status == 401:
            what = ("the static token in the connection extra (it may have expired)"
                    if opts.get("auth") == "static token"
                    else f"the token issued for scopes {opts.get('scopes')!r} (is it for this cluster?)")
            return f"CDF rejected {what} (HTTP 401). {err}"
        if err.status in (403, 404):
            return (f"CDF project {opts['project']!r} is unknown, or this identity has no access to it "
                    f"(HTTP {err.status}; this check needs entitymatchingAcl:READ and assetsAcl:READ). {err}")
        return str(err)


#: Marker that ends a shortened run message, so readers in CDF see that text is missing.
TRUNCATION_MARKER = " …[truncated]"
#: Sends of one run report at most (the first one included) while CDF's answers are ambiguous.
REPORT_MAX_SENDS = 3
#: Seconds to wait after an ambiguous create before checking whether CDF recorded the run.
REPORT_CHECK_DELAY = 3.0


def message_length(message: str) -> int:
    """Length of a run message as CDF's 1000-character limit is assumed to count it.

    The limit itself is inferred from Cognite's own libraries, and its unit is undocumented
    (cognite.md §3a). This is the one place for that rule: we count UTF-16 code units, as a JVM
    ``String.length()`` or .NET's ``Truncate(1000)`` do. That is never less than Python's count
    of code points, so a message that fits here fits under either reading.
    """
    return len(message.encode("utf-16-le")) // 2


def truncate_message(message: str, limit: int = EXTPIPE_MESSAGE_MAX) -> str:
    """Shorten ``message`` to ``limit`` (see :func:`message_length`), ending in :data:`TRUNCATION_MARKER`."""
    if message_length(message) <= limit:
        return message
    budget = limit - message_length(TRUNCATION_MARKER)
    kept: list[str] = []
    used = 0
    for char in message:
        units = 2 if ord(char) > 0xFFFF else 1
        if used + units > budget:
            break
        kept.append(char)
        used += units
    return "".join(kept) + TRUNCATION_MARKER


def validate_extpipe_external_id(value: Any, name: str = "external_id") -> str:
    """An extraction pipeline external id: a non-empty string of at most 255 characters."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be the extraction pipeline's external id (a non-empty string), "
                         f"got {value!r}.")
    if len(value) > EXTPIPE_EXTERNAL_ID_MAX:
        raise ValueError(f"{name} must be at most {EXTPIPE_EXTERNAL_ID_MAX} characters, got {len(value)}.")
    return value


def validate_extpipe_status(value: Any, name: str = "status") -> str:
    """One of :data:`EXTPIPE_RUN_STATUSES` (CDF takes them in lower case only)."""
    if value not in EXTPIPE_RUN_STATUSES:
        hint = ""
        if isinstance(value, str) and value.strip().lower() in EXTPIPE_RUN_STATUSES:
            hint = f" (CDF takes them in lower case: {value.strip().lower()!r})"
        raise ValueError(f"{name} must be one of {', '.join(EXTPIPE_RUN_STATUSES)}, got {value!r}{hint}.")
    return str(value)


def validate_extpipe_statuses(name: str, values: Any) -> list[str]:
    """A list of run statuses (a single string is one status); duplicates are dropped."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple, set, frozenset)):
        raise ValueError(f"{name} must be a list of statuses ({', '.join(EXTPIPE_RUN_STATUSES)}), "
                         f"got {values!r}.")
    return list(dict.fromkeys(validate_extpipe_status(v, name) for v in values))


def to_epoch_ms(value: Any, name: str = "created_time") -> int:
    """Epoch milliseconds from an int (ms), a timezone-aware datetime, or an ISO-8601 string.

    A rendered template such as ``{{ data_interval_end }}`` arrives as a datetime (native
    rendering) or as its ISO string; both work. Numbers are milliseconds, never seconds.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be epoch milliseconds, a datetime or an ISO-8601 string, "
                         f"got {value!r}.")
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{name} must be a finite number of epoch milliseconds, got {value!r}.")
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value!r}.")
        return int(value)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware (e.g. UTC), got the naive datetime {value!r}.")
        utc = value.astimezone(timezone.utc)  # exact integer arithmetic, also for pendulum datetimes
        millis = calendar.timegm(utc.timetuple()) * 1000 + utc.microsecond // 1000
        if millis < 0:
            raise ValueError(f"{name} must not be before 1970-01-01, got {value!r}.")
        return int(millis)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise ValueError(f"{name} {value!r} is neither epoch milliseconds nor an ISO-8601 "
                             "date-time.") from None
        return to_epoch_ms(parsed, name)
    raise ValueError(f"{name} must be epoch milliseconds, a datetime or an ISO-8601 string, got {value!r}.")


def same_extpipe_run(run: Any, item: dict[str, Any]) -> bool:
    """Whether a listed run is the one ``item`` reported (status, createdTime and message all equal)."""
    return (
        isinstance(run, dict)
        and run.get("status") == item.get("status")
        and run.get("createdTime") == item.get("createdTime")
        and (run.get("message") or "") == (item.get("message") or "")
    )


def _require_run_item(item: Any) -> None:
    if not isinstance(item, dict):
        raise ValueError(f"An extraction pipeline run item must be a dict, got {type(item).__name__}.")
    validate_extpipe_external_id(item.get("externalId"), "item['externalId']")
    validate_extpipe_status(item.get("status"), "item['status']")


def _report_label(item: dict[str, Any]) -> str:
    return (f"the {item['status']!r} run of extraction pipeline {item['externalId']!r} "
            f"(createdTime {item['createdTime']})")


def _bad_body(
    resp: ApiResponse, operation: str, resource: str, expected: str, *, ambiguous: bool = False
) -> ApiError:
    return ApiError(
        vendor=CogniteProfile.name, operation=operation, resource=resource, status=resp.status,
        vendor_message=Redactor()(f"unexpected answer (expected {expected}): {resp.text[:200]!r}"),
        request_id=resp.request_id, ambiguous=ambiguous,
    )


def _created_run(resp: ApiResponse, item: dict[str, Any]) -> dict[str, Any]:
    items = resp.body.get("items") if isinstance(resp.body, dict) else None
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
        # the request was accepted (2xx) but we cannot tell what was created: the caller checks
        raise _bad_body(resp, "report extraction pipeline run", f"extraction pipeline {item['externalId']!r}",
                        "{'items': [<one run>]}", ambiguous=True)
    return {"externalId": item["externalId"], **items[0]}


def _runs_page(
    resp: ApiResponse, request: dict[str, Any], seen: set[str]
) -> tuple[list[dict[str, Any]], str | None]:
    resource = f"extraction pipeline {request['filter']['externalId']!r}"
    body = resp.body
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(run, dict) for run in items):
        raise _bad_body(resp, "list extraction pipeline runs", resource,
                        "{'items': [<run>, ...], 'nextCursor': ...}")
    cursor = body.get("nextCursor")
    if cursor in (None, ""):
        return items, None
    if not isinstance(cursor, str) or cursor in seen:
        raise _bad_body(resp, "list extraction pipeline runs", resource, "a new nextCursor for every page")
    seen.add(cursor)
    return items, cursor


def _retrieved_extpipe(resp: ApiResponse, external_id: str) -> dict[str, Any]:
    items = resp.body.get("items") if isinstance(resp.body, dict) else None
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
        raise _bad_body(resp, "retrieve extraction pipeline", f"extraction pipeline {external_id!r}",
                        "{'items': [<one extraction pipeline>]}")
    return dict(items[0])
