"""Edge Impulse Studio API hook: organizational pipelines (run, read, stop).

Facts: ``shared/api/edge-impulse.md``. Paths are relative to ``{host}/v1`` (host defaults to
``https://studio.edgeimpulse.com``) and start with ``/api/organizations/{organizationId}/pipelines``.

Every answer is checked twice: the HTTP status, and the ``{"success": bool, "error": str}``
envelope that every Edge Impulse body carries. ``success: false`` is an error even with HTTP 200
(the OpenAPI declares only 200 for every operation), and its ``error`` text reaches the user.

Pipeline steps may carry the project's ``projectApiKey`` / ``projectHmacKey``. Whenever a body
is read, those values are registered with Airflow's secrets masker and with this hook's
redactor, and the hook hands back a copy in which they are replaced by ``***``
(:data:`SECRET_STEP_FIELDS`): nothing downstream (logs, XCom, trigger events) can see them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from airflow_provider_pipelines._compat import AirflowException, Connection, amask_secret, mask_secret
from airflow_provider_pipelines.hooks._auth import StaticHeaderAuth
from airflow_provider_pipelines.hooks._base import PipelinesHook, ResolvedConnection, require
from airflow_provider_pipelines.hooks._http import ApiError, ApiResponse, HttpSettings, require_https

log = logging.getLogger(__name__)

#: Studio host used when the connection has none.
DEFAULT_HOST = "https://studio.edgeimpulse.com"
#: The API lives under ``{host}/v1`` (edge-impulse.md A.0).
API_PREFIX = "/v1"
#: Step fields that hold project credentials: masked, redacted, never returned (edge-impulse.md A.1).
SECRET_STEP_FIELDS = frozenset({"projectApiKey", "projectHmacKey"})
#: What replaces a secret value in every body this hook returns.
REDACTED = "***"
#: Response headers that may carry a request id. **Unconfirmed**: Edge Impulse documents none
#: (edge-impulse.md A.4); ``x-request-id`` is read when a proxy or the server sets it.
REQUEST_ID_HEADERS = ("x-request-id", "X-Request-ID")
#: Studio page of an organization's pipelines, for the extra link. **Unconfirmed**: Edge Impulse
#: documents no deep link for a pipeline (edge-impulse.md A.4); this is the organization's
#: pipeline list page, the most conservative choice. Change it here only.
STUDIO_PIPELINES_URL = "{studio}/organization/{organization_id}/pipelines"
#: Largest id Edge Impulse can hand out (ids are JSON integers: stay within 2**53 - 1).
MAX_ID = 9007199254740991


def validate_int_id(name: str, value: Any) -> int:
    """An Edge Impulse id (``organization_id``, ``pipeline_id``, ``run_id``) as a positive int.

    The API types these ids as strict integers (edge-impulse.md A.0); a digit string (a rendered
    template) is accepted, anything else fails with a message that says what to pass.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be a positive integer id, got {value!r}.")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise ValueError(f"{name} must be a positive integer id, got {value!r}.")
    if not 1 <= number <= MAX_ID:
        raise ValueError(f"{name} must be between 1 and {MAX_ID}, got {value!r}.")
    return number


class EdgeImpulseProfile:
    """How Edge Impulse reports errors: the ``{success, error}`` envelope on every body."""

    name = "Edge Impulse"

    def error_message(self, status: int, body: Any, text: str) -> str:
        if isinstance(body, dict):
            for key in ("error", "message"):
                value = body.get(key)
                if isinstance(value, str) and value.strip():
                    return value.strip()
        return ""

    def request_ids(
        self, response_headers: Mapping[str, str], sent_headers: Mapping[str, str]
    ) -> tuple[str | None, str | None]:
        for header in REQUEST_ID_HEADERS:
            value = response_headers.get(header)
            if value:
                return value, None
        return None, None

    def body_error(self, body: Any) -> str | None:
        """``success`` must be ``true`` on every 2xx body (as the official SDK checks it)."""
        if not isinstance(body, dict):
            kind = "an empty body" if body is None else f"a JSON {type(body).__name__}"
            return f"expected a JSON object with 'success': true, got {kind}"
        if body.get("success") is True:
            return None
        error = body.get("error")
        if isinstance(error, str) and error.strip():
            return error.strip()
        if "success" not in body:
            return "the response has no 'success' field"
        return f"'success' is {body.get('success')!r} and the response gives no error text"


