"""The sandbox control API under ``/_sandbox`` (JSON, no authentication)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from airflow_provider_pipelines.sandbox._http import BodyError, base_url, json_response, parse_json
from airflow_provider_pipelines.sandbox.config import ConfigError
from airflow_provider_pipelines.sandbox.connections import connections
from airflow_provider_pipelines.sandbox.faults import FaultError

if TYPE_CHECKING:
    from airflow_provider_pipelines.sandbox.state import SandboxState

__all__ = ["control_routes"]

_FAULT_KEYS = frozenset(
    {
        "action",
        "method",
        "path",
        "times",
        "skip",
        "status",
        "retry_after",
        "seconds",
        "body",
        "headers",
        "vendor",
        "mode",
    }
)


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    return parse_json(raw)


def control_routes(state: SandboxState) -> list[BaseRoute]:
    async def health(request: Request) -> Response:
        return json_response({"status": "ok", "url": base_url(request), "clock": state.clock.as_dict()})

    async def reset(request: Request) -> Response:
        try:
            body = await _body(request)
            config = (body or {}).get("config") if isinstance(body, dict) else None
            state.reset(config)
        except (BodyError, ConfigError) as exc:
            return _error(400, str(exc))
        return json_response({"status": "reset", "clock": state.clock.as_dict()})

    async def requests_(request: Request) -> Response:
        if request.method == "DELETE":
            return json_response({"deleted": state.log.clear()})
        q = request.query_params
        status = q.get("status")
        try:
            items = state.log.entries(
                method=q.get("method"),
                path=q.get("path"),
                vendor=q.get("vendor"),
                status=int(status) if status else None,
            )
        except ValueError:
            return _error(400, "status must be an integer")
        return json_response({"items": items})

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return json_response({"items": state.faults.list()})
        if request.method == "DELETE":
            return json_response({"deleted": state.faults.clear()})
        try:
            body = await _body(request)
        except BodyError as exc:
            return _error(400, str(exc))
        specs = body if isinstance(body, list) else [body]
        created = []
        for spec in specs:
            if not isinstance(spec, dict):
                return _error(400, "a fault is a JSON object {method, path, action, times, ...}")
            unknown = set(spec) - _FAULT_KEYS
            if unknown:
                return _error(400, f"unknown fault field(s) {sorted(unknown)}; known: {sorted(_FAULT_KEYS)}")
            if "action" not in spec:
                return _error(400, "a fault needs an 'action'")
            try:
                created.append(state.faults.add(**spec).as_dict())
            except (FaultError, TypeError) as exc:
                return _error(400, str(exc))
        return json_response(created if isinstance(body, list) else created[0], 201)

    async def fault_one(request: Request) -> Response:
        raw = request.path_params["fault_id"]
        if not raw.isdigit() or not state.faults.remove(int(raw)):
            return _error(404, f"fault {raw} not found")
        return json_response({"deleted": 1})

    async def config(request: Request) -> Response:
        if request.method == "GET":
            with state.lock:
                return json_response(state.config)
        try:
            body = await _body(request)
            return json_response(state.configure(body or {}))
        except (BodyError, ConfigError) as exc:
            return _error(400, str(exc))

    async def clock(request: Request) -> Response:
        if request.method == "POST":
            try:
                body = await _body(request) or {}
            except BodyError as exc:
                return _error(400, str(exc))
            if not isinstance(body, dict) or set(body) - {"advance", "set", "freeze", "unfreeze"}:
                return _error(
                    400,
                    "clock body: {advance: seconds} | {set: epoch_seconds} | "
                    "{freeze: true} | {unfreeze: true}",
                )
            try:
                with state.lock:
                    if body.get("freeze"):
                        state.clock.freeze()
                    if "advance" in body:
                        state.clock.advance(float(body["advance"]))
                    if "set" in body:
                        state.clock.set(float(body["set"]))
                    if body.get("unfreeze"):
                        state.clock.unfreeze()
                    state.tick()
            except (TypeError, ValueError) as exc:
                return _error(400, str(exc))
        return json_response(state.clock.as_dict())

    async def expire_tokens(request: Request) -> Response:
        try:
            body = await _body(request) or {}
            vendor = body.get("vendor") if isinstance(body, dict) else None
            return json_response({"expired": state.expire_tokens(vendor)})
        except (BodyError, ValueError) as exc:
            return _error(400, str(exc))

    async def conns(request: Request) -> Response:
        return json_response(connections(base_url(request)))

    async def here_pages(request: Request) -> Response:
        rest = request.path_params["rest"]
        query = str(request.query_params)
        return PlainTextResponse(
            f"pipelines sandbox: simulated HERE page /{rest}{'?' + query if query else ''}\n"
        )

    return [
        Route("/_sandbox/health", health, methods=["GET"]),
        Route("/_sandbox/reset", reset, methods=["POST"]),
        Route("/_sandbox/requests", requests_, methods=["GET", "DELETE"]),
        Route("/_sandbox/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sandbox/faults/{fault_id}", fault_one, methods=["DELETE"]),
        Route("/_sandbox/config", config, methods=["GET", "POST"]),
        Route("/_sandbox/clock", clock, methods=["GET", "POST"]),
        Route("/_sandbox/expire_tokens", expire_tokens, methods=["POST"]),
        Route("/_sandbox/connections", conns, methods=["GET"]),
        Route("/_sandbox/here/{rest:path}", here_pages, methods=["GET"]),
    ]
