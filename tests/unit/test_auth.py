"""The process-wide token cache and the auth strategies of the HTTP core."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from airflow_provider_pipelines._compat import AirflowException
from airflow_provider_pipelines.hooks import _auth
from airflow_provider_pipelines.hooks._auth import (
    REFRESH_LEAD_SECONDS,
    TOKEN_CACHE,
    CachedTokenAuth,
    StaticHeaderAuth,
    TokenCache,
    credential_key,
)


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_credential_key_hides_the_secret_and_tells_credentials_apart() -> None:
    key = credential_key("cognite", "https://login/t", "client", "scope", "the-secret-value")
    assert "the-secret-value" not in key and len(key) == 32
    assert key == credential_key("cognite", "https://login/t", "client", "scope", "the-secret-value")
    assert key != credential_key("cognite", "https://login/t", "client", "scope", "another-secret")
    assert credential_key("a", "bc") != credential_key("ab", "c")  # parts are separated
    assert credential_key("a", None) == credential_key("a", "")


def test_ten_threads_cause_one_token_request() -> None:
    cache = TokenCache()
    entered = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def fetch() -> tuple[str, float]:
        calls.append(1)
        entered.set()
        release.wait(5)
        return "tok-threads-1", 3600

    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("k", fetch))) for _ in range(10)]
    for thread in threads:
        thread.start()
    assert entered.wait(5)
    release.set()
    for thread in threads:
        thread.join(5)
    assert calls == [1] and results == ["tok-threads-1"] * 10 and cache.fetches == {"k": 1}


@pytest.mark.asyncio
async def test_fifty_concurrent_async_callers_cause_one_token_request() -> None:
    cache = TokenCache()
    release = asyncio.Event()
    calls: list[int] = []

    async def fetch() -> tuple[str, float]:
        calls.append(1)
        await release.wait()
        return "tok-async-1", 3600

    tasks = [asyncio.create_task(cache.aget("k", fetch)) for _ in range(50)]
    await asyncio.sleep(0.01)
    release.set()
    assert await asyncio.gather(*tasks) == ["tok-async-1"] * 50
    assert calls == [1] and cache.fetches == {"k": 1}


def test_token_is_refreshed_ahead_of_expiry() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock)
    tokens = iter(["tok-1", "tok-2", "tok-3"])
    fetch = lambda: (next(tokens), 3600)  # noqa: E731

    assert cache.get("k", fetch) == "tok-1"
    clock.now += 3600 - REFRESH_LEAD_SECONDS - 1
    assert cache.get("k", fetch) == "tok-1"
    clock.now += 2  # within the refresh lead: a new token before the old one expires
    assert cache.get("k", fetch) == "tok-2"
    assert cache.fetches == {"k": 2}


def test_short_lived_tokens_refresh_at_half_their_lifetime() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock)
    tokens = iter(["a-tok", "b-tok"])
    fetch = lambda: (next(tokens), 40)  # noqa: E731
    cache.get("k", fetch)
    clock.now += 19
    assert cache.get("k", fetch) == "a-tok"
    clock.now += 2
    assert cache.get("k", fetch) == "b-tok"


@pytest.mark.asyncio
async def test_async_refresh_ahead_of_expiry() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock)
    tokens = iter(["tok-1", "tok-2"])

    async def fetch() -> tuple[str, float]:
        return next(tokens), 600

    assert await cache.aget("k", fetch) == "tok-1"
    clock.now += 600 - REFRESH_LEAD_SECONDS + 1
    assert await cache.aget("k", fetch) == "tok-2"


def test_keys_are_independent() -> None:
    cache = TokenCache()
    assert cache.get("a", lambda: ("tok-a", 60)) == "tok-a"
    assert cache.get("b", lambda: ("tok-b", 60)) == "tok-b"
    assert cache.fetches == {"a": 1, "b": 1}


def test_invalidate_drops_only_the_rejected_token() -> None:
    cache = TokenCache()
    tokens = iter(["tok-1", "tok-2", "tok-3"])
    fetch = lambda: (next(tokens), 3600)  # noqa: E731
    cache.get("k", fetch)
    cache.invalidate("k", "tok-0")  # an older token: another caller already refreshed
    assert cache.get("k", fetch) == "tok-1"
    cache.invalidate("k", "tok-1")
    assert cache.get("k", fetch) == "tok-2"
    cache.invalidate("k", None)
    assert cache.get("k", fetch) == "tok-3"


def test_a_failed_fetch_is_shared_by_the_threads_that_waited_for_it() -> None:
    cache = TokenCache()
    entered = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def fetch() -> tuple[str, float]:
        calls.append(1)
        entered.set()
        release.wait(5)
        raise AirflowException("token endpoint said invalid_client")

    errors: list[str] = []

    def worker() -> None:
        try:
            cache.get("k", fetch)
        except AirflowException as err:
            errors.append(str(err))

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    assert entered.wait(5)
    release.set()
    for thread in threads:
        thread.join(5)
    assert calls == [1] and errors == ["token endpoint said invalid_client"] * 10

    # the next caller tries again (the failure is not cached for later callers)
    assert cache.get("k", lambda: ("tok-ok", 60)) == "tok-ok"
    assert cache.fetches == {"k": 2}


@pytest.mark.asyncio
async def test_a_failed_async_fetch_is_shared_by_its_waiters() -> None:
    cache = TokenCache()
    release = asyncio.Event()
    calls: list[int] = []

    async def fetch() -> tuple[str, float]:
        calls.append(1)
        await release.wait()
        raise AirflowException("token endpoint unreachable")

    tasks = [asyncio.create_task(cache.aget("k", fetch)) for _ in range(50)]
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert calls == [1]
    assert all(isinstance(r, AirflowException) and "unreachable" in str(r) for r in results)

    async def good() -> tuple[str, float]:
        return "tok-later", 60

    assert await cache.aget("k", good) == "tok-later"


def test_the_cache_works_across_event_loops() -> None:
    cache = TokenCache()
    calls: list[int] = []

    async def fetch() -> tuple[str, float]:
        calls.append(1)
        return "tok-loops", 3600

    assert asyncio.run(cache.aget("k", fetch)) == "tok-loops"
    assert asyncio.run(cache.aget("k", fetch)) == "tok-loops"
    cache.invalidate("k", None)
    assert asyncio.run(cache.aget("k", fetch)) == "tok-loops"
    assert len(calls) == 2


def test_tokens_are_registered_with_the_secrets_masker(monkeypatch: pytest.MonkeyPatch) -> None:
    masked: list[str] = []
    amasked: list[str] = []

    async def amask(value: str | None) -> None:
        amasked.append(str(value))

    monkeypatch.setattr(_auth, "mask_secret", lambda value: masked.append(value))
    monkeypatch.setattr(_auth, "amask_secret", amask)
    cache = TokenCache()
    cache.get("s", lambda: ("sync-token-value", 60))

    async def fetch() -> tuple[str, float]:
        return "async-token-value", 60

    asyncio.run(cache.aget("a", fetch))
    assert masked == ["sync-token-value"] and amasked == ["async-token-value"]


def test_clear_forgets_tokens_and_counts() -> None:
    cache = TokenCache()
    cache.get("k", lambda: ("tok-x", 60))
    cache.clear()
    assert cache.fetches == {}
    assert cache.get("k", lambda: ("tok-y", 60)) == "tok-y"


def test_cached_token_auth_headers_and_invalidation() -> None:
    cache = TokenCache()
    tokens = iter(["tok-first-1", "tok-second-2"])

    def fetch() -> tuple[str, float]:
        return next(tokens), 3600

    async def afetch() -> tuple[str, float]:
        return fetch()

    auth = CachedTokenAuth("key-1", fetch, afetch, cache)
    assert auth.headers() == {"Authorization": "Bearer tok-first-1"}
    assert asyncio.run(auth.aheaders()) == {"Authorization": "Bearer tok-first-1"}
    assert auth.invalidate({"Authorization": "Bearer tok-first-1"}) is True
    assert auth.headers() == {"Authorization": "Bearer tok-second-2"}


def test_ready_headers_only_when_the_cached_token_needs_no_refresh() -> None:
    # the async path skips the awaitable only when a fresh token is at hand
    now = [1000.0]
    cache = TokenCache(clock=lambda: now[0])
    fetched: list[str] = []

    async def afetch() -> tuple[str, float]:
        fetched.append("tok")
        return f"tok-{len(fetched)}", 120

    auth = CachedTokenAuth("k", lambda: ("unused", 1), afetch, cache)
    assert auth.ready_headers() is None  # nothing cached: the caller awaits aheaders()
    assert asyncio.run(auth.aheaders()) == {"Authorization": "Bearer tok-1"}
    assert auth.ready_headers() == {"Authorization": "Bearer tok-1"}
    now[0] += 120 - 60  # the refresh point (60 s before expiry): no longer ready
    assert auth.ready_headers() is None
    assert asyncio.run(auth.aheaders()) == {"Authorization": "Bearer tok-2"}
    auth.invalidate({"Authorization": "Bearer tok-2"})  # a 401
    assert auth.ready_headers() is None and fetched == ["tok", "tok"]


def test_cached_token_auth_uses_the_process_wide_cache_by_default() -> None:
    calls: list[int] = []

    def fetch() -> tuple[str, float]:
        calls.append(1)
        return "tok-shared", 3600

    async def afetch() -> tuple[str, float]:
        return fetch()

    first = CachedTokenAuth("shared-key", fetch, afetch)
    second = CachedTokenAuth("shared-key", fetch, afetch)
    assert first.headers() == second.headers()
    assert calls == [1] and TOKEN_CACHE.fetches == {"shared-key": 1}


def test_static_header_auth_cannot_refresh() -> None:
    auth = StaticHeaderAuth("x-api-key", "ei_key_123")
    headers = auth.headers()
    headers["x-api-key"] = "changed"
    assert auth.headers() == {"x-api-key": "ei_key_123"}
    assert asyncio.run(auth.aheaders()) == {"x-api-key": "ei_key_123"}
    ready = auth.ready_headers()
    assert ready == {"x-api-key": "ei_key_123"} and ready is not auth.ready_headers()
    assert auth.invalidate({"x-api-key": "ei_key_123"}) is False


def test_fetch_counts_include_failed_requests() -> None:
    cache = TokenCache()

    def broken() -> tuple[str, Any]:
        raise AirflowException("no")

    with pytest.raises(AirflowException):
        cache.get("k", broken)
    assert cache.fetches == {"k": 1}
