"""The shared HTTP core every hook of this provider talks through.

One retry policy, one timeout rule, one error type and one redaction rule for the sync path
(``requests`` with a pooled session) and the async path (one ``aiohttp.ClientSession`` per event
loop, shared by every trigger in that loop). Hooks describe *what* to call (:class:`ApiRequest`)
and *how their vendor reports errors* (:class:`VendorProfile`); this module decides retries.

Retry policy (see ``docs/reliability.md``):

* retried: HTTP 429, 502, 503, 504, connection errors and read timeouts, with exponential
  back-off and full jitter, ``Retry-After`` (seconds or HTTP date) honoured up to a cap,
  bounded attempts and bounded total time;
* never retried: any other 4xx, and 500 (a server error that is not declared transient);
* a non-idempotent request is retried only on 429 and when the request provably never reached
  the server (connection refused / connect timeout). A read timeout, a dropped connection or a
  502/503/504 on such a request raises an :class:`ApiError` with ``ambiguous=True`` so the caller
  can check whether the side effect happened before trying again;
* HTTP 401 on an authenticated call invalidates the cached token and retries once.

Status decisions are made on the status code itself, never after a generic exception has
swallowed it (the dbt Cloud provider's sync path never retries 503 for that reason).
"""

from __future__ import annotations

import asyncio
import email.utils
import http.cookiejar
import ipaddress
import json
import logging
import math
import random
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception_type

from airflow_provider_pipelines._compat import AirflowException

if TYPE_CHECKING:
    import aiohttp
    import requests

log = logging.getLogger(__name__)

#: Status codes retried for every request (429 means "not processed, come back later").
ALWAYS_RETRYABLE_STATUSES = frozenset({429})
#: Status codes retried only for idempotent requests (the request may have been processed).
TRANSIENT_STATUSES = frozenset({502, 503, 504})
#: Connections per host in the shared async session.
ASYNC_CONNECTIONS_PER_HOST = 64
#: Longest excerpt of an unparseable body quoted in an error.
BODY_EXCERPT_CHARS = 200

_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts, retry bounds and TLS options of one connection (overridable from its extra)."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 5
    max_retry_seconds: float = 300.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 120.0
    verify: bool | str = True

    #: extra keys that override the fields above, with their types
    EXTRA_KEYS = (
        ("connect_timeout", float),
        ("read_timeout", float),
        ("max_attempts", int),
        ("max_retry_seconds", float),
        ("backoff_base", float),
        ("backoff_max", float),
        ("retry_after_max", float),
    )

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any], conn_id: str) -> HttpSettings:
        """Read overrides from a connection extra, failing clearly on bad values."""
        values: dict[str, Any] = {}
        for key, kind in cls.EXTRA_KEYS:
            if extra.get(key) in (None, ""):
                continue
            values[key] = _positive_number(extra[key], kind, f"Connection {conn_id!r}: extra {key!r}")
        ca_bundle = extra.get("ca_bundle")
        verify_ssl = _flag(extra.get("verify_ssl", True), f"Connection {conn_id!r}: extra 'verify_ssl'")
        if ca_bundle not in (None, "") and not isinstance(ca_bundle, str):
            raise AirflowException(
                f"Connection {conn_id!r}: extra 'ca_bundle' must be the path of a CA bundle file, "
                f"got {ca_bundle!r}."
            )
        if ca_bundle:
            values["verify"] = ca_bundle
        elif not verify_ssl:
            log.warning("Connection %r disables TLS certificate verification (verify_ssl=false).", conn_id)
            values["verify"] = False
        return replace(cls(), **values)


def _positive_number(raw: Any, kind: type, what: str) -> Any:
    """``raw`` as a positive, finite ``int``/``float`` (strings accepted), or a clear error."""
    number: float
    if isinstance(raw, bool):
        number = math.nan  # true/false is never a number of seconds or attempts
    else:
        try:
            number = float(str(raw).strip()) if isinstance(raw, str) else float(raw)
        except (TypeError, ValueError):
            number = math.nan
    if not math.isfinite(number) or (kind is int and not number.is_integer()):
        raise AirflowException(f"{what} must be {'an integer' if kind is int else 'a number'}, got {raw!r}.")
    if number <= 0:
        raise AirflowException(f"{what} must be > 0, got {raw!r}.")
    return int(number) if kind is int else number


