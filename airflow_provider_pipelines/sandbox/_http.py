"""Small HTTP helpers shared by the vendor emulators (bodies, JSON, times, URLs)."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

RAW_BODY_KEY = "sandbox_raw_body"

__all__ = [
    "BodyError",
    "base_url",
    "decode_cursor",
    "encode_cursor",
    "iso_ms_offset",
    "iso_ms_z",
    "json_response",
    "parse_bool",
    "parse_form",
    "parse_json",
    "read_body",
]


class BodyError(ValueError):
    """The request body could not be read or parsed."""


async def read_body(request: Request) -> bytes:
    """The request body, decompressed according to ``Content-Encoding`` (gzip/deflate)."""
    state = request.scope.get("state") or {}
    raw = state.get(RAW_BODY_KEY)
    if raw is None:
        raw = await request.body()
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if not raw or encoding in ("", "identity"):
        return bytes(raw)
    try:
        if encoding == "gzip":
            return gzip.decompress(raw)
        if encoding == "deflate":
            return zlib.decompress(raw)
    except (OSError, zlib.error, EOFError) as exc:
        raise BodyError(f"Could not decompress the {encoding} request body: {exc}") from exc
    raise BodyError(f"Unsupported Content-Encoding: {encoding}")


def decode_body_for_log(raw: bytes, content_encoding: str) -> bytes:
    """Best-effort decompression for the request log (never raises)."""
    encoding = content_encoding.strip().lower()
    try:
        if encoding == "gzip":
            return gzip.decompress(raw)
        if encoding == "deflate":
            return zlib.decompress(raw)
    except (OSError, zlib.error, EOFError):
        return raw
    return raw


def parse_json(raw: bytes) -> Any:
    """Parse a JSON body; raises :class:`BodyError` with a readable message."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BodyError(f"The request body is not valid UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise BodyError(
            f"Malformed JSON in the request body: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from exc


def parse_form(raw: bytes) -> dict[str, list[str]]:
    """Parse an ``application/x-www-form-urlencoded`` body strictly (repeated keys kept)."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BodyError("The form body must be ASCII (percent-encoded)") from exc
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError as exc:
        raise BodyError(f"Malformed form body: {exc}") from exc
    form: dict[str, list[str]] = {}
    for key, value in pairs:
        form.setdefault(key, []).append(value)
    return form


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def base_url(request: Request) -> str:
    """``scheme://host[:port]`` as the client addressed it (Host header)."""
    scheme = request.url.scheme
    host = request.headers.get("host") or request.url.netloc
    return f"{scheme}://{host}"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def iso_ms_z(ms: int | None) -> str | None:
    """``2025-02-21T18:21:53.755Z`` (Edge Impulse style)."""
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def iso_ms_offset(ms: int | None) -> str | None:
    """``2025-02-21T18:21:53.755+00:00`` (HERE style: RFC 3339 with an offset)."""
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}+00:00"


def parse_bool(value: str | None) -> bool | None:
    """``true``/``false`` (case-insensitive) -> bool; ``None`` -> None; anything else -> ValueError."""
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ValueError(f"expected 'true' or 'false', got {value!r}")


def encode_cursor(offset: int, scope: str) -> str:
    payload = json.dumps({"o": offset, "s": scope}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_cursor(cursor: str, scope: str) -> int:
    """Decode a cursor made by :func:`encode_cursor` for the same listing; ValueError otherwise."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        offset = data["o"]
        if data.get("s") != scope or not isinstance(offset, int) or offset < 0:
            raise ValueError("cursor does not belong to this listing")
        return offset
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"Invalid cursor: {cursor!r}") from exc
