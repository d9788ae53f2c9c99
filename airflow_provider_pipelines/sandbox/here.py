"""Emulator of the HERE platform Pipeline API v2 and the HERE OAuth 2.0 token endpoint.

* ``POST /oauth2/token`` - OAuth 1.0a HMAC-SHA256 signed client-credentials token request
  (form body: snake_case answer; JSON body: camelCase answer).
* ``{base}/v2/pipelines/{pipelineId}/versions[/{versionId}[/jobs|/operations[/{op}]]]`` with
  ``base = /pipeline-service`` (and ``/pipeline-service-alt``, the target of simulated 307s).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from airflow_provider_pipelines.sandbox._http import (
    BodyError,
    base_url,
    iso_ms_offset,
    json_response,
    media_type,
    parse_bool,
    parse_form,
    parse_json,
    read_body,
)
from airflow_provider_pipelines.sandbox.clock import Event, seconds_to_ms
from airflow_provider_pipelines.sandbox.config import (
    HERE_PIPELINE_FAILING,
    HERE_PIPELINE_OK,
    HERE_TEMPLATE_FAILING,
    HERE_TEMPLATE_OK,
    HERE_VERSION_FAILING,
    HERE_VERSION_OK,
    HERE_VERSION_OK_SIBLING,
    resource_knobs,
)

if TYPE_CHECKING:
    from airflow_provider_pipelines.sandbox.state import SandboxState

__all__ = ["HereError", "HereState", "error_message_body", "error_response_body", "oauth_signature"]

PRIMARY_BASE = "/pipeline-service"
ALT_BASE = "/pipeline-service-alt"
OPERATIONS = ("activate", "cancel", "deactivate", "pause", "resume")
PROCESSING_TYPES = ("changes", "reprocess", "no_changes")
RUN_AS_ID = re.compile(
    r"hrn:(here|here-dev|here-cn|here-cn-dev):account:[a-zA-Z-]*:[a-zA-Z-]+:[a-zA-Z0-9/-]{3,63}"
)
_ACTIVATE_KEYS = frozenset(
    {"highAvailability", "inputCatalogs", "outputCatalog", "runAsId", "snapshotId", "useLatestCheckpoint"}
)
_OAUTH_REQUIRED = (
    "oauth_consumer_key",
    "oauth_nonce",
    "oauth_signature",
    "oauth_signature_method",
    "oauth_timestamp",
)


# --------------------------------------------------------------------------------------------
# Error bodies
# --------------------------------------------------------------------------------------------
def error_message_body(
    status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Pipeline API ``ErrorMessage``."""
    body: dict[str, Any] = {
        "status": status,
        "code": code,
        "message": message,
        "messageTemplate": message,
        "templateOptions": {},
    }
    if errors:
        body["errors"] = errors
    return body


