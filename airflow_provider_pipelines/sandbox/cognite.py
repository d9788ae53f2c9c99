"""Emulator of the Cognite Data Fusion API v1 parts the provider uses, plus an Entra-ID-like token URL.

* ``POST /{tenant}/oauth2/v2.0/token`` - OAuth2 client credentials (form body).
* ``/api/v1/projects/{project}/context/entitymatching/pipelines...`` - entity matching pipelines (beta).
* ``/api/v1/projects/{project}/advancedjoins/estimatequality...`` - advanced joins (alpha).
* ``/api/v1/projects/{project}/extpipes...`` - extraction pipelines and their runs (stable).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from airflow_provider_pipelines.sandbox._http import (
    BodyError,
    decode_cursor,
    encode_cursor,
    json_response,
    media_type,
    parse_bool,
    parse_form,
    parse_json,
    read_body,
)
from airflow_provider_pipelines.sandbox.clock import seconds_to_ms
from airflow_provider_pipelines.sandbox.config import (
    EM_PIPELINE_ASSETS_ID,
    EM_PIPELINE_ASSETS_XID,
    EM_PIPELINE_FAILING_ID,
    EM_PIPELINE_FAILING_XID,
    EXTPIPE_CONTEXT_ID,
    EXTPIPE_CONTEXT_XID,
    EXTPIPE_DATASET_ID,
    EXTPIPE_EXTRACTOR_ID,
    EXTPIPE_EXTRACTOR_XID,
    resource_knobs,
)

if TYPE_CHECKING:
    from airflow_provider_pipelines.sandbox.state import SandboxState

__all__ = ["CdfError", "CogniteState", "cdf_error_body", "oauth_error_body"]

MAX_ID = 9007199254740991
RUN_STATUSES = ("success", "failure", "seen")
_EM_CREATE_KEYS = frozenset(
    {
        "externalId",
        "name",
        "description",
        "sources",
        "targets",
        "modelParameters",
        "trueMatches",
        "confirmedMatches",
        "rejectedMatches",
        "useExistingMatches",
        "generateRules",
        "replacements",
        "rules",
        "rejectedRules",
        "scoreThreshold",
        "scheduleInterval",
    }
)
_EXTPIPE_CREATE_KEYS = frozenset(
    {
        "externalId",
        "name",
        "description",
        "dataSetId",
        "rawTables",
        "schedule",
        "contacts",
        "metadata",
        "source",
        "documentation",
        "notificationConfig",
        "createdBy",
    }
)
_MATCHER_KEYS = ("dbName", "tableName", "fromColumnKey", "toColumnKey")
_GROUP_LABEL = {
    "entity_matching": "Entity matching pipelines are a beta API",
    "advanced_joins": "Advanced joins are an alpha API",
    "extpipes": "Extraction pipelines are a stable API",
}


def cdf_error_body(
    status: int,
    message: str,
    missing: list[dict[str, Any]] | None = None,
    duplicated: list[Any] | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": status, "message": message}
    if missing:
        error["missing"] = missing
    if duplicated:
        error["duplicated"] = duplicated
    return {"error": error}


def oauth_error_body(error: str, description: str) -> dict[str, Any]:
    return {"error": error, "error_description": description}


class CdfError(Exception):
    """Raised inside handlers; becomes a CDF error response."""

    def __init__(
        self,
        status: int,
        message: str,
        missing: list[dict[str, Any]] | None = None,
        duplicated: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.missing = missing
        self.duplicated = duplicated

    def response(self) -> Response:
        return json_response(
            cdf_error_body(self.status, self.message, self.missing, self.duplicated), self.status
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_limit(raw: str | int | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    if isinstance(raw, str):
        if not re.fullmatch(r"-?\d+", raw.strip()):
            raise CdfError(400, f"Invalid limit {raw!r}: must be an integer between 1 and {maximum}")
        value = int(raw)
    elif _is_int(raw):
        value = raw
    else:
        raise CdfError(400, f"Invalid limit {raw!r}: must be an integer between 1 and {maximum}")
    if not 1 <= value <= maximum:
        raise CdfError(400, f"Invalid limit {value}: must be between 1 and {maximum}")
    return value


def _page(items: list[Any], limit: int, cursor: str | None, scope: str) -> tuple[list[Any], str | None]:
    offset = 0
    if cursor is not None:
        try:
            offset = decode_cursor(cursor, scope)
        except ValueError as exc:
            raise CdfError(400, str(exc)) from exc
    page = items[offset : offset + limit]
    next_cursor = encode_cursor(offset + limit, scope) if offset + limit < len(items) else None
    return page, next_cursor


def _parse_id(raw: str, name: str) -> int:
    if not re.fullmatch(r"\d{1,16}", raw):
        raise CdfError(400, f"Invalid {name} {raw!r}: must be an integer between 1 and {MAX_ID}")
    value = int(raw)
    if not 1 <= value <= MAX_ID:
        raise CdfError(400, f"Invalid {name} {value}: must be between 1 and {MAX_ID}")
    return value


class CogniteState:
    """State and HTTP handlers of the Cognite emulator."""

    def __init__(self, sandbox: SandboxState) -> None:
        self.sb = sandbox
        self.tokens: dict[str, dict[str, Any]] = {}
        self.em_pipelines: dict[int, dict[str, Any]] = {}
        self.em_runs: dict[int, dict[str, Any]] = {}
        self.eq_jobs: dict[str, dict[str, Any]] = {}
        self.extpipes: dict[int, dict[str, Any]] = {}
        self.extpipe_runs: dict[int, list[dict[str, Any]]] = {}
        self._next_pipeline_id = 1
        self._next_job_id = 1001
        self._next_extpipe_id = 1
        self._next_run_id = 1

    @property
    def cfg(self) -> dict[str, Any]:
        return self.sb.config["cognite"]

    # ------------------------------------------------------------------------------------------
    # Seed state
    # ------------------------------------------------------------------------------------------
    def reset(self, now: int) -> None:
        self.tokens = {}
        self.em_pipelines = {}
        self.em_runs = {}
        self.eq_jobs = {}
        self.extpipes = {}
        self.extpipe_runs = {}
        self._next_job_id = 1001
        self._next_run_id = 1
        common = {
            "sources": {"dataSetIds": [{"id": EXTPIPE_DATASET_ID}], "resource": "time_series"},
            "targets": {"dataSetIds": [{"id": EXTPIPE_DATASET_ID}], "resource": "assets"},
            "modelParameters": {
                "featureType": "bigram",
                "matchFields": [{"source": "name", "target": "name"}],
            },
            "trueMatches": [],
            "confirmedMatches": [],
            "rejectedMatches": [],
            "useExistingMatches": False,
            "generateRules": True,
            "replacements": [],
            "rules": [],
            "rejectedRules": [],
            "scoreThreshold": 0.7,
        }
        for pid, xid, name in (
            (EM_PIPELINE_ASSETS_ID, EM_PIPELINE_ASSETS_XID, "Sandbox: time series to assets"),
            (EM_PIPELINE_FAILING_ID, EM_PIPELINE_FAILING_XID, "Sandbox: always failing pipeline"),
        ):
            self.em_pipelines[pid] = {
                "id": pid,
                "externalId": xid,
                "name": name,
                "description": "Seeded by the pipelines sandbox",
                **copy.deepcopy(common),
                "createdTime": now,
                "lastUpdatedTime": now,
                "owner": self.cfg["client_id"],
            }
        self._next_pipeline_id = max(self.em_pipelines) + 1

        self.extpipes[EXTPIPE_EXTRACTOR_ID] = {
            "id": EXTPIPE_EXTRACTOR_ID,
            "externalId": EXTPIPE_EXTRACTOR_XID,
            "name": "Sandbox extractor",
            "dataSetId": EXTPIPE_DATASET_ID,
            "description": "Simulates an external extractor that feeds the sandbox project",
            "rawTables": [{"dbName": "sandbox_db", "tableName": "known_matches"}],
            "schedule": "Continuous",
            "contacts": [],
            "source": "sandbox",
            "notificationConfig": {"allowedNotSeenRangeInMinutes": 60},
            "createdBy": "sandbox",
            "createdTime": now,
            "lastUpdatedTime": now,
        }
        self.extpipes[EXTPIPE_CONTEXT_ID] = {
            "id": EXTPIPE_CONTEXT_ID,
            "externalId": EXTPIPE_CONTEXT_XID,
            "name": "Sandbox contextualization (Airflow)",
            "dataSetId": EXTPIPE_DATASET_ID,
            "description": "The extraction pipeline the provider's DAGs report their runs to",
            "schedule": "On trigger",
            "contacts": [],
            "source": "airflow",
            "createdBy": "sandbox",
            "createdTime": now,
            "lastUpdatedTime": now,
        }
        self._next_extpipe_id = max(self.extpipes) + 1
        self.extpipe_runs = {pid: [] for pid in self.extpipes}
        self._add_extpipe_run(self.extpipes[EXTPIPE_EXTRACTOR_ID], "success", "Extracted 1250 rows", now)

    def expire_tokens(self) -> int:
        count = len(self.tokens)
        self.tokens.clear()
        return count

    # ------------------------------------------------------------------------------------------
    # Routes
    # ------------------------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        p = "/api/v1/projects/{project}"
        em = p + "/context/entitymatching/pipelines"
        api = self._api
        return [
            Route("/{tenant}/oauth2/v2.0/token", self.token, methods=["POST"]),
            Route("/api/v1/token/inspect", self.token_inspect, methods=["GET"]),
            Route(em, api("entity_matching", self.em_pipelines_root), methods=["GET", "POST"]),
            Route(em + "/byids", api("entity_matching", self.em_byids), methods=["POST"]),
            Route(em + "/{pipelineId}", api("entity_matching", self.em_get), methods=["GET"]),
            Route(
                em + "/{pipelineId}/runs", api("entity_matching", self.em_runs_root), methods=["GET", "POST"]
            ),
            Route(
                em + "/{pipelineId}/runs/latest", api("entity_matching", self.em_run_latest), methods=["GET"]
            ),
            Route(
                em + "/{pipelineId}/runs/{runId}", api("entity_matching", self.em_run_get), methods=["GET"]
            ),
            Route(
                p + "/advancedjoins/estimatequality", api("advanced_joins", self.eq_create), methods=["POST"]
            ),
            Route(
                p + "/advancedjoins/estimatequality/{jobId}",
                api("advanced_joins", self.eq_get),
                methods=["GET"],
            ),
            Route(p + "/extpipes", api("extpipes", self.extpipes_create), methods=["POST"]),
            Route(p + "/extpipes/byids", api("extpipes", self.extpipes_byids), methods=["POST"]),
            Route(p + "/extpipes/runs", api("extpipes", self.ext_runs_root), methods=["GET", "POST"]),
            Route(p + "/extpipes/runs/list", api("extpipes", self.ext_runs_list), methods=["POST"]),
            Route(p + "/extpipes/{extpipeId}", api("extpipes", self.extpipes_get), methods=["GET"]),
        ]

    def _api(
        self, group: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                self._precheck(request, group)
                return await handler(request)
            except CdfError as exc:
                return exc.response()

        endpoint.__name__ = handler.__name__
        return endpoint

    def _bearer(self, request: Request) -> str:
        """The valid bearer token of the request (CdfError 401 otherwise)."""
        header = request.headers.get("authorization")
        if not header:
            raise CdfError(401, "Unauthorized: missing 'Authorization: Bearer <token>' header")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise CdfError(401, "Unauthorized: the Authorization header must be 'Bearer <token>'")
        with self.sb.lock:
            now = self.sb.tick()
            if token not in self.cfg["static_tokens"]:
                record = self.tokens.get(token)
                if record is None or record["expires_ms"] <= now:
                    raise CdfError(401, "Unauthorized: the bearer token is invalid or has expired")
        return token

    def _precheck(self, request: Request, group: str) -> None:
        """Bearer token, project, then the cdf-version header required by the API's maturity."""
        self._bearer(request)
        with self.sb.lock:
            project = request.path_params.get("project", "")
            if project not in self.cfg["projects"]:
                status = int(self.cfg["unknown_project_status"])
                raise CdfError(status, f"Project '{project}' does not exist or the token has no access to it")
            allowed: list[str] = self.cfg["cdf_versions"][group]
        raw_version = request.headers.get("cdf-version")
        value = "" if raw_version is None else raw_version.strip()
        if value not in allowed:
            wanted = ", ".join(repr(v) for v in allowed if v) or "none"
            if "" in allowed:
                wanted = "no cdf-version header, or one of " + wanted
            got = "no cdf-version header" if raw_version is None else f"cdf-version {raw_version!r}"
            raise CdfError(400, f"{_GROUP_LABEL[group]}: send {wanted} (got {got})")

    async def _json(self, request: Request, *, required: bool = True) -> Any:
        try:
            raw = await read_body(request)
        except BodyError as exc:
            raise CdfError(400, str(exc)) from exc
        if not raw.strip():
            if required:
                raise CdfError(400, "The request body is missing: a JSON object is required")
            return None
        mtype = media_type(request)
        if mtype and mtype != "application/json" and not mtype.endswith("+json"):
            raise CdfError(415, f"Unsupported Media Type {mtype!r}: use application/json")
        try:
            body = parse_json(raw)
        except BodyError as exc:
            raise CdfError(400, str(exc)) from exc
        if not isinstance(body, dict):
            raise CdfError(400, "The request body must be a JSON object")
        return body

    # ------------------------------------------------------------------------------------------
    # Token endpoint (Entra ID-like)
    # ------------------------------------------------------------------------------------------
    async def token(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        if tenant != self.cfg["tenant"]:
            return json_response(
                oauth_error_body("invalid_request", f"AADSTS90002: Tenant '{tenant}' not found."), 400
            )
        if media_type(request) != "application/x-www-form-urlencoded":
            return json_response(
                oauth_error_body(
                    "invalid_request",
                    "AADSTS900144: The request body must be application/x-www-form-urlencoded "
                    "and contain the parameter 'grant_type'.",
                ),
                400,
            )
        try:
            form = parse_form(await read_body(request))
        except BodyError as exc:
            return json_response(oauth_error_body("invalid_request", str(exc)), 400)
        for key, values in form.items():
            if len(values) > 1:
                return json_response(
                    oauth_error_body("invalid_request", f"The parameter '{key}' is duplicated."), 400
                )
        fields = {k: v[0] for k, v in form.items()}
        grant_type = fields.get("grant_type")
        if not grant_type:
            return json_response(
                oauth_error_body(
                    "invalid_request",
                    "AADSTS900144: The request body must contain the parameter 'grant_type'.",
                ),
                400,
            )
        if grant_type != "client_credentials":
            return json_response(
                oauth_error_body(
                    "unsupported_grant_type", f"AADSTS70003: The grant type '{grant_type}' is not supported."
                ),
                400,
            )
        client_id = fields.get("client_id")
        client_secret = fields.get("client_secret")
        basic = request.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(basic[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return json_response(
                    oauth_error_body("invalid_client", "Malformed Basic authorization."), 401
                )
            basic_id, _, basic_secret = decoded.partition(":")
            client_id = client_id or unquote_plus(basic_id)
            client_secret = client_secret or unquote_plus(basic_secret)
        if not client_id:
            return json_response(
                oauth_error_body(
                    "invalid_request",
                    "AADSTS900144: The request body must contain the parameter 'client_id'.",
                ),
                400,
            )
        if client_id != self.cfg["client_id"] or client_secret != self.cfg["client_secret"]:
            return json_response(
                oauth_error_body(
                    "invalid_client",
                    "AADSTS7000215: Invalid client secret provided, or the application "
                    f"'{client_id}' was not found in the directory '{tenant}'.",
                ),
                401,
            )
        scope = fields.get("scope")
        if not scope:
            return json_response(
                oauth_error_body(
                    "invalid_request", "AADSTS90014: The required field 'scope' is missing from the request."
                ),
                400,
            )
        scopes = scope.split()
        if not scopes or not all(s.endswith("/.default") for s in scopes):
            return json_response(
                oauth_error_body(
                    "invalid_scope",
                    f"AADSTS1002012: The provided value for scope {scope} is not valid. Client credential "
                    "flows must have a scope value with /.default suffixed to the resource identifier.",
                ),
                400,
            )
        lifetime = int(self.cfg["token_lifetime"])
        with self.sb.lock:
            now = self.sb.tick()
            token = self.sb.new_token("cdf-sandbox")
            self.tokens[token] = {"expires_ms": now + lifetime * 1000, "subject": client_id, "scope": scope}
        return json_response(
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    async def token_inspect(self, request: Request) -> Response:
        """``GET /api/v1/token/inspect`` (approximate: cognite-sdk calls it after a 401)."""
        try:
            token = self._bearer(request)
        except CdfError as exc:
            return exc.response()
        record = self.tokens.get(token) or {"subject": "sandbox-static-token-user"}
        return json_response(
            {
                "subject": record["subject"],
                "projects": [{"projectUrlName": p, "groups": []} for p in self.cfg["projects"]],
                "capabilities": [],
            }
        )

    # ------------------------------------------------------------------------------------------
    # Entity matching pipelines
    # ------------------------------------------------------------------------------------------
    def _pipeline_view(self, pipeline: dict[str, Any], with_last_run: bool = True) -> dict[str, Any]:
        view = copy.deepcopy(pipeline)
        if with_last_run:
            runs = [r for r in self.em_runs.values() if r["_pipelineId"] == pipeline["id"]]
            if runs:
                view["lastRun"] = self._run_summary(max(runs, key=lambda r: r["jobId"]))
        return view

    @staticmethod
    def _run_summary(run: dict[str, Any]) -> dict[str, Any]:
        return {
            k: run[k] for k in ("jobId", "status", "createdTime", "startTime", "statusTime", "errorMessage")
        }

    def _run_results(self, run: dict[str, Any]) -> dict[str, Any]:
        view = self._run_summary(run)
        if run["status"] == "Completed":
            knobs = run["_knobs"]
            view["matches"] = copy.deepcopy(knobs["matches"])
            view["suggestedRules"] = copy.deepcopy(knobs["suggested_rules"])
            view["generatedRules"] = copy.deepcopy(knobs["generated_rules"])
            view["errors"] = copy.deepcopy(knobs["errors"])
        return view

    def _get_pipeline(self, request: Request) -> dict[str, Any]:
        pid = _parse_id(request.path_params["pipelineId"], "pipelineId")
        pipeline = self.em_pipelines.get(pid)
        if pipeline is None:
            raise CdfError(404, f"Entity matching pipeline {pid} not found", missing=[{"id": pid}])
        return pipeline

    async def em_pipelines_root(self, request: Request) -> Response:
        if request.method == "GET":
            limit = _parse_limit(request.query_params.get("limit"), 100, 1000)
            with self.sb.lock:
                self.sb.tick()
                items = [self._pipeline_view(p) for _, p in sorted(self.em_pipelines.items())]
            page, cursor = _page(items, limit, request.query_params.get("cursor"), "em-pipelines")
            body: dict[str, Any] = {"items": page}
            if cursor:
                body["nextCursor"] = cursor
            return json_response(body)
        data = await self._json(request)
        items = data.get("items")
        extra = set(data) - {"items"}
        if extra:
            raise CdfError(400, f"Unrecognized field(s) in the request body: {sorted(extra)}")
        if not isinstance(items, list) or not 1 <= len(items) <= 1000:
            raise CdfError(400, "'items' must be a list of 1 to 1000 pipelines")
        new_xids: list[str] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise CdfError(400, f"items[{i}] must be an object")
            unknown = set(item) - _EM_CREATE_KEYS
            if unknown:
                raise CdfError(400, f"items[{i}]: unrecognized field(s) {sorted(unknown)}")
            for side in ("sources", "targets"):
                value = item.get(side)
                if not isinstance(value, dict) or not isinstance(value.get("resource"), str):
                    raise CdfError(400, f"items[{i}].{side} is required and must contain 'resource'")
            xid = item.get("externalId")
            if xid is not None:
                if not isinstance(xid, str) or not 1 <= len(xid) <= 255:
                    raise CdfError(400, f"items[{i}].externalId must be a string of 1 to 255 characters")
                new_xids.append(xid)
            threshold = item.get("scoreThreshold")
            if threshold is not None and (
                isinstance(threshold, bool)
                or not isinstance(threshold, int | float)
                or not 0 <= threshold <= 1
            ):
                raise CdfError(400, f"items[{i}].scoreThreshold must be a number between 0 and 1")
            for flag in ("useExistingMatches", "generateRules"):
                if flag in item and not isinstance(item[flag], bool):
                    raise CdfError(400, f"items[{i}].{flag} must be a boolean")
            if "scheduleInterval" in item and (
                not _is_int(item["scheduleInterval"]) or item["scheduleInterval"] < 0
            ):
                raise CdfError(400, f"items[{i}].scheduleInterval must be an integer >= 0")
        dup_in_request = sorted({x for x in new_xids if new_xids.count(x) > 1})
        if dup_in_request:
            raise CdfError(
                400,
                "Duplicate externalIds in the request",
                duplicated=[{"externalId": x} for x in dup_in_request],
            )
        with self.sb.lock:
            now = self.sb.tick()
            existing = {p.get("externalId") for p in self.em_pipelines.values()}
            clash = [x for x in new_xids if x in existing]
            if clash:
                raise CdfError(
                    409, "External ids already exist", duplicated=[{"externalId": x} for x in clash]
                )
            owner = self._subject(request)
            created = []
            for item in items:
                pid = self._next_pipeline_id
                self._next_pipeline_id += 1
                pipeline = {
                    **copy.deepcopy(item),
                    "id": pid,
                    "createdTime": now,
                    "lastUpdatedTime": now,
                    "owner": owner,
                }
                self.em_pipelines[pid] = pipeline
                created.append(self._pipeline_view(pipeline, with_last_run=False))
        return json_response({"items": created}, 201)

    def _subject(self, request: Request) -> str:
        token = request.headers.get("authorization", "").partition(" ")[2].strip()
        record = self.tokens.get(token)
        return str(record["subject"]) if record else "sandbox-static-token-user"

    async def em_byids(self, request: Request) -> Response:
        data = await self._json(request)
        items, ignore = self._identifiers(data)
        with self.sb.lock:
            self.sb.tick()
            by_xid = {p.get("externalId"): p for p in self.em_pipelines.values() if p.get("externalId")}
            found: list[dict[str, Any]] = []
            missing: list[dict[str, Any]] = []
            for ident in items:
                pipeline = (
                    self.em_pipelines.get(ident["id"]) if "id" in ident else by_xid.get(ident["externalId"])
                )
                if pipeline is None:
                    missing.append(ident)
                else:
                    found.append(self._pipeline_view(pipeline))
        if missing and not ignore:
            raise CdfError(400, "Ids not found", missing=missing)
        return json_response({"items": found})

    @staticmethod
    def _identifiers(data: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        extra = set(data) - {"items", "ignoreUnknownIds"}
        if extra:
            raise CdfError(400, f"Unrecognized field(s) in the request body: {sorted(extra)}")
        items = data.get("items")
        if not isinstance(items, list) or not 1 <= len(items) <= 1000:
            raise CdfError(400, "'items' must be a list of 1 to 1000 identifiers")
        ignore = data.get("ignoreUnknownIds", False)
        if not isinstance(ignore, bool):
            raise CdfError(400, "'ignoreUnknownIds' must be a boolean")
        idents: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or len(item) != 1 or not ({"id", "externalId"} & set(item)):
                raise CdfError(400, f"items[{i}] must be {{'id': int}} or {{'externalId': str}}")
            if "id" in item and (not _is_int(item["id"]) or not 1 <= item["id"] <= MAX_ID):
                raise CdfError(400, f"items[{i}].id must be an integer between 1 and {MAX_ID}")
            if "externalId" in item and (not isinstance(item["externalId"], str) or not item["externalId"]):
                raise CdfError(400, f"items[{i}].externalId must be a non-empty string")
            idents.append(dict(item))
        dups = [x for i, x in enumerate(idents) if x in idents[:i]]
        if dups:
            raise CdfError(400, "All ids and externalIds must be unique", duplicated=dups)
        return idents, ignore

    async def em_get(self, request: Request) -> Response:
        with self.sb.lock:
            self.sb.tick()
            return json_response(self._pipeline_view(self._get_pipeline(request)))

    async def em_runs_root(self, request: Request) -> Response:
        if request.method == "POST":
            data = await self._json(request, required=False)
            if data:
                raise CdfError(400, "This endpoint takes no request body")
            with self.sb.lock:
                now = self.sb.tick()
                pipeline = self._get_pipeline(request)
                run = self._start_em_run(pipeline, now)
                return json_response(self._run_summary(run))
        limit = _parse_limit(request.query_params.get("limit"), 100, 100)
        with self.sb.lock:
            self.sb.tick()
            pipeline = self._get_pipeline(request)
            runs = sorted(
                (r for r in self.em_runs.values() if r["_pipelineId"] == pipeline["id"]),
                key=lambda r: (r["createdTime"], r["jobId"]),
                reverse=True,
            )
            items = [self._run_summary(r) for r in runs]
        page, cursor = _page(items, limit, request.query_params.get("cursor"), f"em-runs-{pipeline['id']}")
        body: dict[str, Any] = {"items": page}
        if cursor:
            body["nextCursor"] = cursor
        return json_response(body)

    def _start_em_run(self, pipeline: dict[str, Any], now: int) -> dict[str, Any]:
        knobs = resource_knobs(
            self.cfg["entity_matching"], "pipelines", pipeline.get("externalId"), pipeline["id"]
        )
        job_id = self._next_job_id
        self._next_job_id += 1
        run: dict[str, Any] = {
            "jobId": job_id,
            "status": "Queued",
            "createdTime": now,
            "startTime": now,
            "statusTime": now,
            "errorMessage": None,
            "_pipelineId": pipeline["id"],
            "_knobs": knobs,
        }
        self.em_runs[job_id] = run
        self._schedule_job(run, knobs, now, self._finish_em)
        return run

    def _schedule_job(
        self,
        job: dict[str, Any],
        knobs: dict[str, Any],
        now: int,
        finish: Callable[[dict[str, Any], int], None],
    ) -> None:
        queued = seconds_to_ms(knobs["queued"])
        running = seconds_to_ms(knobs["running"])

        def to_running(t: int) -> None:
            job.update(status="Running", startTime=t, statusTime=t)

        self.sb.scheduler.at(None if queued is None else now + queued, to_running)
        end = None if queued is None or running is None else now + queued + running
        self.sb.scheduler.at(end, lambda t: finish(job, t))

    @staticmethod
    def _finish_em(run: dict[str, Any], t: int) -> None:
        knobs = run["_knobs"]
        if knobs["outcome"] == "success":
            run.update(status="Completed", statusTime=t)
        else:
            run.update(status="Failed", statusTime=t, errorMessage=knobs["error_message"])

    async def em_run_latest(self, request: Request) -> Response:
        try:
            include_skipped = parse_bool(request.query_params.get("includeSkipped"))
        except ValueError as exc:
            raise CdfError(400, f"Invalid includeSkipped: {exc}") from exc
        del include_skipped  # the sandbox never produces skipped runs
        with self.sb.lock:
            self.sb.tick()
            pipeline = self._get_pipeline(request)
            runs = [r for r in self.em_runs.values() if r["_pipelineId"] == pipeline["id"]]
            if not runs:
                raise CdfError(404, f"Entity matching pipeline {pipeline['id']} has no runs")
            latest = max(runs, key=lambda r: (r["createdTime"], r["jobId"]))
            return json_response(self._run_summary(latest))

    async def em_run_get(self, request: Request) -> Response:
        with self.sb.lock:
            self.sb.tick()
            pipeline = self._get_pipeline(request)
            run_id = _parse_id(request.path_params["runId"], "runId")
            run = self.em_runs.get(run_id)
            if run is None or run["_pipelineId"] != pipeline["id"]:
                raise CdfError(
                    404,
                    f"Run {run_id} of entity matching pipeline {pipeline['id']} not found",
                    missing=[{"id": run_id}],
                )
            return json_response(self._run_results(run))

    # ------------------------------------------------------------------------------------------
    # Advanced joins: estimate quality
    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _eq_view(job: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in job.items() if not k.startswith("_")}

    async def eq_create(self, request: Request) -> Response:
        data = await self._json(request)
        extra = set(data) - {"advancedJoinExternalId", "matcher", "dummyResponse"}
        if extra:
            raise CdfError(400, f"Unrecognized field(s) in the request body: {sorted(extra)}")
        xid = data.get("advancedJoinExternalId")
        if not isinstance(xid, str) or not 1 <= len(xid) <= 255:
            raise CdfError(400, "advancedJoinExternalId is required: a string of 1 to 255 characters")
        matcher = data.get("matcher")
        if not isinstance(matcher, dict):
            raise CdfError(400, "matcher is required: an object with type 'raw'")
        if matcher.get("type") != "raw":
            raise CdfError(400, f"matcher.type must be 'raw' (got {matcher.get('type')!r})")
        unknown = set(matcher) - {"type", *_MATCHER_KEYS}
        if unknown:
            raise CdfError(400, f"matcher: unrecognized field(s) {sorted(unknown)}")
        for key in _MATCHER_KEYS:
            if not isinstance(matcher.get(key), str) or not matcher[key]:
                raise CdfError(400, f"matcher.{key} is required: a non-empty string")
        dummy = data.get("dummyResponse", False)
        if not isinstance(dummy, bool):
            raise CdfError(400, "dummyResponse must be a boolean")
        with self.sb.lock:
            now = self.sb.tick()
            joins = self.cfg["estimate_quality"]["joins"]
            if xid not in joins:
                raise CdfError(400, f"Advanced join '{xid}' not found", missing=[{"externalId": xid}])
            knobs = resource_knobs(self.cfg["estimate_quality"], "joins", xid)
            job: dict[str, Any] = {
                "jobId": self.sb.new_uuid(),
                "status": "Queued",
                "createdTime": now,
                "startTime": now,
                "statusTime": now,
                "advancedJoinExternalId": xid,
                "matcher": {"type": "raw", **{k: matcher[k] for k in _MATCHER_KEYS}},
                "errorMessage": None,
                "qualityScorePercent": None,
                "confidencePercent": None,
                "contextualizationScorePercent": None,
                "_knobs": knobs,
            }
            self.eq_jobs[job["jobId"]] = job
            if dummy:
                defaults = self.cfg["estimate_quality"]["default"]
                job.update(
                    status="Completed",
                    qualityScorePercent=defaults["quality"],
                    confidencePercent=defaults["confidence"],
                    contextualizationScorePercent=defaults["contextualization"],
                )
            else:
                self._schedule_job(job, knobs, now, self._finish_eq)
            return json_response(self._eq_view(job))

    @staticmethod
    def _finish_eq(job: dict[str, Any], t: int) -> None:
        knobs = job["_knobs"]
        if knobs["outcome"] == "success":
            job.update(
                status="Completed",
                statusTime=t,
                qualityScorePercent=knobs["quality"],
                confidencePercent=knobs["confidence"],
                contextualizationScorePercent=knobs["contextualization"],
            )
        else:
            job.update(status="Failed", statusTime=t, errorMessage=knobs["error_message"])

    async def eq_get(self, request: Request) -> Response:
        raw = request.path_params["jobId"]
        try:
            job_id = str(uuid.UUID(raw))
        except ValueError as exc:
            raise CdfError(400, f"Invalid jobId {raw!r}: advanced join job ids are UUIDs") from exc
        with self.sb.lock:
            self.sb.tick()
            job = self.eq_jobs.get(job_id)
            if job is None:
                raise CdfError(404, f"Estimate quality job {job_id} not found", missing=[{"jobId": job_id}])
            return json_response(self._eq_view(job))

    # ------------------------------------------------------------------------------------------
    # Extraction pipelines and runs
    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _extpipe_view(pipeline: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in pipeline.items() if v is not None}

    def _extpipe_by_xid(self, xid: str) -> dict[str, Any] | None:
        for pipeline in self.extpipes.values():
            if pipeline["externalId"] == xid:
                return pipeline
        return None

    async def extpipes_create(self, request: Request) -> Response:
        data = await self._json(request)
        extra = set(data) - {"items"}
        if extra:
            raise CdfError(400, f"Unrecognized field(s) in the request body: {sorted(extra)}")
        items = data.get("items")
        if not isinstance(items, list) or not 1 <= len(items) <= 1000:
            raise CdfError(400, "'items' must be a list of 1 to 1000 extraction pipelines")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise CdfError(400, f"items[{i}] must be an object")
            unknown = set(item) - _EXTPIPE_CREATE_KEYS
            if unknown:
                raise CdfError(400, f"items[{i}]: unrecognized field(s) {sorted(unknown)}")
            xid, name = item.get("externalId"), item.get("name")
            if not isinstance(xid, str) or not 1 <= len(xid) <= 255:
                raise CdfError(400, f"items[{i}].externalId is required: a string of 1 to 255 characters")
            if not isinstance(name, str) or not 1 <= len(name) <= 140:
                raise CdfError(400, f"items[{i}].name is required: a string of 1 to 140 characters")
            if not _is_int(item.get("dataSetId")) or item["dataSetId"] < 1:
                raise CdfError(400, f"items[{i}].dataSetId is required: a positive integer")
            description = item.get("description")
            if description is not None and (not isinstance(description, str) or len(description) > 500):
                raise CdfError(400, f"items[{i}].description must be a string of at most 500 characters")
        xids = [item["externalId"] for item in items]
        dup = sorted({x for x in xids if xids.count(x) > 1})
        if dup:
            raise CdfError(
                400, "Duplicate externalIds in the request", duplicated=[{"externalId": x} for x in dup]
            )
        with self.sb.lock:
            now = self.sb.tick()
            clash = [x for x in xids if self._extpipe_by_xid(x) is not None]
            if clash:
                raise CdfError(
                    409, "External ids already exist", duplicated=[{"externalId": x} for x in clash]
                )
            created = []
            for item in items:
                eid = self._next_extpipe_id
                self._next_extpipe_id += 1
                pipeline = {
                    **copy.deepcopy(item),
                    "id": eid,
                    "createdBy": item.get("createdBy", self._subject(request)),
                    "createdTime": now,
                    "lastUpdatedTime": now,
                }
                self.extpipes[eid] = pipeline
                self.extpipe_runs[eid] = []
                created.append(self._extpipe_view(pipeline))
        return json_response({"items": created}, 201)

    async def extpipes_get(self, request: Request) -> Response:
        eid = _parse_id(request.path_params["extpipeId"], "id")
        with self.sb.lock:
            self.sb.tick()
            pipeline = self.extpipes.get(eid)
            if pipeline is None:
                raise CdfError(404, f"Extraction pipeline {eid} not found", missing=[{"id": eid}])
            return json_response(self._extpipe_view(pipeline))

    async def extpipes_byids(self, request: Request) -> Response:
        data = await self._json(request)
        idents, ignore = self._identifiers(data)
        with self.sb.lock:
            self.sb.tick()
            found, missing = [], []
            for ident in idents:
                pipeline = (
                    self.extpipes.get(ident["id"])
                    if "id" in ident
                    else self._extpipe_by_xid(ident["externalId"])
                )
                if pipeline is None:
                    missing.append(ident)
                else:
                    found.append(self._extpipe_view(pipeline))
        if missing and not ignore:
            raise CdfError(400, "Ids not found", missing=missing)
        return json_response({"items": found})

    def _add_extpipe_run(
        self, pipeline: dict[str, Any], status: str, message: str | None, created: int
    ) -> dict[str, Any]:
        run: dict[str, Any] = {"id": self._next_run_id, "status": status, "createdTime": created}
        if message is not None:
            run["message"] = message
        self._next_run_id += 1
        self.extpipe_runs[pipeline["id"]].append(run)

        def bump(field: str) -> None:
            current = pipeline.get(field)
            if current is None or created >= current:
                pipeline[field] = created

        bump("lastSeen")
        if status == "success":
            bump("lastSuccess")
        elif status == "failure":
            previous = pipeline.get("lastFailure")
            bump("lastFailure")
            if previous is None or created >= previous:
                pipeline["lastMessage"] = message
        return run

    async def ext_runs_root(self, request: Request) -> Response:
        if request.method == "GET":
            xid = request.query_params.get("externalId")
            if not xid:
                raise CdfError(400, "The query parameter 'externalId' is required")
            limit = _parse_limit(
                request.query_params.get("limit"), 100, int(self.cfg["extpipes"]["max_list_limit"])
            )
            return self._runs_page(xid, limit, request.query_params.get("cursor"), None, None, None)
        data = await self._json(request)
        extra = set(data) - {"items"}
        if extra:
            raise CdfError(400, f"Unrecognized field(s) in the request body: {sorted(extra)}")
        items = data.get("items")
        if not isinstance(items, list) or len(items) != 1:
            count = len(items) if isinstance(items, list) else "no"
            raise CdfError(
                400,
                "Current version supports one extraction pipeline run per request "
                f"('items' had {count} items)",
            )
        item = items[0]
        if not isinstance(item, dict):
            raise CdfError(400, "items[0] must be an object")
        unknown = set(item) - {"externalId", "status", "message", "createdTime"}
        if unknown:
            raise CdfError(400, f"items[0]: unrecognized field(s) {sorted(unknown)}")
        xid = item.get("externalId")
        if not isinstance(xid, str) or not 1 <= len(xid) <= 255:
            raise CdfError(400, "items[0].externalId is required: a string of 1 to 255 characters")
        status = item.get("status")
        if status not in RUN_STATUSES:
            raise CdfError(400, f"items[0].status must be one of {list(RUN_STATUSES)} (got {status!r})")
        message = item.get("message")
        max_len = int(self.cfg["extpipes"]["max_message_length"])
        if message is not None and (not isinstance(message, str) or len(message) > max_len):
            raise CdfError(400, f"items[0].message must be a string of at most {max_len} characters")
        created = item.get("createdTime")
        if created is not None and (not _is_int(created) or created < 0):
            raise CdfError(400, "items[0].createdTime must be an integer >= 0 (ms since epoch)")
        with self.sb.lock:
            now = self.sb.tick()
            pipeline = self._extpipe_by_xid(xid)
            if pipeline is None:
                raise CdfError(400, f"Extraction pipeline '{xid}' not found", missing=[{"externalId": xid}])
            run = self._add_extpipe_run(pipeline, status, message, now if created is None else created)
            return json_response({"items": [{"externalId": xid, **run}]}, 201)

    async def ext_runs_list(self, request: Request) -> Response:
        data = await self._json(request)
        extra = set(data) - {"filter", "limit", "cursor"}
        if extra:
            raise CdfError(400, f"Unrecognized field(s) in the request body: {sorted(extra)}")
        flt = data.get("filter")
        if not isinstance(flt, dict):
            raise CdfError(400, "'filter' is required and must contain 'externalId'")
        unknown = set(flt) - {"externalId", "statuses", "createdTime", "message"}
        if unknown:
            raise CdfError(400, f"filter: unrecognized field(s) {sorted(unknown)}")
        xid = flt.get("externalId")
        if not isinstance(xid, str) or not 1 <= len(xid) <= 255:
            raise CdfError(400, "filter.externalId is required: a string of 1 to 255 characters")
        statuses = flt.get("statuses")
        if statuses is not None and (
            not isinstance(statuses, list) or not all(s in RUN_STATUSES for s in statuses)
        ):
            raise CdfError(400, f"filter.statuses must be a list of {list(RUN_STATUSES)}")
        created = flt.get("createdTime")
        if created is not None:
            if not isinstance(created, dict) or set(created) - {"min", "max"}:
                raise CdfError(400, "filter.createdTime must be an object with 'min' and/or 'max'")
            for key, value in created.items():
                if not _is_int(value) or value < 0:
                    raise CdfError(400, f"filter.createdTime.{key} must be an integer >= 0")
        msg = flt.get("message")
        substring = None
        if msg is not None:
            # cognite-sdk sends an empty object when no substring is given
            if not isinstance(msg, dict) or set(msg) - {"substring"}:
                raise CdfError(400, "filter.message must be an object {'substring': str}")
            substring = msg.get("substring")
            if substring is not None and not isinstance(substring, str):
                raise CdfError(400, "filter.message.substring must be a string")
        limit = _parse_limit(data.get("limit"), 100, int(self.cfg["extpipes"]["max_list_limit"]))
        cursor = data.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise CdfError(400, "'cursor' must be a string")
        return self._runs_page(xid, limit, cursor, statuses, created, substring)

    def _runs_page(
        self,
        xid: str,
        limit: int,
        cursor: str | None,
        statuses: list[str] | None,
        created: dict[str, int] | None,
        substring: str | None,
    ) -> Response:
        with self.sb.lock:
            self.sb.tick()
            pipeline = self._extpipe_by_xid(xid)
            if pipeline is None:
                raise CdfError(400, f"Extraction pipeline '{xid}' not found", missing=[{"externalId": xid}])
            runs = list(self.extpipe_runs[pipeline["id"]])
        if statuses is not None:
            runs = [r for r in runs if r["status"] in statuses]
        if created:
            lo, hi = created.get("min"), created.get("max")
            runs = [
                r
                for r in runs
                if (lo is None or r["createdTime"] >= lo) and (hi is None or r["createdTime"] <= hi)
            ]
        if substring is not None:
            runs = [r for r in runs if substring in (r.get("message") or "")]
        runs.sort(key=lambda r: (r["createdTime"], r["id"]), reverse=True)
        scope = "ext-runs-" + json.dumps([xid, statuses, created, substring], sort_keys=True)
        page, next_cursor = _page([copy.deepcopy(r) for r in runs], limit, cursor, scope)
        body: dict[str, Any] = {"items": page}
        if next_cursor:
            body["nextCursor"] = next_cursor
        return json_response(body)


def render_error(path: str, status: int, message: str) -> dict[str, Any]:
    """Vendor-shaped error body (for faults and routing errors)."""
    if path.endswith("/oauth2/v2.0/token"):
        code = "temporarily_unavailable" if status >= 429 else "invalid_request"
        return oauth_error_body(code, message)
    return cdf_error_body(status, message)