class EdgeImpulseHook(PipelinesHook):
    """Talks to the Edge Impulse Studio API (organizational pipelines).

    Connection (conn type ``edge_impulse``): password = an organization API key (``ei_...``),
    sent as ``x-api-key``; host = the Studio URL (default ``https://studio.edgeimpulse.com``).
    Optional extra: ``organization_id`` (used by ``test_connection``), ``connect_timeout``,
    ``read_timeout``, ``max_attempts``, ``max_retry_seconds``, ``ca_bundle``.

    Every method returns the vendor's object with :data:`SECRET_STEP_FIELDS` replaced by ``***``.

    :param edge_impulse_conn_id: the Airflow connection id.
    """

    conn_name_attr = "edge_impulse_conn_id"
    default_conn_name = "edge_impulse_default"
    conn_type = "edge_impulse"
    hook_name = "Edge Impulse"
    profile: ClassVar[EdgeImpulseProfile] = EdgeImpulseProfile()

    def __init__(self, edge_impulse_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(edge_impulse_conn_id, **kwargs)
        self.edge_impulse_conn_id = self.conn_id
        #: step secrets already registered; a tuple of strings, which the garbage collector does not
        #: track (a set would be one more tracked object in every waiting trigger)
        self._seen_secrets: tuple[str, ...] = ()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_provider_pipelines.get_provider_info import connection_ui

        return connection_ui("edge_impulse")

    # ---- connection -------------------------------------------------------------------------

    def _resolve(self, conn: Connection, extra: Mapping[str, Any]) -> ResolvedConnection:
        cid = self.conn_id
        api_key = require(
            conn.password, "API key (password)", cid,
            "Set password to an Edge Impulse organization API key (ei_...), "
            "created in the organization's Settings > API keys.",
        )
        api_key = str(api_key).strip()
        if not api_key.startswith("ei_"):
            log.warning("Connection %r: the API key does not start with 'ei_' as organization keys do.", cid)
        host = str(conn.host or DEFAULT_HOST).strip()
        if "://" not in host:
            host = f"https://{host}"
        parts = urlsplit(host)
        if conn.port and parts.port is None:
            host = f"{parts.scheme}://{parts.netloc}:{conn.port}{parts.path}"
        host = require_https(host, conn_id=cid)
        if host.endswith(API_PREFIX):  # accept "https://studio.edgeimpulse.com/v1" too
            host = host[: -len(API_PREFIX)]
        organization_id = extra.get("organization_id")
        if organization_id not in (None, ""):
            try:
                organization_id = validate_int_id("organization_id", organization_id)
            except ValueError as err:
                raise AirflowException(f"Connection {cid!r}: extra {err}") from None
        else:
            organization_id = None
        return ResolvedConnection(
            base_url=f"{host}{API_PREFIX}",
            http=HttpSettings.from_extra(extra, cid),
            auth=StaticHeaderAuth("x-api-key", api_key),
            secrets=[api_key],
            options={"studio_url": host, "organization_id": organization_id},
        )

    # ---- step secrets ---------------------------------------------------------------------------

    def _collect_secrets(self, value: Any, found: list[str]) -> Any:
        """A copy of ``value`` with every :data:`SECRET_STEP_FIELDS` value replaced (found ones listed)."""
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if key in SECRET_STEP_FIELDS and item not in (None, ""):
                    found.append(str(item))
                    out[key] = REDACTED
                elif isinstance(item, (dict, list)):  # only containers need the walk (one call less per leaf)
                    out[key] = self._collect_secrets(item, found)
                else:
                    out[key] = item
            return out
        if isinstance(value, list):
            return [self._collect_secrets(item, found) if isinstance(item, (dict, list)) else item
                    for item in value]
        return value

    def _new_secrets(self, found: list[str]) -> list[str]:
        fresh = [s for s in dict.fromkeys(found) if s not in self._seen_secrets and s != REDACTED]
        if fresh:
            self._seen_secrets += tuple(fresh)
        if fresh and self._core is not None:
            self._core.redact.add(*fresh)
        return fresh

    def redact_body(self, body: Any) -> Any:
        """Register step secrets found in ``body`` with the masker; return a redacted copy."""
        found: list[str] = []
        clean = self._collect_secrets(body, found)
        for secret in self._new_secrets(found):
            mask_secret(secret)
        return clean

    async def aredact_body(self, body: Any) -> Any:
        """Async :meth:`redact_body` (the masker is reached without blocking the loop)."""
        found: list[str] = []
        clean = self._collect_secrets(body, found)
        for secret in self._new_secrets(found):
            await amask_secret(secret)
        return clean

    # ---- request specs (shared by the sync and async methods) ----------------------------------

    @staticmethod
    def _org_path(organization_id: Any, pipeline_id: Any | None = None) -> tuple[str, str]:
        org = validate_int_id("organization_id", organization_id)
        path = f"/api/organizations/{org}/pipelines"
        resource = f"organization {org}"
        if pipeline_id is not None:
            pid = validate_int_id("pipeline_id", pipeline_id)
            path += f"/{pid}"
            resource += f" pipeline {pid}"
        return path, resource

    def _spec_run_pipeline(
        self, organization_id: Any, pipeline_id: Any, ignore_last_successful_run: bool
    ) -> dict[str, Any]:
        path, resource = self._org_path(organization_id, pipeline_id)
        # "If set then EI_LAST_SUCCESSFUL_RUN is not set": whether ``=false`` counts as "set" is
        # unconfirmed, so the parameter is only sent when it is true.
        params = {"ignoreLastSuccessfulRun": "true"} if ignore_last_successful_run else None
        return {"method": "POST", "path": f"{path}/run", "operation": "run organizational pipeline",
                "resource": resource, "params": params, "idempotent": False}

    def _spec_get_pipeline(self, organization_id: Any, pipeline_id: Any) -> dict[str, Any]:
        path, resource = self._org_path(organization_id, pipeline_id)
        return {"method": "GET", "path": path, "operation": "get organizational pipeline",
                "resource": resource}

    def _spec_stop_pipeline(self, organization_id: Any, pipeline_id: Any) -> dict[str, Any]:
        path, resource = self._org_path(organization_id, pipeline_id)
        return {"method": "POST", "path": f"{path}/stop", "operation": "stop organizational pipeline",
                "resource": resource, "idempotent": False}

    def _spec_list_pipelines(self, organization_id: Any) -> dict[str, Any]:
        path, resource = self._org_path(organization_id)
        return {"method": "GET", "path": path, "operation": "list organizational pipelines",
                "resource": resource}

    @staticmethod
    def _member(resp: ApiResponse, spec: dict[str, Any], key: str, kind: type) -> Any:
        """``body[key]`` of a successful answer, or a clear error when the body lacks it."""
        value = resp.body.get(key) if isinstance(resp.body, dict) else None
        if not isinstance(value, kind):
            raise ApiError(
                vendor=EdgeImpulseProfile.name, operation=spec["operation"], resource=spec["resource"],
                status=resp.status, request_id=resp.request_id,
                vendor_message=f"the response has no {key!r} {'list' if kind is list else 'object'}",
            )
        return value

    def _run_from(self, resp: ApiResponse, spec: dict[str, Any]) -> dict[str, Any]:
        run = self._member(resp, spec, "pipelineRun", dict)
        try:
            validate_int_id("pipelineRun.id", run.get("id"))
        except ValueError as err:
            raise ApiError(
                vendor=EdgeImpulseProfile.name, operation=spec["operation"], resource=spec["resource"],
                status=resp.status, request_id=resp.request_id, vendor_message=f"the response's {err}",
            ) from None
        return dict(run)

    # ---- organizational pipelines ----------------------------------------------------------------

    def run_pipeline(
        self, organization_id: int, pipeline_id: int, ignore_last_successful_run: bool = False
    ) -> dict[str, Any]:
        """Start a run; returns the ``pipelineRun`` object (``id``, ``steps``, ``created``, ...).

        ``POST`` is not idempotent: it is retried only on 429 and when the request never reached
        the server; an ambiguous failure raises :class:`ApiError` with ``ambiguous=True``.
        """
        spec = self._spec_run_pipeline(organization_id, pipeline_id, ignore_last_successful_run)
        return self._run_from(self._clean(self.call(**spec)), spec)

    async def arun_pipeline(
        self, organization_id: int, pipeline_id: int, ignore_last_successful_run: bool = False
    ) -> dict[str, Any]:
        spec = self._spec_run_pipeline(organization_id, pipeline_id, ignore_last_successful_run)
        return self._run_from(await self._aclean(await self.acall(**spec)), spec)

    def get_pipeline(self, organization_id: int, pipeline_id: int) -> dict[str, Any]:
        """The pipeline with ``currentRun``, ``lastRun`` and ``lastRunStartError``."""
        spec = self._spec_get_pipeline(organization_id, pipeline_id)
        return dict(self._member(self._clean(self.call(**spec)), spec, "pipeline", dict))

    async def aget_pipeline(self, organization_id: int, pipeline_id: int) -> dict[str, Any]:
        spec = self._spec_get_pipeline(organization_id, pipeline_id)
        return dict(self._member(await self._aclean(await self.acall(**spec)), spec, "pipeline", dict))

    def stop_pipeline(self, organization_id: int, pipeline_id: int) -> None:
        """Stop the pipeline's current run (the API takes no run id: check ``currentRun`` first)."""
        self.call(**self._spec_stop_pipeline(organization_id, pipeline_id))

    async def astop_pipeline(self, organization_id: int, pipeline_id: int) -> None:
        await self.acall(**self._spec_stop_pipeline(organization_id, pipeline_id))

    def list_pipelines(self, organization_id: int) -> list[dict[str, Any]]:
        spec = self._spec_list_pipelines(organization_id)
        return list(self._member(self._clean(self.call(**spec)), spec, "pipelines", list))

    async def alist_pipelines(self, organization_id: int) -> list[dict[str, Any]]:
        spec = self._spec_list_pipelines(organization_id)
        return list(self._member(await self._aclean(await self.acall(**spec)), spec, "pipelines", list))

    def _clean(self, resp: ApiResponse) -> ApiResponse:
        """The response with step secrets masked and redacted from its body (and no raw text)."""
        return resp.with_body(self.redact_body(resp.body))

    async def _aclean(self, resp: ApiResponse) -> ApiResponse:
        return resp.with_body(await self.aredact_body(resp.body))

    # ---- UI links ----------------------------------------------------------------------------------

    def studio_pipeline_url(self, organization_id: int, pipeline_id: int) -> str:
        """The Studio URL for the pipeline link (pattern unconfirmed: :data:`STUDIO_PIPELINES_URL`)."""
        return STUDIO_PIPELINES_URL.format(
            studio=self.resolved.options["studio_url"],
            organization_id=validate_int_id("organization_id", organization_id),
            pipeline_id=validate_int_id("pipeline_id", pipeline_id),
        )

    # ---- connection test ---------------------------------------------------------------------------

    def _probe(self) -> str:
        organization_id = self.resolved.options.get("organization_id")
        if organization_id is None:
            raise AirflowException(
                f"Connection {self.conn_id!r}: Edge Impulse organization API keys are scoped to one "
                'organization; add {"organization_id": <your organization id>} to the connection extra so '
                "the test can list that organization's pipelines."
            )
        pipelines = self.list_pipelines(organization_id)
        return (f"Connected to Edge Impulse organization {organization_id} "
                f"({len(pipelines)} pipeline{'s' if len(pipelines) != 1 else ''}).")


__all__ = [
    "DEFAULT_HOST",
    "SECRET_STEP_FIELDS",
    "STUDIO_PIPELINES_URL",
    "EdgeImpulseHook",
    "EdgeImpulseProfile",
    "validate_int_id",
]
