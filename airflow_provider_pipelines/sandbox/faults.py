"""Fault injection, the request log, and the ASGI middleware that applies both.

Faults act *in front of* the emulated APIs, like a gateway would: a matching fault answers (or
delays, or drops the connection) before authentication and validation run. Control API paths
(``/_sandbox/...``) are never faulted nor logged.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from airflow_provider_pipelines.sandbox._http import RAW_BODY_KEY, decode_body_for_log

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from airflow_provider_pipelines.sandbox.state import SandboxState

__all__ = [
    "FAULT_ACTIONS",
    "FaultError",
    "FaultRegistry",
    "FaultRule",
    "RequestLog",
    "SandboxMiddleware",
    "redact_body",
    "redact_headers",
    "vendor_for_path",
]

FAULT_ACTIONS = ("status", "delay", "drop", "malformed", "expire_tokens")
# close: close the socket before any response byte; partial: headers + part of the body, then close
DROP_MODES = ("close", "partial")
RAW_SEND_KEY = "sandbox.raw_send"
VENDORS = ("cognite", "edge_impulse", "here")
REDACTED = "<redacted>"
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie", "x-jwt-token"}
)
_SECRET_KEYS = frozenset(
    {
        "client_secret",
        "clientsecret",
        "client_assertion",
        "password",
        "access_token",
        "accesstoken",
        "refresh_token",
        "apikey",
        "api_key",
        "projectapikey",
        "projecthmackey",
        "hmackey",
        "secret",
        "access_key_secret",
    }
)
_MAX_LOGGED_BODY = 64 * 1024
_COGNITE_TOKEN_PATH = re.compile(r"^/[^/]+/oauth2/v2\.0/token/?$")


def vendor_for_path(path: str) -> str:
    """Which emulated vendor a path belongs to: cognite, edge_impulse, here, control or unknown."""
    if path == "/_sandbox" or path.startswith("/_sandbox/"):
        return "control"
    if path.startswith("/api/v1/") or _COGNITE_TOKEN_PATH.match(path):
        return "cognite"
    if path.startswith("/v1/api/"):
        return "edge_impulse"
    if path.startswith("/pipeline-service") or path.rstrip("/") == "/oauth2/token":
        return "here"
    return "unknown"


class FaultError(ValueError):
    """An invalid fault specification."""


@dataclass
class FaultRule:
    """One injected fault. ``times=None`` means every matching request, forever."""

    id: int
    action: str
    method: str = "*"
    path: str = "*"
    times: int | None = 1
    skip: int = 0
    status: int | None = None
    retry_after: str | None = None
    seconds: float = 0.0
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    vendor: str | None = None
    mode: str | None = None
    matched: int = 0
    applied: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method != "*" and self.method != method.upper():
            return False
        return fnmatch.fnmatchcase(path, self.path)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.applied >= self.times

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "method": self.method,
            "path": self.path,
            "times": self.times,
            "remaining": None if self.times is None else max(0, self.times - self.applied),
            "skip": self.skip,
            "status": self.status,
            "retry_after": self.retry_after,
            "seconds": self.seconds,
            "body": self.body,
            "headers": dict(self.headers),
            "vendor": self.vendor,
            "mode": self.mode,
            "matched": self.matched,
            "applied": self.applied,
        }


class FaultRegistry:
    """Thread-safe list of fault rules; the first live matching rule wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._ids = itertools.count(1)

    def add(
        self,
        action: str,
        method: str | None = "*",
        path: str | None = "*",
        times: int | None = 1,
        *,
        skip: int = 0,
        status: int | None = None,
        retry_after: float | int | str | None = None,
        seconds: float | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        vendor: str | None = None,
        mode: str | None = None,
    ) -> FaultRule:
        if action not in FAULT_ACTIONS:
            raise FaultError(f"unknown fault action {action!r}; expected one of {list(FAULT_ACTIONS)}")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise FaultError("times must be a positive integer or null (= unlimited)")
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise FaultError("skip must be an integer >= 0")
        if action == "status":
            status = 503 if status is None else status
            if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
                raise FaultError("status must be an HTTP error status (400..599)")
        elif action == "malformed":
            status = 200 if status is None else status
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
                raise FaultError("status must be an HTTP status")
        elif status is not None:
            raise FaultError(f"status is not used by the {action!r} action")
        if action == "delay":
            if seconds is None:
                raise FaultError("the delay action needs 'seconds'")
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0
        ):
            raise FaultError("seconds must be a number >= 0")
        retry: str | None = None
        if retry_after is not None:
            if isinstance(retry_after, bool) or not isinstance(retry_after, int | float | str):
                raise FaultError("retry_after must be seconds (number) or an HTTP date (string)")
            if isinstance(retry_after, float) and retry_after.is_integer():
                retry_after = int(retry_after)
            retry = str(retry_after)
        if action == "drop":
            mode = mode or "close"
            if mode not in DROP_MODES:
                raise FaultError(f"the drop mode must be one of {list(DROP_MODES)}")
        elif mode is not None:
            raise FaultError("mode is only used by the drop action")
        if vendor is not None and vendor not in VENDORS:
            raise FaultError(f"vendor must be one of {list(VENDORS)}")
        if body is not None and action == "malformed" and not isinstance(body, str):
            raise FaultError("the malformed action's body must be a string (sent as is)")
        if headers is not None and (
            not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values())
        ):
            raise FaultError("headers must be an object of strings")
        with self._lock:
            rule = FaultRule(
                id=next(self._ids),
                action=action,
                method=(method or "*").upper(),
                path=path or "*",
                times=times,
                skip=skip,
                status=status,
                retry_after=retry,
                seconds=float(seconds or 0.0),
                body=body,
                headers=dict(headers or {}),
                vendor=vendor,
                mode=mode,
            )
            self._rules.append(rule)
        return rule

    def match(self, method: str, path: str) -> FaultRule | None:
        """Find the rule to apply to this request and consume one of its ``times``."""
        with self._lock:
            for rule in self._rules:
                if rule.exhausted or not rule.matches(method, path):
                    continue
                rule.matched += 1
                if rule.matched <= rule.skip:
                    continue
                rule.applied += 1
                return rule
        return None

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.as_dict() for rule in self._rules]

    def remove(self, rule_id: int) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> int:
        with self._lock:
            count = len(self._rules)
            self._rules.clear()
            return count


