"""The sandbox ASGI application: all vendors and the control API on one host/port."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from airflow_provider_pipelines.sandbox import cognite, edge_impulse, here
from airflow_provider_pipelines.sandbox.control import control_routes
from airflow_provider_pipelines.sandbox.faults import RAW_SEND_KEY, SandboxMiddleware, vendor_for_path
from airflow_provider_pipelines.sandbox.state import SandboxState

__all__ = ["SandboxApp", "create_app", "render_error"]


def render_error(vendor: str, path: str, status: int, message: str) -> tuple[bytes, str]:
    """An error body in the shape the vendor of ``path`` uses."""
    body: Any
    if vendor == "cognite":
        body = cognite.render_error(path, status, message)
    elif vendor == "edge_impulse":
        body = edge_impulse.render_error(path, status, message)
    elif vendor == "here":
        body = here.render_error(path, status, message)
    else:
        body = {"error": message, "status": status}
    return json.dumps(body).encode(), "application/json"


def _response_headers(state: SandboxState) -> Any:
    def headers(vendor: str, path: str, request_headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
        if vendor == "cognite":
            # CDF sends x-request-id; Entra ID (the token URL) sends x-ms-request-id
            name = b"x-request-id" if path.startswith("/api/v1/") else b"x-ms-request-id"
            return [(name, state.new_request_id().encode())]
        if vendor == "here" and path.startswith("/pipeline-service"):
            request_id = request_headers.get("x-request-id") or state.new_request_id()
            correlation_id = request_headers.get("x-correlation-id") or state.new_request_id()
            return [
                (b"x-request-id", request_id.encode("latin-1")),
                (b"x-correlation-id", correlation_id.encode("latin-1")),
            ]
        return []

    return headers


class SandboxApp(Starlette):
    """Starlette, plus the server's raw ``send`` in the scope (the ``drop`` fault closes its socket)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[RAW_SEND_KEY] = send
        await super().__call__(scope, receive, send)


def create_app(config: Mapping[str, Any] | SandboxState | None = None) -> Starlette:
    """Build the sandbox app. ``config`` is a config patch (see :mod:`.config`) or a ready state.

    The state is available as ``app.state.sandbox``.
    """
    state = config if isinstance(config, SandboxState) else SandboxState(config)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        path = request.url.path
        vendor = vendor_for_path(path)
        if status == 404:
            message = f"Not found: {request.method} {path} is not an endpoint of the sandbox"
        elif status == 405:
            message = f"Method {request.method} is not allowed on {path}"
        else:
            message = str(getattr(exc, "detail", "")) or "Error"
        if vendor == "control":
            body, content_type = json.dumps({"error": message}).encode(), "application/json"
        else:
            body, content_type = render_error(vendor, path, status, message)
        headers = dict(getattr(exc, "headers", None) or {})
        return Response(body, status_code=status, media_type=content_type, headers=headers)

    routes = [
        *control_routes(state),
        *state.cognite.routes(),
        *state.edge_impulse.routes(),
        *state.here.routes(),
    ]
    app = SandboxApp(
        routes=routes,
        middleware=[
            Middleware(
                SandboxMiddleware,
                sandbox=state,
                render_error=render_error,
                response_headers=_response_headers(state),
            )
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.sandbox = state
    return app
