"""Base hook: connection lookup (sync and async, the Airflow 3 way) and the HTTP core."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from airflow_provider_pipelines._compat import (
    AirflowException,
    BaseHook,
    Connection,
    amask_secret,
    get_async_connection,
    get_async_extra,
    mask_secret,
)
from airflow_provider_pipelines.hooks._http import (
    ApiError,
    ApiRequest,
    ApiResponse,
    Auth,
    HttpCore,
    HttpSettings,
    Redactor,
    VendorProfile,
    json_body,
)

#: Serialises synchronous connection lookups (rare: once per hook). One lock for all hooks rather
#: than one each: a triggerer holds thousands of hooks, and every live object costs the garbage
#: collector time.
_RESOLVE_LOCK = threading.RLock()


@dataclass
class ResolvedConnection:
    """What a hook needs from its Airflow connection, parsed and validated once."""

    base_url: str
    http: HttpSettings
    auth: Auth | None
    secrets: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    #: HTTP cores built on this resolution, by hook class and default headers: hooks that share
    #: a resolution (the triggers of one loop, see ``triggers/base.py``) share one core, with its
    #: proxy lookups and redactor, instead of building one per trigger
    cores: dict[tuple[Any, ...], HttpCore] = field(default_factory=dict, repr=False, compare=False)


class PipelinesHook(BaseHook):
    """Common base of this provider's hooks.

    Subclasses set the class attributes and implement :meth:`_resolve` (turn a connection and
    its extra into a :class:`ResolvedConnection`, without I/O) and :attr:`profile`. The
    connection is looked up once per hook instance: synchronously for operators, sensors and
    ``test_connection``; asynchronously (never blocking the loop) for triggers.
    """

    conn_name_attr: ClassVar[str]
    default_conn_name: ClassVar[str]
    conn_type: ClassVar[str]
    hook_name: ClassVar[str]
    profile: ClassVar[VendorProfile]

    def __init__(self, conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id or self.default_conn_name
        self._resolved: ResolvedConnection | None = None
        self._core: HttpCore | None = None
        self._alock: asyncio.Lock | None = None
        self._last_request: ApiRequest | None = None

    # ---- subclass API ----------------------------------------------------------------------

    def _resolve(self, conn: Connection, extra: Mapping[str, Any]) -> ResolvedConnection:
        raise NotImplementedError

    def _default_headers(self) -> dict[str, str]:
        from airflow_provider_pipelines import __version__

        return {"User-Agent": f"airflow-provider-pipelines/{__version__}"}

    # ---- resolution ------------------------------------------------------------------------

    def _install(self, resolved: ResolvedConnection) -> HttpCore:
        headers = self._default_headers()
        key = (type(self), *sorted(headers.items()))
        core = resolved.cores.get(key)
        if core is None:
            core = resolved.cores[key] = HttpCore(
                self.profile, resolved.http, resolved.auth, Redactor(resolved.secrets), headers
            )
        self._resolved = resolved
        self._core = core
        return core

    @property
    def resolved(self) -> ResolvedConnection:
        self.core  # noqa: B018 - resolve on first use
        assert self._resolved is not None
        return self._resolved

    @property
    def core(self) -> HttpCore:
        """The HTTP core, resolving the connection synchronously on first use."""
        if self._core is None:
            with _RESOLVE_LOCK:
                if self._core is None:
                    conn = self.get_connection(self.conn_id)
                    resolved = self._resolve(conn, conn.extra_dejson)
                    for secret in resolved.secrets:
                        mask_secret(secret)
                    self._install(resolved)
        assert self._core is not None
        return self._core

    async def acore(self) -> HttpCore:
        """The HTTP core, resolving the connection without blocking the event loop."""
        if self._core is not None:
            return self._core
        if self._alock is None:
            self._alock = asyncio.Lock()
        async with self._alock:
            if self._core is None:
                conn = await get_async_connection(self.conn_id)
                extra = await get_async_extra(conn)
                resolved = self._resolve(conn, extra)
                for secret in resolved.secrets:
                    await amask_secret(secret)
                self._install(resolved)
        assert self._core is not None
        return self._core

    def url(self, path: str) -> str:
        return f"{self.resolved.base_url}{path}"

    async def aurl(self, path: str) -> str:
        await self.acore()
        return self.url(path)

    # ---- calls -------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, operation: str, resource: str | None, kw: dict[str, Any]
    ) -> ApiRequest:
        """The :class:`ApiRequest` of one call; the previous call's when the arguments are equal.

        A hook that polls a job sends the same request again and again: it is built once (with
        the parsed URL the async client needs, see :meth:`ApiRequest.target`), not on every poll.
        A JSON body is compared and kept in its encoded form (:func:`json_body`), so a body dict
        the caller changes in place after a call is sent as it is now, never as it was. Requests
        are immutable, so sharing one between calls is safe.
        """
        if kw.get("json") is not None:  # encoded once per call here, not by the HTTP client per attempt
            kw = {**kw, "json": None, "body": json_body(kw["json"], operation)}
        last = self._last_request
        if last is not None and last.repeats(path, method, operation, resource, kw):
            return last
        req = self._new_request(self.url(path), method, operation, resource, kw)
        req.memo_path, req.memo_keys = path, tuple(kw)
        self._last_request = req
        return req

    def _new_request(
        self, url: str, method: str, operation: str, resource: str | None, kw: dict[str, Any]
    ) -> ApiRequest:
        return ApiRequest(method, url, operation, resource, **kw)

    def call(
        self, method: str, path: str, operation: str, resource: str | None = None, **kw: Any
    ) -> ApiResponse:
        """Send one API call relative to the connection's base URL (sync)."""
        core = self.core
        return core.request(self._request(method, path, operation, resource, kw))

    def acall(
        self, method: str, path: str, operation: str, resource: str | None = None, **kw: Any
    ) -> Coroutine[Any, Any, ApiResponse]:
        """Send one API call relative to the connection's base URL (async: ``await hook.acall(...)``).

        Once the connection is resolved this hands back the HTTP core's coroutine itself rather
        than wrapping it in one more: a triggerer makes thousands of these calls.
        """
        core = self._core
        if core is None:
            return self._acall_resolving(method, path, operation, resource, kw)
        return core.arequest(self._request(method, path, operation, resource, kw))

    async def _acall_resolving(
        self, method: str, path: str, operation: str, resource: str | None, kw: dict[str, Any]
    ) -> ApiResponse:
        core = await self.acore()
        return await core.arequest(self._request(method, path, operation, resource, kw))

    # ---- connection test ---------------------------------------------------------------------

    def _probe(self) -> str:
        """One cheap authenticated call; returns a success message (subclasses implement)."""
        raise NotImplementedError

    def _explain_failure(self, err: ApiError) -> str:
        """What a failed probe means for the user (subclasses add vendor-specific diagnoses)."""
        return str(err)

    def test_connection(self) -> tuple[bool, str]:
        """Make one cheap authenticated call and say precisely what failed, if anything."""
        try:
            return True, self._probe()
        except ApiError as err:
            return False, self._explain_failure(err)
        except AirflowException as err:
            return False, str(err)
        except Exception as err:
            return False, f"{type(err).__name__}: {err}"


def require(value: Any, what: str, conn_id: str, hint: str) -> Any:
    """Fail with a message that says which connection field to fill, and how."""
    if value in (None, ""):
        raise AirflowException(f"Connection {conn_id!r} has no {what}. {hint}")
    return value