# --------------------------------------------------------------------------------------------
# Request log
# --------------------------------------------------------------------------------------------
def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """All request headers, with credentials replaced (the auth scheme word is kept)."""
    out: dict[str, str] = {}
    for key, value in headers:
        name = key.lower()
        if name in _SECRET_HEADERS:
            if name in ("authorization", "proxy-authorization") and " " in value.strip():
                value = value.strip().split(" ", 1)[0] + " " + REDACTED
            else:
                value = REDACTED
        out[name] = value if name not in out else out[name] + ", " + value
    return out


def _redact_obj(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            k: (REDACTED if isinstance(k, str) and k.lower() in _SECRET_KEYS else _redact_obj(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_redact_obj(v) for v in obj]
    return obj


def redact_body(raw: bytes, content_type: str, content_encoding: str = "") -> Any:
    """A loggable version of a request body: JSON/form parsed with secrets redacted, else text."""
    if not raw:
        return None
    data = decode_body_for_log(raw, content_encoding)
    mtype = content_type.split(";", 1)[0].strip().lower()
    if mtype == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(data.decode("ascii"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            pairs = []
        if pairs:
            form: dict[str, Any] = {}
            for k, v in pairs:
                value = REDACTED if k.lower() in _SECRET_KEYS else v
                if k in form:
                    prev = form[k]
                    form[k] = [*prev, value] if isinstance(prev, list) else [prev, value]
                else:
                    form[k] = value
            return form
    try:
        return _redact_obj(json.loads(data.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError):
        pass
    text = data[:_MAX_LOGGED_BODY].decode("utf-8", errors="replace")
    lowered = text.lower()
    if any(key in lowered for key in ("secret", "password", "token")):
        return REDACTED
    return text


class RequestLog:
    """A bounded, thread-safe log of the requests the emulated APIs received."""

    def __init__(self, maxlen: int = 10000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._ids = itertools.count(1)

    def resize(self, maxlen: int) -> None:
        with self._lock:
            self._entries = deque(self._entries, maxlen=maxlen)

    def start(self, entry: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            entry["id"] = next(self._ids)
            self._entries.append(entry)
        return entry

    def entries(
        self,
        method: str | None = None,
        path: str | None = None,
        vendor: str | None = None,
        status: int | None = None,
    ) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._entries)
        out = []
        for e in items:
            if method and method != "*" and e["method"] != method.upper():
                continue
            if path and not fnmatch.fnmatchcase(e["path"], path):
                continue
            if vendor and e["vendor"] != vendor:
                continue
            if status is not None and e["status"] != status:
                continue
            out.append(json.loads(json.dumps(e, default=str)))
        return out

    def clear(self) -> int:
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            return count


# --------------------------------------------------------------------------------------------
# ASGI middleware
# --------------------------------------------------------------------------------------------
ErrorRenderer = Callable[[str, str, int, str], tuple[bytes, str]]


class _IncompleteResponseFilter(logging.Filter):
    """Hide uvicorn's error line for responses the ``drop`` fault aborts on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "without completing response" not in message and "without starting response" not in message


def install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _IncompleteResponseFilter) for f in logger.filters):
        logger.addFilter(_IncompleteResponseFilter())


def default_fault_message(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return f"{phrase} (sandbox fault injection)"


class SandboxMiddleware:
    """Logs every vendor request, applies faults, and adds per-vendor response headers."""

    def __init__(
        self,
        app: ASGIApp,
        sandbox: SandboxState,
        render_error: ErrorRenderer,
        response_headers: Callable[[str, str, dict[str, str]], list[tuple[bytes, bytes]]],
    ) -> None:
        self.app = app
        self.sandbox = sandbox
        self.render_error = render_error
        self.response_headers = response_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        vendor = vendor_for_path(path)
        if vendor == "control":
            await self.app(scope, receive, send)
            return

        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        scope.setdefault("state", {})[RAW_BODY_KEY] = raw

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        req_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method: str = scope["method"]
        started = time.monotonic()
        entry = self.sandbox.log.start(
            {
                "time": self.sandbox.clock.now(),
                "wall_time": time.time(),
                "vendor": vendor,
                "method": method,
                "path": path,
                "query": scope.get("query_string", b"").decode("latin-1"),
                "query_params": dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))),
                "headers": redact_headers(
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                ),
                "body": redact_body(
                    raw, req_headers.get("content-type", ""), req_headers.get("content-encoding", "")
                ),
                "status": None,
                "fault": None,
                "fault_id": None,
                "duration_ms": None,
            }
        )
        extra_headers = self.response_headers(vendor, path, req_headers)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
                headers = [
                    h for h in message.get("headers", []) if h[0].lower() not in {k for k, _ in extra_headers}
                ]
                message = {**message, "headers": headers + extra_headers}
            await send(message)

        rule = self.sandbox.faults.match(method, path)
        try:
            if rule is None:
                await self.app(scope, replay, send_wrapper)
                return
            entry["fault"] = rule.action
            entry["fault_id"] = rule.id
            if rule.action == "delay":
                await asyncio.sleep(rule.seconds)
                await self.app(scope, replay, send_wrapper)
            elif rule.action == "expire_tokens":
                self.sandbox.expire_tokens(rule.vendor or (vendor if vendor in VENDORS else None))
                await self.app(scope, replay, send_wrapper)
            elif rule.action == "status":
                await self._send_status(rule, vendor, path, send_wrapper)
            elif rule.action == "malformed":
                body = (
                    rule.body if rule.body is not None else '{"items": [{"id": 1, "status": "Run'
                ).encode()
                await self._send(send_wrapper, rule.status or 200, body, "application/json", rule.headers)
            elif rule.action == "drop":
                if rule.mode == "close" and await self._close_connection(scope):
                    return
                await send_wrapper(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
                    }
                )
                await send({"type": "http.response.body", "body": b'{"items": [', "more_body": True})
                entry["status"] = None
                # Returning without completing the response makes the server close the connection.
        finally:
            entry["duration_ms"] = round((time.monotonic() - started) * 1000, 3)

    @staticmethod
    async def _close_connection(scope: Scope) -> bool:
        """Close the client socket before any response byte (uvicorn's protocol object holds it)."""
        raw_send = scope.get(RAW_SEND_KEY)
        transport = getattr(getattr(raw_send, "__self__", None), "transport", None)
        if transport is None or not hasattr(transport, "close"):
            return False
        transport.close()
        # let the server notice the disconnect so that it does not try to answer with a 500
        await asyncio.sleep(0.01)
        return True

    async def _send_status(self, rule: FaultRule, vendor: str, path: str, send: Send) -> None:
        status = rule.status or 503
        if rule.body is not None:
            body = rule.body.encode() if isinstance(rule.body, str) else json.dumps(rule.body).encode()
            content_type = "application/json"
        else:
            body, content_type = self.render_error(vendor, path, status, default_fault_message(status))
        headers = dict(rule.headers)
        if rule.retry_after is not None:
            headers["Retry-After"] = rule.retry_after
        await self._send(send, status, body, content_type, headers)

    @staticmethod
    async def _send(send: Send, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        raw_headers = [
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", str(len(body)).encode()),
        ]
        raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