def _flag(raw: Any, what: str) -> bool:
    """A boolean from a JSON bool or the usual string spellings, or a clear error."""
    if isinstance(raw, bool):
        return raw
    if raw is None or raw == "":
        return True
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise AirflowException(f"{what} must be true or false, got {raw!r}.")


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` is this machine (where plain HTTP is allowed, e.g. for the sandbox).

    Only ``localhost`` and literal loopback addresses (``127.0.0.0/8``, ``::1``) count: a name
    such as ``127.example.com`` is not loopback.
    """
    if not host:
        return False
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_https(url: str, *, conn_id: str, field_name: str = "host") -> str:
    """Return ``url`` without a trailing slash, or fail when it is not HTTPS (loopback excepted)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AirflowException(
            f"Connection {conn_id!r}: {field_name} {url!r} is not an absolute http(s) URL, "
            "e.g. https://api.example.com."
        )
    if parts.scheme != "https" and not is_loopback_host(parts.hostname):
        raise AirflowException(
            f"Connection {conn_id!r}: {field_name} {url!r} must use https:// (plain http is only "
            "allowed for loopback hosts such as the local sandbox)."
        )
    return url.rstrip("/")


# --------------------------------------------------------------------------------------------
# Errors and redaction
# --------------------------------------------------------------------------------------------


class Redactor:
    """Removes known secret values and token-shaped fragments from text."""

    _PATTERNS = (
        re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
        re.compile(r'(?i)("?(?:access_token|accessToken|client_secret|api[_-]?key|password|token|'
                   r'projectApiKey|projectHmacKey)"?\s*[:=]\s*"?)[^"&,\s}]+'),
        re.compile(r'(?i)(oauth_signature="?)[^",\s]+'),
    )

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        #: longest first; a tuple of strings, which the garbage collector does not track
        self._secrets: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        known = set(self._secrets)
        known.update(s for s in secrets if s and len(s) >= 3)
        self._secrets = tuple(sorted(known, key=len, reverse=True))

    #: a word every pattern above needs ("bearer", or a key name: each holds one of these words,
    #: or ``oauth_signature``): text without any of them is left alone without running the patterns
    #: (a status poll redacts several short vendor strings, most of them plain words)
    _CUE = re.compile(r"(?i)bearer|token|secret|api|password|key|oauth_signature")

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        if self._CUE.search(text) is None:
            return text
        for pattern in self._PATTERNS:
            text = pattern.sub(r"\1***", text)
        return text


class ApiError(AirflowException):
    """A failed call to a vendor API, with everything needed to understand it.

    :param vendor: e.g. ``"Cognite"``.
    :param operation: what we tried, e.g. ``"run entity matching pipeline"``.
    :param resource: which resource, e.g. ``"pipeline 42"``.
    :param status: HTTP status (``None`` when no response arrived).
    :param vendor_message: the vendor's own error text.
    :param request_id: the vendor's request id for support tickets.
    :param ambiguous: the request may have reached the server although no answer was read
        (read timeout, dropped connection, 502-504 on a non-idempotent call).
    """

    def __init__(
        self,
        *,
        vendor: str,
        operation: str,
        resource: str | None = None,
        status: int | None = None,
        vendor_message: str = "",
        request_id: str | None = None,
        correlation_id: str | None = None,
        retry_after: float | None = None,
        retryable: bool = False,
        ambiguous: bool = False,
        attempts: int = 1,
    ) -> None:
        self.vendor = vendor
        self.operation = operation
        self.resource = resource
        self.status = status
        self.vendor_message = vendor_message
        self.request_id = request_id
        self.correlation_id = correlation_id
        self.retry_after = retry_after
        self.retryable = retryable
        self.ambiguous = ambiguous
        self.attempts = attempts
        super().__init__(self._render())

    def _render(self) -> str:
        target = f" ({self.resource})" if self.resource else ""
        status = f"HTTP {self.status}" if self.status is not None else "no response"
        text = f"{self.vendor} API: {self.operation}{target} failed: {status}"
        if self.vendor_message:
            text += f": {self.vendor_message}"
        ids = []
        if self.request_id:
            ids.append(f"request id {self.request_id}")
        if self.correlation_id:
            ids.append(f"correlation id {self.correlation_id}")
        if self.attempts > 1:
            ids.append(f"after {self.attempts} attempts")
        if ids:
            text += f" [{'; '.join(ids)}]"
        return text

    def with_attempts(self, attempts: int) -> ApiError:
        self.attempts = attempts
        self.args = (self._render(),)
        return self

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only __init__: pickle through a factory
        return (_rebuild_api_error, (type(self), self.__dict__.copy()))


def _rebuild_api_error(cls: type[ApiError], state: dict[str, Any]) -> ApiError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    err.args = (err._render(),)
    return err


class _Transient(Exception):  # an internal retry signal, not an error
    """Internal: an attempt failed in a way the policy retries."""

    def __init__(self, error: ApiError, *, immediate: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.immediate = immediate


# --------------------------------------------------------------------------------------------
# Requests, responses, vendor profile, auth
# --------------------------------------------------------------------------------------------


@dataclass
class ApiRequest:
    """One logical API call (retries are attempts of it)."""

    method: str
    url: str
    operation: str
    resource: str | None = None
    params: Mapping[str, Any] | None = None
    json: Any = None
    data: Mapping[str, str] | str | None = None
    #: a JSON body already serialized (see :func:`json_body`), sent as ``application/json``
    body: bytes | None = None
    headers: Mapping[str, str] | None = None
    #: evaluated before every attempt (signatures with a fresh nonce, fresh request ids)
    headers_factory: Callable[[], Mapping[str, str]] | None = None
    authenticated: bool = True
    #: ``None``: GET/HEAD/PUT/DELETE/OPTIONS are idempotent, POST/PATCH are not
    idempotent: bool | None = None
    expect_json: bool = True
    #: non-2xx statuses handed back to the caller instead of raising (e.g. a 307 to follow)
    allow_statuses: frozenset[int] = frozenset()
    #: the parsed URL handed to aiohttp, worked out on the first async send (see :meth:`target`)
    _target: Any = field(default=None, init=False, repr=False, compare=False)
    #: the path and keyword arguments of the hook call this request was built from (see
    #: ``PipelinesHook._request``)
    memo_path: str | None = field(default=None, init=False, repr=False, compare=False)
    #: the names of those keyword arguments (their values are this request's own fields): a tuple
    #: of strings, which the garbage collector does not track, rather than a copy of the arguments
    memo_keys: tuple[str, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def repeats(
        self, path: str, method: str, operation: str, resource: str | None, kw: dict[str, Any]
    ) -> bool:
        """Whether a hook call with these arguments would build a request equal to this one."""
        if (self.memo_path != path or self.method != method or self.operation != operation
                or self.resource != resource or self.memo_keys != tuple(kw)):
            return False
        return all(getattr(self, key) == value for key, value in kw.items())

    def target(self) -> Any:
        """``url`` as a ``yarl.URL``, parsed once per request object rather than by aiohttp on
        every send (a polling hook reuses its request, see ``PipelinesHook._request``)."""
        if self._target is None:
            from yarl import URL

            self._target = URL(self.url)
        return self._target

    @property
    def is_idempotent(self) -> bool:
        if self.idempotent is not None:
            return self.idempotent
        return self.method.upper() in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")


class ResponseHeaders(dict[str, str]):
    """Response headers with lower-case keys and case-insensitive lookups (both paths alike)."""

    def __init__(self, headers: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        items = headers.items() if isinstance(headers, Mapping) else headers
        super().__init__((str(k).lower(), str(v)) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


class ApiResponse:
    """One successful answer: status, headers, parsed body, raw text and the vendor's request id.

    ``headers`` is case-insensitive (``resp.headers["Location"]`` and ``["location"]`` both
    work). It is copied out of the HTTP client's own header object only when read: a status poll
    never reads it, and a triggerer makes thousands of them.
    """

    __slots__ = ("_headers", "_raw_headers", "body", "request_id", "status", "text")

    def __init__(
        self, status: int, headers: Mapping[str, str], body: Any, text: str, request_id: str | None = None
    ) -> None:
        self.status = status
        self._raw_headers = headers
        self._headers: ResponseHeaders | None = headers if isinstance(headers, ResponseHeaders) else None
        self.body = body
        self.text = text
        self.request_id = request_id

    @property
    def headers(self) -> ResponseHeaders:
        if self._headers is None:
            self._headers = ResponseHeaders(self._raw_headers)
        return self._headers

    def with_body(self, body: Any, text: str = "") -> ApiResponse:
        """The same answer with another body (e.g. a redacted copy); headers are not copied out."""
        copy = ApiResponse(self.status, self._raw_headers, body, text, self.request_id)
        copy._headers = self._headers
        return copy

    def __repr__(self) -> str:
        return f"ApiResponse(status={self.status!r}, request_id={self.request_id!r})"


class VendorProfile(Protocol):
    """How one vendor reports errors (the only vendor-specific part of the core)."""

    name: str

    def error_message(self, status: int, body: Any, text: str) -> str: ...

    def request_ids(
        self, response_headers: Mapping[str, str], sent_headers: Mapping[str, str]
    ) -> tuple[str | None, str | None]: ...

    def body_error(self, body: Any) -> str | None:
        """An error carried by a 2xx body (e.g. Edge Impulse ``success: false``), else ``None``."""
        ...


class Auth(Protocol):
    """Produces auth headers for an attempt; may refresh once after a 401."""

    def headers(self) -> dict[str, str]: ...

    async def aheaders(self) -> dict[str, str]: ...

    def ready_headers(self) -> dict[str, str] | None:
        """The headers when they are at hand without I/O (a fresh cached token, a static key),
        else ``None``; the async path then awaits :meth:`aheaders`. A status poll thus creates no
        coroutine for its credentials."""
        ...

    def invalidate(self, sent_headers: Mapping[str, str]) -> bool:
        """Forget the credential that got a 401; ``True`` when a retry may succeed."""
        ...


class _CallState:
    """One call's attempts (a plain class with slots: one is made per request)."""

    __slots__ = ("_auth_values", "attempts", "auth_headers", "refreshed", "sent_headers", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.refreshed = False
        self.attempts = 0
        self.sent_headers: dict[str, str] = {}
        self.auth_headers: Mapping[str, str] = {}
        self._auth_values: tuple[Mapping[str, str], list[str]] | None = None

    @property
    def auth_values(self) -> list[str]:
        """The secret parts of the auth headers sent (redacted from every error text).

        Worked out only when an error text is built, for the headers of the latest attempt.
        """
        cached = self._auth_values
        if cached is None or cached[0] is not self.auth_headers:
            cached = self._auth_values = (self.auth_headers, _credentials(self.auth_headers))
        return cached[1]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = datetime.fromtimestamp(now if now is not None else time.time(), tz=timezone.utc)
    return max(0.0, (when - current).total_seconds())


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > BODY_EXCERPT_CHARS:
        return text[:BODY_EXCERPT_CHARS] + "…"
    return text


# --------------------------------------------------------------------------------------------
# Shared async session: one per event loop, reference-counted by the users' scopes
# --------------------------------------------------------------------------------------------


class _ReadDeadlines:
    """The read timeout of every request in flight on one event loop, enforced by one timer.

    aiohttp's ``sock_read`` timeout schedules a timer per request and reschedules it when the
    answer arrives; a cancelled timer stays in the loop's heap (with its context and callback)
    until it would have fired. At thousands of polls a second those timers were the provider's
    largest source of objects that outlive a poll, so the main cause of the full garbage
    collections that stall the triggerer's loop (see ``docs/performance.md``). Instead, a request
    registers its deadline here (a dictionary entry, no object); one timer per loop wakes up at
    the earliest deadline, cancels the requests whose deadline passed and re-arms itself for the
    next one. With equal timeouts a new deadline is never earlier than the armed one, so a busy
    loop re-arms about once per read timeout, not once per request.

    A request the timer cancelled sees :class:`asyncio.CancelledError` at the point it waits;
    :meth:`expired` tells it that the cancellation was its deadline (and takes the cancellation
    request back, Python 3.11+), so it reports a read timeout instead. A cancellation from
    anywhere else is never turned into a timeout.
    """

    __slots__ = ("_due", "_expired", "_timer")

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, seconds: float) -> asyncio.Task[Any] | None:
        """Give the current task ``seconds`` from now; pair with :meth:`unwatch` in a ``finally``."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - a coroutine always runs in a task under asyncio
            return None
        loop = task.get_loop()
        when = loop.time() + seconds
        self._due[task] = when
        if self._timer is None or when < self._timer.when():
            self._arm(loop, when)
        return task

    def unwatch(self, task: asyncio.Task[Any] | None) -> None:
        if task is None or self._due.pop(task, None) is not None:
            return
        if task in self._expired:
            # cancelled by its deadline, yet the request finished without seeing the
            # cancellation: take the cancellation request back so it cannot hit a later await
            self._expired.discard(task)
            _uncancel(task)

    def expired(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether ``task``'s :class:`asyncio.CancelledError` is its read deadline (consumes it).

        ``False`` when the deadline did not fire, and when something else asked to cancel the
        task too: that cancellation must go on.
        """
        if task is None or task not in self._expired:
            return False
        self._expired.discard(task)
        return _uncancel(task) == 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self.close()
        self._timer = loop.call_at(when, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now, earliest = loop.time(), math.inf
        for task, when in list(self._due.items()):
            if when <= now:
                del self._due[task]
                self._expired.add(task)
                task.cancel()
            elif when < earliest:
                earliest = when
        if earliest < math.inf:
            self._arm(loop, earliest)


def _uncancel(task: asyncio.Task[Any]) -> int:
    """Take one cancellation request back (Python 3.11+); the requests still pending.

    Python 3.10 does not count cancellation requests: there a deadline's cancellation is
    assumed to be the only one (as aiohttp's own timeouts assume on that version).
    """
    uncancel = getattr(task, "uncancel", None)
    return int(uncancel()) if uncancel is not None else 0


class _LoopSession:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.users = 0
        self.deadlines = _ReadDeadlines()

    async def close(self) -> None:
        self.deadlines.close()  # its timer refers to the loop: drop it with the session
        await self.session.close()


_loop_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSession] = (
    weakref.WeakKeyDictionary()
)
_sessions_created = 0


def _new_session() -> aiohttp.ClientSession:
    import aiohttp

    global _sessions_created
    _sessions_created += 1
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=ASYNC_CONNECTIONS_PER_HOST, keepalive_timeout=60)
    # No session-wide timeout: every request sets its own. No cookies: the session is shared by
    # every hook (and credential) of the loop, and none of the vendor APIs is cookie-based.
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None), cookie_jar=aiohttp.DummyCookieJar()
    )


def env_proxy(url: str) -> str | None:
    """The proxy for ``url`` from ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and ``NO_PROXY``.

    The sync path (requests) reads these variables itself; the async path passes this value
    per request, so a triggerer behind a proxy reaches the same hosts as a worker.
    """
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not proxy or bypass(parts.netloc.rsplit("@", 1)[-1], proxies):
        return None
    return proxy


#: The last loop that asked for its session, and its entry (both weakly: the cache must not keep
#: a finished loop's session alive): every request asks, and looking a loop up in the weak
#: dictionary costs a new weak reference each time.
_last_loop: tuple[weakref.ref[asyncio.AbstractEventLoop], weakref.ref[_LoopSession]] | None = None


def _loop_session() -> _LoopSession:
    global _last_loop
    loop = asyncio.get_running_loop()
    last = _last_loop
    if last is not None and last[0]() is loop:
        cached = last[1]()
        if cached is not None and not cached.session.closed:
            return cached
    entry = _loop_sessions.get(loop)
    if entry is None or entry.session.closed:
        entry = _LoopSession(_new_session())
        _loop_sessions[loop] = entry
    _last_loop = (weakref.ref(loop), weakref.ref(entry))
    return entry


class shared_session_scope:  # used like a function: ``async with shared_session_scope() as session``
    """Use this loop's shared session for a while (e.g. a trigger's whole ``run()``).

    The session is created lazily and closed when the last scope of the loop exits, so a
    triggerer with thousands of triggers keeps one pool of keep-alive connections, and a
    short-lived loop (``asyncio.run`` in a test or ``airflow dags test``) closes it cleanly.

    A plain class rather than ``@asynccontextmanager``: every request enters a scope, and a
    generator-based context manager costs an async generator (and its loop bookkeeping) each time.
    """

    __slots__ = ("_entry",)

    async def __aenter__(self) -> aiohttp.ClientSession:
        entry = self._entry = acquire_session()
        return entry.session

    async def __aexit__(self, *exc_info: object) -> None:
        await release_session(self._entry)


def acquire_session() -> _LoopSession:
    """Start using this loop's shared session; pair with :func:`release_session` in a ``finally``.

    The function form of :class:`shared_session_scope`, for code that holds the session for a
    long time (a trigger's whole run) or enters it on every request: it keeps no scope object
    alive, which matters when thousands of triggers wait at once (every live object is work for
    the garbage collector, see ``docs/performance.md``).
    """
    entry = _loop_session()
    entry.users += 1
    return entry


async def release_session(entry: _LoopSession) -> None:
    """Stop using ``entry``; the last user of the loop closes the session."""
    if _drop_user(entry):
        await entry.close()


def _drop_user(entry: _LoopSession) -> bool:
    """One user of ``entry`` fewer; whether its session must now be closed (the last user left).

    The synchronous half of :func:`release_session`, for the request path: a request inside a
    trigger's run is never the last user, and awaiting nothing costs no coroutine per request.
    """
    entry.users -= 1
    return entry.users == 0 and not entry.session.closed


def async_sessions_created() -> int:
    """How many shared sessions this process has created (benchmarks and tests)."""
    return _sessions_created


_ssl_contexts: dict[str, Any] = {}
_client_timeouts: dict[float, aiohttp.ClientTimeout] = {}
_SESSION_LOCK = threading.Lock()


def _client_timeout(connect: float) -> aiohttp.ClientTimeout:
    """The per-request connect timeout (never session-wide); immutable, so shared by every core.

    It sets no read or total timeout: aiohttp would schedule timers for those on every request.
    The read timeout is the loop's :class:`_ReadDeadlines`.
    """
    timeout = _client_timeouts.get(connect)
    if timeout is None:
        import aiohttp

        timeout = _client_timeouts[connect] = aiohttp.ClientTimeout(total=None, sock_connect=connect)
    return timeout


def _aiohttp_ssl(verify: bool | str) -> Any:
    if verify is True:
        return True
    if verify is False:
        return False
    ctx = _ssl_contexts.get(verify)
    if ctx is None:
        import ssl

        ctx = _ssl_contexts[verify] = ssl.create_default_context(cafile=verify)
    return ctx


# --------------------------------------------------------------------------------------------
# The core
# --------------------------------------------------------------------------------------------


class HttpCore:
    """Sends :class:`ApiRequest` objects with the provider's retry, timeout and error rules.

    ``sleep``/``asleep``/``clock`` default to :func:`time.sleep`, :func:`asyncio.sleep` and
    :func:`time.monotonic`; tests inject fakes to check back-off and time budgets without waiting.
    """

    def __init__(
        self,
        profile: VendorProfile,
        settings: HttpSettings,
        auth: Auth | None = None,
        redactor: Redactor | None = None,
        default_headers: Mapping[str, str] | None = None,
        *,
        sleep: Callable[[float], None] | None = None,
        asleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.profile = profile
        self.settings = settings
        self.auth = auth
        self.redact = redactor or Redactor()
        self.default_headers = dict(default_headers or {})
        self.sleep: Callable[[float], None] = sleep or _sleep
        self.asleep: Callable[[float], Awaitable[None]] = asleep or _asleep
        self.clock: Callable[[], float] = clock or _monotonic
        self._session: requests.Session | None = None
        #: async path: the environment's proxy per origin, read once for the life of this core
        self._proxies: dict[str, str | None] = {}

    # ---- retry plumbing shared by both paths ------------------------------------------------

    def _wait(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _Transient):
            if exc.immediate:
                return 0.0
            if exc.error.retry_after is not None:
                return min(exc.error.retry_after, self.settings.retry_after_max)
        exponential = self.settings.backoff_base * 2 ** (retry_state.attempt_number - 1)
        ceiling = min(self.settings.backoff_max, exponential)
        return random.uniform(0, ceiling)

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _Transient) and not exc.immediate:
            sleep = retry_state.next_action.sleep if retry_state.next_action else 0.0
            log.warning("%s; retrying in %.1f s (attempt %d of %d)", exc.error, sleep,
                        retry_state.attempt_number + 1, self.settings.max_attempts)

    def _stop(self, state: _CallState) -> Callable[[RetryCallState], bool]:
        """Stop after ``max_attempts`` attempts, or when the next wait would end past the time budget."""

        def stop(retry_state: RetryCallState) -> bool:
            if retry_state.attempt_number >= self.settings.max_attempts:
                return True
            elapsed = self.clock() - state.started
            return elapsed + (retry_state.upcoming_sleep or 0.0) >= self.settings.max_retry_seconds

        return stop

    def _retry_kwargs(self, state: _CallState) -> dict[str, Any]:
        return {
            "stop": self._stop(state),
            "wait": self._wait,
            "retry": retry_if_exception_type(_Transient),
            "before_sleep": self._before_sleep,
            "reraise": True,
        }

    def _headers(self, req: ApiRequest, auth_headers: Mapping[str, str]) -> dict[str, str]:
        headers = {"Accept": "application/json", **self.default_headers}
        if req.body is not None:
            headers["Content-Type"] = "application/json"
        headers.update(req.headers or {})
        if req.headers_factory is not None:
            headers.update(req.headers_factory())
        headers.update(auth_headers)
        return headers

    def _redact(self, text: str, state: _CallState) -> str:
        for value in state.auth_values:
            text = text.replace(value, "***")
        return self.redact(text)

    def _error(self, req: ApiRequest, state: _CallState, **kwargs: Any) -> ApiError:
        message = kwargs.pop("vendor_message", "")
        return ApiError(
            vendor=self.profile.name,
            operation=req.operation,
            resource=req.resource,
            vendor_message=self._redact(message, state),
            attempts=max(1, state.attempts),
            **kwargs,
        )

    def _classify(
        self, req: ApiRequest, state: _CallState, status: int, headers: Mapping[str, str], text: str
    ) -> ApiResponse:
        """Turn one HTTP answer into a response, an :class:`ApiError` or a retry signal."""
        request_id, correlation_id = self.profile.request_ids(headers, state.sent_headers)
        body: Any = None
        parse_failed = False
        if text.strip():
            try:
                body = json.loads(text)
            except ValueError:
                parse_failed = True
        ids = {"request_id": request_id, "correlation_id": correlation_id, "status": status}

        if 200 <= status < 300 or status in req.allow_statuses:
            if parse_failed and req.expect_json and 200 <= status < 300:
                err = self._error(
                    req, state,
                    vendor_message=f"the response is not valid JSON: {_excerpt(self._redact(text, state))!r}",
                    retryable=req.is_idempotent, ambiguous=not req.is_idempotent, **ids,
                )
                if req.is_idempotent:
                    raise _Transient(err)
                raise err
            body_error = self.profile.body_error(body) if 200 <= status < 300 else None
            if body_error is not None:
                raise self._error(req, state, vendor_message=body_error, **ids)
            return ApiResponse(status, headers, body, text, request_id)

        message = self.profile.error_message(status, body, text) if not parse_failed else ""
        if not message:
            # redact before cutting, so a secret straddling the cut cannot leak in part
            message = f"{_excerpt(self._redact(text, state))!r}" if text.strip() else "(empty body)"

        if status == 401 and req.authenticated and self.auth is not None:
            if not state.refreshed:
                state.refreshed = True
                if self.auth.invalidate(state.sent_headers):
                    log.info("%s answered 401 to %s; refreshing the token once.",
                             self.profile.name, req.operation)
                    raise _Transient(self._error(req, state, vendor_message=message, **ids), immediate=True)
            else:
                message += " (still refused after one token refresh: check the credentials and their access)"

        retry_after = parse_retry_after(headers.get("retry-after") or headers.get("Retry-After"))
        retryable = status in ALWAYS_RETRYABLE_STATUSES or (
            status in TRANSIENT_STATUSES and req.is_idempotent
        )
        err = self._error(
            req, state, vendor_message=message, retry_after=retry_after, retryable=retryable,
            ambiguous=status in TRANSIENT_STATUSES and not req.is_idempotent, **ids,
        )
        if retryable:
            raise _Transient(err)
        raise err

    def _transport_error(
        self, req: ApiRequest, state: _CallState, exc: BaseException, *, reached_server: bool, what: str
    ) -> _Transient | ApiError:
        retryable = (not reached_server) or req.is_idempotent
        # no response: a profile may still name the ids we sent (e.g. HERE's X-Request-ID), which
        # is what the vendor's support needs to find an ambiguous request
        request_id, correlation_id = self.profile.request_ids({}, state.sent_headers)
        err = self._error(
            req, state, vendor_message=f"{what}: {type(exc).__name__}: {exc}",
            retryable=retryable, ambiguous=reached_server and not req.is_idempotent,
            request_id=request_id, correlation_id=correlation_id,
        )
        return _Transient(err) if retryable else err

    def _finish(self, exc: _Transient, state: _CallState) -> ApiError:
        return exc.error.with_attempts(state.attempts)

    # ---- sync path ----------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        import requests.adapters  # lazily, like aiohttp: DAG files that import operators never pay for it

        with _SESSION_LOCK:  # one lock for all cores: creating a session is rare
            if self._session is None:
                session = requests.Session()
                # stateless like the async path: no cookies kept between calls
                session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
                adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                self._session = session
            return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def request(self, req: ApiRequest) -> ApiResponse:
        """Send ``req`` synchronously with the retry policy; raise :class:`ApiError` on failure."""
        state = _CallState(started=self.clock())
        try:
            try:  # the first attempt runs outside tenacity: see _FirstFailure
                return self._attempt(req, state)
            except _Transient as exc:
                first = _FirstFailure(exc)
            for attempt in Retrying(sleep=self.sleep, **self._retry_kwargs(state)):
                with attempt:
                    first.replay()
                    return self._attempt(req, state)
        except _Transient as exc:
            raise self._finish(exc, state) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, req: ApiRequest, state: _CallState) -> ApiResponse:
        import requests

        state.attempts += 1
        auth_headers = self.auth.headers() if (req.authenticated and self.auth) else {}
        headers = self._headers(req, auth_headers)
        state.sent_headers = headers
        state.auth_headers = auth_headers
        try:
            resp = self.session.request(
                req.method, req.url, params=_query(req.params), json=req.json, data=_data(req),
                headers=headers,
                timeout=(self.settings.connect_timeout, self.settings.read_timeout),
                allow_redirects=False, verify=self.settings.verify,
            )
        except (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError) as exc:
            raise self._transport_error(
                req, state, exc, reached_server=False, what="could not connect"
            ) from None
        except requests.exceptions.ReadTimeout as exc:
            raise self._transport_error(
                req, state, exc, reached_server=True,
                what=f"no answer within the read timeout of {self.settings.read_timeout:g} s",
            ) from None
        except requests.exceptions.ConnectionError as exc:
            reached = not _never_connected(exc)
            raise self._transport_error(
                req, state, exc, reached_server=reached,
                what="connection dropped" if reached else "could not connect",
            ) from None
        except requests.exceptions.RequestException as exc:
            raise self._transport_error(req, state, exc, reached_server=True, what="request failed") from None
        return self._classify(req, state, resp.status_code, resp.headers, resp.text)

    # ---- async path ---------------------------------------------------------------------------

    async def arequest(self, req: ApiRequest) -> ApiResponse:
        """Send ``req`` on this loop's shared aiohttp session with the same policy."""
        state = _CallState(started=self.clock())
        entry = acquire_session()
        try:
            try:  # the first attempt runs outside tenacity: see _FirstFailure
                return await self._aattempt(entry, req, state)
            except _Transient as exc:
                first = _FirstFailure(exc)
            async for attempt in AsyncRetrying(sleep=self.asleep, **self._retry_kwargs(state)):
                with attempt:
                    first.replay()
                    return await self._aattempt(entry, req, state)
        except _Transient as exc:
            raise self._finish(exc, state) from None
        finally:
            if _drop_user(entry):
                await entry.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _proxy(self, url: str) -> str | None:
        """:func:`env_proxy` of ``url``'s origin, cached: reading the environment costs ~100 us."""
        origin = "/".join(url.split("/", 3)[:3])
        try:
            return self._proxies[origin]
        except KeyError:
            proxy = self._proxies[origin] = env_proxy(origin)
            return proxy

    async def _aattempt(self, entry: _LoopSession, req: ApiRequest, state: _CallState) -> ApiResponse:
        import aiohttp

        state.attempts += 1
        auth_headers: dict[str, str] = {}
        if req.authenticated and self.auth:
            auth_headers = self.auth.ready_headers() or await self.auth.aheaders()
        headers = self._headers(req, auth_headers)
        state.sent_headers = headers
        state.auth_headers = auth_headers
        # connecting is bounded by aiohttp (sock_connect, new connections only); the answer by
        # the loop's read deadlines (the whole attempt, connecting included), see _ReadDeadlines
        task = entry.deadlines.watch(self.settings.read_timeout)
        try:
            async with entry.session.request(
                req.method, req.target(), params=_query(req.params), json=req.json, data=_data(req),
                headers=headers, timeout=_client_timeout(self.settings.connect_timeout),
                allow_redirects=False, ssl=_aiohttp_ssl(self.settings.verify), proxy=self._proxy(req.url),
            ) as resp:
                # like requests: undecodable bytes become U+FFFD instead of an exception
                text = await resp.text(errors="replace")
                return self._classify(req, state, resp.status, resp.headers, text)
        except asyncio.CancelledError:
            if not entry.deadlines.expired(task):
                raise
            raise self._read_timeout(req, state, asyncio.TimeoutError("the read deadline passed")) from None
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise self._transport_error(
                req, state, exc, reached_server=False, what="could not connect"
            ) from None
        except (asyncio.TimeoutError, aiohttp.SocketTimeoutError) as exc:
            raise self._read_timeout(req, state, exc) from None
        except aiohttp.ClientError as exc:
            raise self._transport_error(
                req, state, exc, reached_server=True, what="connection dropped"
            ) from None
        finally:
            entry.deadlines.unwatch(task)

    def _read_timeout(self, req: ApiRequest, state: _CallState, exc: BaseException) -> _Transient | ApiError:
        return self._transport_error(
            req, state, exc, reached_server=True,
            what=f"no answer within the read timeout of {self.settings.read_timeout:g} s",
        )


def json_body(value: Any, operation: str) -> bytes:
    """``value`` serialized as a JSON request body (as ``requests`` does it: no NaN or infinity).

    Hooks serialize a body once per request object (see ``PipelinesHook._request``), so a trigger
    that polls with the same body does not encode it again on every poll. A value that is not
    JSON fails here, before anything is sent.
    """
    try:
        return json.dumps(value, allow_nan=False).encode()
    except (TypeError, ValueError) as err:
        raise ValueError(f"The JSON body of {operation!r} cannot be sent: {err}") from None


def _data(req: ApiRequest) -> Any:
    return req.body if req.body is not None else req.data


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return [_query_value(v) for v in value]
    return value


def _query(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Query parameters encoded the same way on both paths (``None`` dropped, booleans lower case)."""
    if not params:
        return None
    out = {k: _query_value(v) for k, v in params.items() if v is not None}
    return out or None


def _credentials(auth_headers: Mapping[str, str]) -> list[str]:
    """The secret parts of auth headers: whole values, and what follows a scheme ("Bearer <token>")."""
    values: list[str] = []
    for value in auth_headers.values():
        if not value:
            continue
        values.append(value)
        credential = value.partition(" ")[2]
        if credential.strip() and len(credential.strip()) >= 3:
            values.append(credential.strip())
    return sorted(set(values), key=len, reverse=True)


class _FirstFailure:
    """The failed first attempt of a call, re-raised inside tenacity's loop as its attempt 1.

    Every call's first attempt runs outside tenacity, because a tenacity ``Retrying`` object
    and its per-call state form reference cycles that only Python's cyclic garbage collector
    frees (about 40 objects per call). In a triggerer polling thousands of jobs that garbage
    made full collections frequent and long (loop stalls of seconds at 5,000 triggers; see
    ``docs/performance.md``). A call that needs a retry replays its first failure through
    :meth:`replay`, so attempt count, waits, ``Retry-After``, time budget and log lines are
    exactly tenacity's.
    """

    def __init__(self, error: _Transient) -> None:
        self.error: _Transient | None = error

    def replay(self) -> None:
        error, self.error = self.error, None
        if error is not None:
            raise error


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


async def _asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _monotonic() -> float:
    return time.monotonic()


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """Whether a requests ConnectionError happened before the request was sent."""
    import urllib3.exceptions as u3

    cause: BaseException | None = exc
    seen = 0
    while cause is not None and seen < 10:
        if isinstance(cause, (u3.NewConnectionError, u3.ConnectTimeoutError, ConnectionRefusedError)):
            return True
        if isinstance(cause, u3.MaxRetryError) and cause.reason is not None:
            cause = cause.reason
        else:
            cause = cause.__cause__ or cause.__context__ or (cause.args[0] if cause.args and isinstance(
                cause.args[0], BaseException) else None)
        seen += 1
    return False


# A callable returning an awaitable token fetch, used by hooks' async auth.
AsyncFetch = Callable[[], Awaitable[tuple[str, float]]]
