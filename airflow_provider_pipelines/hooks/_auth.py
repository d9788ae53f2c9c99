"""Auth strategies for the HTTP core, and the process-wide token cache.

Tokens are cached per process, keyed by credential (never by the secret itself: by a hash of
it), refreshed ahead of expiry, and fetched once however many callers need one at the same time
(a thread lock on the sync path, one asyncio lock per event loop on the async path). Triggers of
one triggerer process therefore share one token per credential.

A failed fetch is shared the same way: callers that were waiting for that fetch get its error
instead of each asking the token endpoint again (50 triggers with a revoked secret cost one
token request, not 50). The next caller after that tries again.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from airflow_provider_pipelines._compat import amask_secret, mask_secret

#: Refresh this many seconds before expiry (capped at half the token's lifetime).
REFRESH_LEAD_SECONDS = 60.0


def credential_key(*parts: str | None) -> str:
    """A cache key for a credential that does not contain the secret."""
    digest = hashlib.sha256("\x1f".join(p or "" for p in parts).encode()).hexdigest()
    return digest[:32]


@dataclass
class _Token:
    value: str
    refresh_at: float
    expires_at: float


@dataclass
class _Flights:
    """Per key: how many fetches have finished, and the error of the last one if it failed."""

    done: dict[str, int] = field(default_factory=dict)
    failed: dict[str, BaseException] = field(default_factory=dict)


class TokenCache:
    """Bearer tokens by credential key, shared by every hook and trigger of the process.

    :param clock: a monotonic clock (injectable for tests); expiry is measured on it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._flights = _Flights()
        self._tokens: dict[str, _Token] = {}
        self._thread_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
            weakref.WeakKeyDictionary()
        )
        #: token requests made, by key (tests and benchmarks read this)
        self.fetches: dict[str, int] = {}

    def clear(self) -> None:
        with self._guard:
            self._tokens.clear()
            self.fetches.clear()
            self._flights = _Flights()

    def _fresh(self, key: str) -> str | None:
        token = self._tokens.get(key)
        if token is not None and self.clock() < token.refresh_at:
            return token.value
        return None

    def cached(self, key: str) -> str | None:
        """The cached token of ``key`` if it needs no refresh yet (no lock, no I/O), else ``None``."""
        return self._fresh(key)

    def _store(self, key: str, value: str, expires_in: float) -> str:
        now = self.clock()
        lifetime = max(float(expires_in), 1.0)
        lead = min(REFRESH_LEAD_SECONDS, lifetime / 2)
        self._tokens[key] = _Token(value, now + lifetime - lead, now + lifetime)
        self.fetches[key] = self.fetches.get(key, 0) + 1
        self._flights.done[key] = self._flights.done.get(key, 0) + 1
        self._flights.failed.pop(key, None)
        return value

    def _failed(self, key: str, error: BaseException) -> None:
        self.fetches[key] = self.fetches.get(key, 0) + 1
        self._flights.done[key] = self._flights.done.get(key, 0) + 1
        self._flights.failed[key] = error

    def _shared_failure(self, key: str, seen: int) -> BaseException | None:
        """The error of a fetch that finished while this caller waited for the lock, if it failed."""
        if self._flights.done.get(key, 0) != seen:
            return self._flights.failed.get(key)
        return None

    def _thread_lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._thread_locks.setdefault(key, threading.Lock())

    def _async_lock(self, key: str) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._guard:
            locks = self._async_locks.setdefault(loop, {})
            return locks.setdefault(key, asyncio.Lock())

    def get(self, key: str, fetch: Callable[[], tuple[str, float]]) -> str:
        value = self._fresh(key)
        if value is not None:
            return value
        seen = self._flights.done.get(key, 0)
        with self._thread_lock(key):
            value = self._fresh(key)
            if value is not None:
                return value
            shared = self._shared_failure(key, seen)
            if shared is not None:
                raise shared
            try:
                token, expires_in = fetch()
            except Exception as err:
                self._failed(key, err)
                raise
            mask_secret(token)
            return self._store(key, token, expires_in)

    async def aget(self, key: str, fetch: Callable[[], Awaitable[tuple[str, float]]]) -> str:
        value = self._fresh(key)
        if value is not None:
            return value
        seen = self._flights.done.get(key, 0)
        async with self._async_lock(key):
            value = self._fresh(key)
            if value is not None:
                return value
            shared = self._shared_failure(key, seen)
            if shared is not None:
                raise shared
            try:
                token, expires_in = await fetch()
            except Exception as err:
                self._failed(key, err)
                raise
            await amask_secret(token)
            return self._store(key, token, expires_in)

    def invalidate(self, key: str, value: str | None) -> None:
        """Drop the cached token if it is still ``value`` (another caller may have refreshed it)."""
        with self._guard:
            token = self._tokens.get(key)
            if token is not None and (value is None or token.value == value):
                del self._tokens[key]


#: The process-wide cache.
TOKEN_CACHE = TokenCache()


def _bearer(sent_headers: Mapping[str, str]) -> str | None:
    value = sent_headers.get("Authorization") or sent_headers.get("authorization") or ""
    return value[7:] if value.lower().startswith("bearer ") else None


class CachedTokenAuth:
    """``Authorization: Bearer`` with a token obtained by ``fetch`` and cached process-wide."""

    def __init__(
        self,
        key: str,
        fetch: Callable[[], tuple[str, float]],
        afetch: Callable[[], Awaitable[tuple[str, float]]],
        cache: TokenCache = TOKEN_CACHE,
    ) -> None:
        self.key = key
        self._fetch = fetch
        self._afetch = afetch
        self._cache = cache

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._cache.get(self.key, self._fetch)}"}

    async def aheaders(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self._cache.aget(self.key, self._afetch)}"}

    def ready_headers(self) -> dict[str, str] | None:
        token = self._cache.cached(self.key)
        return None if token is None else {"Authorization": f"Bearer {token}"}

    def invalidate(self, sent_headers: Mapping[str, str]) -> bool:
        self._cache.invalidate(self.key, _bearer(sent_headers))
        return True


class StaticHeaderAuth:
    """A fixed header (a static bearer token, an API key): nothing to refresh after a 401."""

    def __init__(self, name: str, value: str) -> None:
        self._headers = {name: value}

    def headers(self) -> dict[str, str]:
        return dict(self._headers)

    async def aheaders(self) -> dict[str, str]:
        return dict(self._headers)

    def ready_headers(self) -> dict[str, str] | None:
        return dict(self._headers)

    def invalidate(self, sent_headers: Mapping[str, str]) -> bool:
        return False