def error_response_body(
    status: int, error_code: int, message: str, fields: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Token endpoint ``ErrorResponse``."""
    body: dict[str, Any] = {
        "errorId": f"ERROR-{uuid.uuid4()}",
        "httpStatus": status,
        "errorCode": error_code,
        "message": message,
    }
    if fields:
        body["errorFields"] = fields
    return body


class HereError(Exception):
    """Raised inside Pipeline API handlers; becomes an ``ErrorMessage`` response."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        *,
        as_array: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.as_array = as_array

    def response(self) -> Response:
        body: Any = error_message_body(self.status, self.code, self.message, self.errors)
        return json_response([body] if self.as_array else body, self.status)


class _TokenError(Exception):
    def __init__(
        self, status: int, error_code: int, message: str, fields: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = fields

    def response(self) -> Response:
        return json_response(
            error_response_body(self.status, self.error_code, self.message, self.fields), self.status
        )


# --------------------------------------------------------------------------------------------
# OAuth 1.0a signature (RFC 5849 section 3.4, HMAC-SHA256)
# --------------------------------------------------------------------------------------------
def pct(value: str) -> str:
    """RFC 3986 percent-encoding as OAuth 1.0 requires (unreserved characters kept)."""
    return quote(value, safe="-._~")


def normalized_url(scheme: str, host: str, path: str) -> str:
    scheme = scheme.lower()
    host = host.lower()
    if (scheme == "http" and host.endswith(":80")) or (scheme == "https" and host.endswith(":443")):
        host = host.rsplit(":", 1)[0]
    return f"{scheme}://{host}{path}"


def signature_base_string(method: str, url: str, params: list[tuple[str, str]]) -> str:
    encoded = sorted((pct(k), pct(v)) for k, v in params)
    param_string = "&".join(f"{k}={v}" for k, v in encoded)
    return "&".join((method.upper(), pct(url), pct(param_string)))


def oauth_signature(secret: str, base_string: str) -> str:
    key = (pct(secret) + "&").encode()
    digest = hmac.new(key, base_string.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def parse_oauth_header(header: str) -> dict[str, str]:
    """Parse ``OAuth k="v", ...``; raises ValueError when malformed or a parameter repeats."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "oauth" or not rest.strip():
        raise ValueError("the Authorization header must use the OAuth scheme")
    params: dict[str, str] = {}
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r'([A-Za-z0-9_]+)\s*=\s*"([^"]*)"', part)
        if not match:
            raise ValueError(f"malformed OAuth parameter {part!r}")
        key, value = match.group(1), unquote(match.group(2))
        if key in params:
            raise ValueError(f"duplicated OAuth parameter {key!r}")
        params[key] = value
    return params


# --------------------------------------------------------------------------------------------
class HereState:
    """State and HTTP handlers of the HERE emulator."""

    def __init__(self, sandbox: SandboxState) -> None:
        self.sb = sandbox
        self.tokens: dict[str, dict[str, Any]] = {}
        self.nonces: dict[tuple[str, str], int] = {}
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}
        self._catalog_counter = 0

    @property
    def cfg(self) -> dict[str, Any]:
        return self.sb.config["here"]

    def reset(self, now: int) -> None:
        self.tokens = {}
        self.nonces = {}
        self.pipelines = {}
        self.versions = {}
        self._catalog_counter = 0
        for pid, name, description in (
            (HERE_PIPELINE_OK, "sandbox-weather-batch", "Batch pipeline whose jobs complete"),
            (HERE_PIPELINE_FAILING, "sandbox-failing-batch", "Batch pipeline whose jobs fail"),
        ):
            self.pipelines[pid] = {"id": pid, "name": name, "description": description}
        seeds = (
            (HERE_VERSION_OK, HERE_PIPELINE_OK, HERE_TEMPLATE_OK, 1, "sandbox-weather-batch"),
            (HERE_VERSION_OK_SIBLING, HERE_PIPELINE_OK, HERE_TEMPLATE_OK, 2, "sandbox-weather-batch"),
            (HERE_VERSION_FAILING, HERE_PIPELINE_FAILING, HERE_TEMPLATE_FAILING, 1, "sandbox-failing-batch"),
        )
        for vid, pid, tid, number, name in seeds:
            self.versions[vid] = {
                "id": vid,
                "pipelineId": pid,
                "name": f"{name} v{number}",
                "versionNumber": number,
                "state": "ready",
                "pipelineTemplateId": tid,
                "inputCatalogs": {"weather": "hrn:here:data::sandbox:sandbox-weather-in"},
                "outputCatalogHRN": f"hrn:here:data::sandbox:{name}-out",
                "schedulerConfiguration": {"catalogTriggerOptions": "version_resolver"},
                "clusterConfiguration": {
                    "workers": 2,
                    "workerUnits": 1,
                    "supervisorUnits": 1,
                    "workerResourceProfileId": "HS1",
                    "gcProfile": "g1gc",
                },
                "billingTag": "sandbox",
                "runtimeEnvironmentPatch": "batch-3.0.0",
                "multiRegionEnabled": False,
                "targetRegionId": "sandbox-local",
                "created": now,
                "updated": now,
                "_ops": [],
                "_jobs": [],
                "_pending_op": None,
                "_active_job": None,
                "_run_now": False,
                "_trigger": None,
            }

    def expire_tokens(self) -> int:
        count = len(self.tokens)
        self.tokens.clear()
        return count

    # ------------------------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [Route("/oauth2/token", self.token, methods=["POST"])]
        api = self._api
        for prefix in (PRIMARY_BASE, ALT_BASE):
            v = prefix + "/v2/pipelines/{pipelineId}/versions"
            routes += [
                Route(prefix + "/v2/pipelines", api(self.list_pipelines), methods=["GET"]),
                Route(v, api(self.list_versions), methods=["GET"]),
                Route(v + "/{versionId}", api(self.get_version), methods=["GET"]),
                Route(v + "/{versionId}/jobs", api(self.list_jobs), methods=["GET"]),
                Route(v + "/{versionId}/operations", api(self.list_operations), methods=["GET"]),
                Route(
                    v + "/{versionId}/operations/{operation}", api(self.operation), methods=["GET", "POST"]
                ),
            ]
        return routes

    def _api(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                self._check_bearer(request)
                return await handler(request)
            except HereError as exc:
                return exc.response()

        endpoint.__name__ = handler.__name__
        return endpoint

    def _check_bearer(self, request: Request) -> None:
        header = request.headers.get("authorization")
        if not header:
            raise HereError(401, "E1401", "Unauthorized: missing 'Authorization: Bearer <token>' header")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HereError(401, "E1401", "Unauthorized: the Authorization header must be 'Bearer <token>'")
        with self.sb.lock:
            now = self.sb.tick()
            record = self.tokens.get(token.strip())
            if record is None or record["expires_ms"] <= now:
                raise HereError(401, "E1401", "Unauthorized: the bearer token is invalid or has expired")

    # ------------------------------------------------------------------------------------------
    # Token endpoint
    # ------------------------------------------------------------------------------------------
    async def token(self, request: Request) -> Response:
        try:
            return await self._token(request)
        except _TokenError as exc:
            return exc.response()

    async def _token(self, request: Request) -> Response:
        header = request.headers.get("authorization")
        if not header:
            raise _TokenError(401, 401200, "Authorization header missing")
        try:
            oauth = parse_oauth_header(header)
        except ValueError as exc:
            raise _TokenError(401, 401202, f"Malformed OAuth 1.0 header: {exc}") from exc
        missing = [name for name in _OAUTH_REQUIRED if not oauth.get(name)]
        if missing:
            raise _TokenError(401, 401202, f"Malformed OAuth 1.0 header: missing {', '.join(missing)}")
        if oauth["oauth_signature_method"] != "HMAC-SHA256":
            raise _TokenError(
                401, 401205, f"Unsupported value for signature method: {oauth['oauth_signature_method']}"
            )
        if oauth.get("oauth_version", "1.0") != "1.0":
            raise _TokenError(401, 401206, 'Unsupported value for "oauth_version" parameter (should be 1.0)')
        if not re.fullmatch(r"\d{1,12}", oauth["oauth_timestamp"]):
            raise _TokenError(
                401, 401202, "Malformed OAuth 1.0 header: oauth_timestamp must be epoch seconds"
            )
        timestamp = int(oauth["oauth_timestamp"])
        window = int(self.cfg["timestamp_window"])
        wall = int(time.time())
        if abs(wall - timestamp) > window:
            raise _TokenError(401, 401204, "Time stamp is outside the valid period")
        consumer = oauth["oauth_consumer_key"]
        if consumer in self.cfg["client_ids"]:
            raise _TokenError(
                401,
                401310,
                "Invalid signature - Attempt to use client ID instead of access key identifier "
                "for consumer key",
            )
        secret = self.cfg["access_keys"].get(consumer)
        if secret is None:
            raise _TokenError(401, 401300, "Invalid client credentials")

        try:
            raw = await read_body(request)
        except BodyError as exc:
            raise _TokenError(400, 400200, str(exc)) from exc
        mtype = media_type(request)
        signed_params: list[tuple[str, str]] = [
            (k, v) for k, v in oauth.items() if k not in ("oauth_signature", "realm")
        ]
        signed_params += [(k, v) for k, v in request.query_params.multi_items()]
        json_variant = mtype == "application/json"
        fields: dict[str, Any]
        if json_variant:
            try:
                body = parse_json(raw) if raw.strip() else None
            except BodyError as exc:
                raise _TokenError(400, 400002, "Invalid JSON") from exc
            if not isinstance(body, dict):
                raise _TokenError(400, 400002, "Invalid JSON: the body must be an object")
            fields = {
                "grant_type": body.get("grantType"),
                "scope": body.get("scope"),
                "expires_in": body.get("expiresIn"),
            }
        elif mtype == "application/x-www-form-urlencoded":
            try:
                form = parse_form(raw)
            except BodyError as exc:
                raise _TokenError(400, 400200, str(exc)) from exc
            signed_params += [(k, v) for k, values in form.items() for v in values]
            fields = {k: values[-1] for k, values in form.items()}
        elif not mtype:
            raise _TokenError(400, 400003, "Content-Type header missing")
        else:
            raise _TokenError(400, 400004, f"Unsupported Content-Type {mtype!r}")

        raw_path = request.scope.get("raw_path")
        path = raw_path.decode("latin-1").split("?", 1)[0] if raw_path else request.url.path
        host = request.headers.get("host") or request.url.netloc
        url = normalized_url(request.url.scheme, host, path)
        expected = oauth_signature(secret, signature_base_string(request.method, url, signed_params))
        if not hmac.compare_digest(expected, oauth["oauth_signature"]):
            raise _TokenError(401, 401300, "Invalid client credentials (signature mismatch)")

        with self.sb.lock:
            now = self.sb.tick()
            self.nonces = {k: ts for k, ts in self.nonces.items() if ts >= wall - 2 * window}
            nonce_key = (consumer, oauth["oauth_nonce"])
            if nonce_key in self.nonces:
                raise _TokenError(401, 401207, "Nonce already consumed")
            self.nonces[nonce_key] = timestamp

        grant_name = "grantType" if json_variant else "grant_type"
        grant = fields.get("grant_type")
        if grant is None or grant == "":
            raise _TokenError(
                400,
                400201,
                f"Missing required field: {grant_name}",
                [{"name": grant_name, "errorCode": 400201, "message": "Missing required field"}],
            )
        if grant != "client_credentials":
            raise _TokenError(
                400,
                400203,
                f"Invalid value for {grant_name}",
                [{"name": grant_name, "errorCode": 400203, "message": "Must be client_credentials"}],
            )
        scope = fields.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise _TokenError(400, 400217, "Not a valid string value: scope")
        if scope:
            if len(scope.split()) > 1:
                raise _TokenError(400, 400981, "Only one project scope is allowed")
            if scope not in self.cfg["project_scopes"]:
                raise _TokenError(403, 403109, f"The client is not a member of the project {scope}")
        lifetime = int(self.cfg["token_lifetime"])
        requested = fields.get("expires_in")
        if requested not in (None, ""):
            try:
                requested_s = int(requested)
            except (TypeError, ValueError) as exc:
                raise _TokenError(400, 400203, "Invalid value for expires_in") from exc
            if requested_s <= 0:
                raise _TokenError(400, 400203, "Invalid value for expires_in")
            lifetime = min(lifetime, requested_s)
        with self.sb.lock:
            token = self.sb.new_token("here-sandbox")
            self.tokens[token] = {"expires_ms": now + lifetime * 1000, "consumer": consumer, "scope": scope}
        headers = {"Cache-Control": "no-store"}
        if json_variant:
            out: dict[str, Any] = {"accessToken": token, "tokenType": "bearer", "expiresIn": lifetime}
            if scope:
                out["scope"] = scope
            return json_response(out, headers=headers)
        body_out: dict[str, Any] = {"access_token": token, "token_type": "bearer", "expires_in": lifetime}
        if scope:
            body_out["scope"] = scope
        return json_response(body_out, headers=headers)

    # ------------------------------------------------------------------------------------------
    # Lookups and views
    # ------------------------------------------------------------------------------------------
    def _version(self, request: Request, *, as_array: bool = False) -> dict[str, Any]:
        pid = request.path_params["pipelineId"]
        vid = request.path_params.get("versionId")
        for name, value in (("pipelineId", pid), ("versionId", vid)):
            if value is None:
                continue
            try:
                uuid.UUID(value)
            except ValueError as exc:
                raise HereError(
                    400,
                    "E1000",
                    "Validation Failed",
                    [
                        {
                            "field": f"/{name}",
                            "invalidValue": value,
                            "message": "must be a UUID",
                            "code": "E1000",
                            "status": 400,
                        }
                    ],
                    as_array=as_array,
                ) from exc
        if pid not in self.pipelines:
            raise HereError(404, "E1404", f"Pipeline {pid} not found", as_array=as_array)
        version = self.versions.get(vid or "")
        if version is None or version["pipelineId"] != pid:
            raise HereError(
                404, "E1404", f"PipelineVersion {vid} of pipeline {pid} not found", as_array=as_array
            )
        return version

    @staticmethod
    def _clean(record: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in record.items() if not k.startswith("_") and v is not None}

    def _op_view(self, op: dict[str, Any]) -> dict[str, Any]:
        view = self._clean(op)
        view["created"] = iso_ms_offset(op["created"])
        return view

    def _job_view(self, job: dict[str, Any], base: str) -> dict[str, Any]:
        view = self._clean(job)
        view["created"] = iso_ms_offset(job["created"])
        view["updated"] = iso_ms_offset(job["updated"])
        view["loggingUrl"] = f"{base}/_sandbox/here/logs?jobId={job['id']}"
        view["pipelineUIUrl"] = f"{base}/_sandbox/here/jobs/{job['id']}/sparkui"
        return view

    @staticmethod
    def _visible_jobs(version: dict[str, Any]) -> list[dict[str, Any]]:
        return [job for job in version["_jobs"] if job["_visible"]]

    def _version_view(self, version: dict[str, Any], base: str, verbose: bool) -> dict[str, Any]:
        view = self._clean(version)
        view["created"] = iso_ms_offset(version["created"])
        view["updated"] = iso_ms_offset(version["updated"])
        view["loggingUrl"] = f"{base}/_sandbox/here/logs?pipelineVersionId={version['id']}"
        jobs = self._visible_jobs(version)
        if jobs:
            view["pipelineUIUrl"] = f"{base}/_sandbox/here/jobs/{jobs[-1]['id']}/sparkui"
        else:
            view["pipelineUIUrl"] = f"{base}/_sandbox/here/versions/{version['id']}/ui"
        if verbose:
            if version["_ops"]:
                view["latestOperation"] = self._op_view(version["_ops"][-1])
            if jobs:
                view["latestJob"] = self._job_view(jobs[-1], base)
        return view

    # ------------------------------------------------------------------------------------------
    # Read-only handlers
    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _verbose(request: Request) -> bool:
        try:
            return bool(parse_bool(request.query_params.get("verbose")))
        except ValueError as exc:
            raise HereError(
                400,
                "E1000",
                "Validation Failed",
                [
                    {
                        "field": "verbose",
                        "invalidValue": request.query_params.get("verbose"),
                        "message": str(exc),
                        "code": "E1000",
                        "status": 400,
                    }
                ],
            ) from exc

    async def list_pipelines(self, request: Request) -> Response:
        """``GET /v2/pipelines`` (listPipelines): the pipelines visible to the caller, as an array."""
        with self.sb.lock:
            items = [dict(p) for p in sorted(self.pipelines.values(), key=lambda p: p["name"])]
        return json_response(items)

    async def list_versions(self, request: Request) -> Response:
        verbose = self._verbose(request)
        pid = request.path_params["pipelineId"]
        with self.sb.lock:
            self.sb.tick()
            try:
                uuid.UUID(pid)
            except ValueError as exc:
                raise HereError(400, "E1000", "Validation Failed: pipelineId must be a UUID") from exc
            if pid not in self.pipelines:
                raise HereError(404, "E1404", f"Pipeline {pid} not found")
            base = base_url(request)
            items = [
                self._version_view(v, base, verbose)
                for v in sorted(self.versions.values(), key=lambda v: v["versionNumber"])
                if v["pipelineId"] == pid
            ]
        return json_response(items)

    async def get_version(self, request: Request) -> Response:
        verbose = self._verbose(request)
        with self.sb.lock:
            self.sb.tick()
            version = self._version(request)
            return json_response(self._version_view(version, base_url(request), verbose))

    async def list_jobs(self, request: Request) -> Response:
        with self.sb.lock:
            self.sb.tick()
            version = self._version(request, as_array=True)
            base = base_url(request)
            return json_response([self._job_view(job, base) for job in self._visible_jobs(version)])

    async def list_operations(self, request: Request) -> Response:
        with self.sb.lock:
            self.sb.tick()
            version = self._version(request)
            return json_response([self._op_view(op) for op in version["_ops"]])

    async def operation(self, request: Request) -> Response:
        name = request.path_params["operation"]
        if request.method == "GET":
            with self.sb.lock:
                self.sb.tick()
                version = self._version(request)
                for op in version["_ops"]:
                    if op["id"] == name:
                        return json_response(self._op_view(op))
            raise HereError(404, "E1404", f"Operation {name} not found")
        if name == "upgrade":
            raise HereError(501, "E1501", "The sandbox does not simulate the upgrade operation")
        if name not in OPERATIONS:
            raise HereError(404, "E1404", f"Unknown operation '{name}'")
        return await self._post_operation(request, name)

    # ------------------------------------------------------------------------------------------
    # State-changing operations
    # ------------------------------------------------------------------------------------------
    async def _read_op_body(self, request: Request) -> dict[str, Any] | None:
        try:
            raw = await read_body(request)
        except BodyError as exc:
            raise HereError(400, "E1000", str(exc)) from exc
        if not raw.strip():
            return None
        mtype = media_type(request)
        if mtype and mtype != "application/json":
            raise HereError(415, "E1415", f"Unsupported Media Type {mtype!r}: use application/json")
        try:
            body = parse_json(raw)
        except BodyError as exc:
            raise HereError(400, "E1000", f"Validation Failed: {exc}") from exc
        if not isinstance(body, dict):
            raise HereError(400, "E1000", "Validation Failed: the body must be a JSON object")
        return body

    @staticmethod
    def _field_error(field: str, value: Any, message: str) -> dict[str, Any]:
        return {"field": field, "invalidValue": value, "message": message, "code": "E1000", "status": 400}

    def _validate_activate(self, body: dict[str, Any], version: dict[str, Any]) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        err = self._field_error
        for key in sorted(set(body) - _ACTIVATE_KEYS):
            errors.append(err(f"/{key}", body[key], "unknown property"))
        for key in ("highAvailability", "useLatestCheckpoint"):
            if key in body and not isinstance(body[key], bool):
                errors.append(err(f"/{key}", body[key], "must be a boolean"))
        if "runAsId" in body and (
            not isinstance(body["runAsId"], str) or not RUN_AS_ID.fullmatch(body["runAsId"])
        ):
            errors.append(err("/runAsId", body["runAsId"], f"must match {RUN_AS_ID.pattern}"))
        if "snapshotId" in body:
            try:
                uuid.UUID(str(body["snapshotId"]))
            except ValueError:
                errors.append(err("/snapshotId", body["snapshotId"], "must be a UUID"))
        catalogs = body.get("inputCatalogs")
        if "inputCatalogs" in body:
            if not isinstance(catalogs, dict):
                errors.append(
                    err("/inputCatalogs", catalogs, "must be an object keyed by symbolic catalog id")
                )
            else:
                known = version["inputCatalogs"]
                for cid, spec in catalogs.items():
                    where = f"/inputCatalogs/{cid}"
                    if cid not in known:
                        errors.append(err(where, cid, f"unknown input catalog id (known: {sorted(known)})"))
                        continue
                    if not isinstance(spec, dict):
                        errors.append(err(where, spec, "must be an InputCatalogVersion object"))
                        continue
                    for key in sorted(set(spec) - {"processingType", "version", "sinceVersion"}):
                        errors.append(err(f"{where}/{key}", spec[key], "unknown property"))
                    if spec.get("processingType") not in PROCESSING_TYPES:
                        errors.append(
                            err(
                                f"{where}/processingType",
                                spec.get("processingType"),
                                f"must be one of {list(PROCESSING_TYPES)}",
                            )
                        )
                    for key in ("version", "sinceVersion"):
                        if key == "sinceVersion" and key not in spec:
                            continue
                        value = spec.get(key)
                        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                            errors.append(err(f"{where}/{key}", value, "must be an integer >= 0"))
                for cid in sorted(set(known) - set(catalogs)):
                    errors.append(
                        err(f"/inputCatalogs/{cid}", None, "missing version for this input catalog")
                    )
        if "outputCatalog" in body:
            out = body["outputCatalog"]
            if not isinstance(out, dict) or set(out) - {"baseVersion"}:
                errors.append(err("/outputCatalog", out, "must be an object {baseVersion}"))
            else:
                base_version = out.get("baseVersion")
                if isinstance(base_version, bool) or not isinstance(base_version, int) or base_version < 0:
                    errors.append(err("/outputCatalog/baseVersion", base_version, "must be an integer >= 0"))
        return errors

    async def _post_operation(self, request: Request, name: str) -> Response:
        body = await self._read_op_body(request)
        with self.sb.lock:
            now = self.sb.tick()
            version = self._version(request)
            knobs = resource_knobs(self.cfg, "versions", version["id"])
            redirect = knobs["redirect"]
            if redirect and name != "deactivate" and request.url.path.startswith(PRIMARY_BASE + "/"):
                rest = request.url.path[len(PRIMARY_BASE) :]
                target = redirect.rstrip("/") if isinstance(redirect, str) else base_url(request) + ALT_BASE
                return Response(status_code=307, headers={"Location": target + rest})
            run_now = False
            if name == "activate":
                if body is not None:
                    errors = self._validate_activate(body, version)
                    if errors:
                        raise HereError(400, "E1000", "Validation Failed", errors)
                    run_now = "inputCatalogs" in body or "outputCatalog" in body
            elif name == "resume" and body is not None:
                unknown = set(body) - {"highAvailability"}
                if unknown or ("highAvailability" in body and not isinstance(body["highAvailability"], bool)):
                    raise HereError(
                        400, "E1000", "Validation Failed: ResumeRequest is {highAvailability: boolean}"
                    )
            pending = version["_pending_op"]
            if pending is not None:
                raise HereError(
                    400,
                    "E1002",
                    f"Operation {pending['id']} ({pending['requestType']}) is still being processed on this "
                    "PipelineVersion; wait until it succeeds or fails",
                )
            reason = self._precondition(version, name)
            if reason:
                raise HereError(400, "E1001", reason)
            if name == "activate":
                busy = [
                    v
                    for v in self.versions.values()
                    if v["pipelineId"] == version["pipelineId"]
                    and v["id"] != version["id"]
                    and v["state"] != "ready"
                ]
                if busy:
                    raise HereError(
                        400,
                        "E1001",
                        f"Cannot activate: sibling PipelineVersion {busy[0]['id']} of the same pipeline is "
                        f"in state "
                        f"{busy[0]['state']} (must be ready)",
                    )
            op = self._create_op(version, name, body, run_now, now, knobs)
            return json_response(self._op_view(op), 202)

    @staticmethod
    def _precondition(version: dict[str, Any], name: str) -> str | None:
        state = version["state"]
        if name == "activate" and state != "ready":
            return f"Cannot activate a PipelineVersion in state {state} (must be ready)"
        if name == "deactivate" and state != "scheduled":
            return f"Cannot deactivate a PipelineVersion in state {state} (must be scheduled)"
        if name == "cancel" and state not in ("running", "paused"):
            return f"Cannot cancel a PipelineVersion in state {state} (must be running or paused)"
        if name == "pause":
            if state not in ("scheduled", "running"):
                return f"Cannot pause a PipelineVersion in state {state} (must be scheduled or running)"
            if version["_run_now"]:
                return "Cannot pause a non-scheduled batch PipelineVersion (run-now activation)"
        if name == "resume" and state != "paused":
            return f"Cannot resume a PipelineVersion in state {state} (must be paused)"
        return None

    def _create_op(
        self,
        version: dict[str, Any],
        name: str,
        body: dict[str, Any] | None,
        run_now: bool,
        now: int,
        knobs: dict[str, Any],
    ) -> dict[str, Any]:
        body = body or {}
        op: dict[str, Any] = {
            "id": self.sb.new_uuid(),
            "pipelineVersionId": version["id"],
            "requestType": name,
            "state": "accepted",
            "message": None,
            "userId": "HERE-00000000-0000-4000-8000-5a4db0c5e000",
            "clientId": self.cfg["client_ids"][0] if self.cfg["client_ids"] else None,
            "runAsId": body.get("runAsId"),
            "created": now,
            "options": {"highAvailability": bool(body.get("highAvailability", False))},
            "_run_now": run_now,
            "_body": copy.deepcopy(body),
        }
        version["_ops"].append(op)
        version["_pending_op"] = op
        accepted = seconds_to_ms(knobs["operation_accepted"])
        processing = seconds_to_ms(knobs["operation_processing"])

        def being_processed(t: int) -> None:
            op["state"] = "being_processed"

        def done(t: int) -> None:
            version["_pending_op"] = None
            if knobs["operation_outcome"] == "failure":
                op.update(state="failed", message=knobs["operation_message"])
                return
            reason = self._precondition(version, name)
            if reason:
                op.update(state="failed", message=f"Operation failed with error - {reason}")
                return
            self._apply(version, op, t)
            op["state"] = "succeeded"

        self.sb.scheduler.at(None if accepted is None else now + accepted, being_processed)
        end = None if accepted is None or processing is None else now + accepted + processing
        self.sb.scheduler.at(end, done)
        return op

    def _disarm(self, version: dict[str, Any]) -> None:
        trigger: Event | None = version["_trigger"]
        if trigger is not None:
            trigger.cancel()
        version["_trigger"] = None

    def _arm(self, version: dict[str, Any], t: int) -> None:
        self._disarm(version)
        knobs = resource_knobs(self.cfg, "versions", version["id"])
        delay = (
            0 if not version.get("schedulerConfiguration") else seconds_to_ms(knobs["scheduled_job_delay"])
        )

        def fire(t2: int) -> None:
            version["_trigger"] = None
            if version["state"] == "scheduled" and version["_active_job"] is None:
                self._start_job(version, t2, "scheduled", None)

        version["_trigger"] = self.sb.scheduler.at(None if delay is None else t + delay, fire)

    def _apply(self, version: dict[str, Any], op: dict[str, Any], t: int) -> None:
        name = op["requestType"]
        version["updated"] = t
        if name == "activate":
            if op["_run_now"]:
                version["_run_now"] = True
                version["schedulerConfiguration"] = None
                body = op["_body"]
                catalogs = {k: body[k] for k in ("inputCatalogs", "outputCatalog") if k in body}
                self._start_job(version, t, "on-demand", catalogs, bool(body.get("highAvailability", False)))
            else:
                version["state"] = "scheduled"
                self._arm(version, t)
        elif name == "deactivate":
            self._disarm(version)
            version["state"] = "ready"
        elif name == "cancel":
            self._disarm(version)
            job = version["_active_job"]
            if job is not None:
                for event in job["_events"]:
                    event.cancel()
                job.update(state="canceled", updated=t, _visible=True)
                version["_active_job"] = None
            version["_run_now"] = False
            version["state"] = "ready"
        elif name == "pause":
            self._disarm(version)
            version["state"] = "paused"
        elif name == "resume":
            if version["_active_job"] is not None:
                version["state"] = "running"
            else:
                version["state"] = "scheduled"
                self._arm(version, t)

    def _start_job(
        self,
        version: dict[str, Any],
        t: int,
        mode: str,
        catalogs: dict[str, Any] | None,
        high_availability: bool = False,
    ) -> dict[str, Any]:
        knobs = resource_knobs(self.cfg, "versions", version["id"])
        if catalogs is None:
            self._catalog_counter += 1
            n = self._catalog_counter
            catalogs = {
                "inputCatalogs": {
                    cid: {"processingType": "changes", "version": 100 + n, "sinceVersion": 99 + n}
                    for cid in version["inputCatalogs"]
                },
                "outputCatalog": {"baseVersion": 40 + n},
            }
        job: dict[str, Any] = {
            "id": self.sb.new_uuid(),
            "state": "starting",
            "catalogVersions": copy.deepcopy(catalogs),
            "created": t,
            "updated": t,
            "runtimeEnvironmentPatch": version["runtimeEnvironmentPatch"],
            "executionMode": mode,
            "highAvailability": high_availability,
            "actualRegionId": version["targetRegionId"],
            "pipelineVersionId": version["id"],
            "_visible": False,
            "_events": [],
        }
        version["_jobs"].append(job)
        version["_active_job"] = job
        if version["state"] != "paused":
            version["state"] = "running"
        version["updated"] = t
        starting = seconds_to_ms(knobs["job_starting"])
        running = seconds_to_ms(knobs["job_running"])

        def to_running(t1: int) -> None:
            job.update(state="running", updated=t1, _visible=True)

        def to_final(t2: int) -> None:
            job.update(state=knobs["job_outcome"], updated=t2, _visible=True)
            if version["_active_job"] is job:
                version["_active_job"] = None
                version["updated"] = t2
                if version["_run_now"]:
                    version["_run_now"] = False
                    version["state"] = "ready"
                elif version["state"] != "paused":
                    version["state"] = "scheduled"

        for when, fn in (
            (None if starting is None else t + starting, to_running),
            (None if starting is None or running is None else t + starting + running, to_final),
        ):
            event = self.sb.scheduler.at(when, fn)
            if event is not None:
                job["_events"].append(event)
        return job


def render_error(path: str, status: int, message: str) -> Any:
    """Vendor-shaped error body (for faults and routing errors)."""
    if path.rstrip("/") == "/oauth2/token":
        return error_response_body(status, 429002 if status == 429 else status * 1000, message)
    body = error_message_body(status, f"E{status}", message)
    if path.rstrip("/").endswith("/jobs") and status in (404, 500):
        return [body]
    return body
