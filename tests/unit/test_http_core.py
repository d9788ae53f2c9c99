"""The shared HTTP core: retry policy, timeouts, errors, settings, and the shared async session.

Sync calls are checked with requests-mock (or real local sockets for timeouts and refused
connections); async calls against a local ``aiohttp.test_utils.TestServer``. Sleeps and the
clock are injected into :class:`HttpCore`, so back-off and time budgets are checked without
waiting.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests
import requests_mock as rm
from aiohttp import web
from aiohttp.test_utils import TestServer

from airflow_provider_pipelines._compat import AirflowException
from airflow_provider_pipelines.hooks import _http
from airflow_provider_pipelines.hooks._auth import CachedTokenAuth, StaticHeaderAuth, TokenCache
from airflow_provider_pipelines.hooks._http import (
    ApiError,
    ApiRequest,
    HttpCore,
    HttpSettings,
    Redactor,
    async_sessions_created,
    env_proxy,
    is_loopback_host,
    parse_retry_after,
    require_https,
    shared_session_scope,
)

URL = "https://api.acme.test/v1/things/7"
SECRET = "s3cr3t-client-secret-value"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.token-one.signature"


class Profile:
    """A minimal vendor profile: ``{"error": {"message"}}`` bodies and ``x-request-id``."""

    name = "Acme"

    def error_message(self, status: int, body: Any, text: str) -> str:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return str(body["error"].get("message") or "")
        return ""

    def request_ids(
        self, response_headers: Mapping[str, str], sent_headers: Mapping[str, str]
    ) -> tuple[str | None, str | None]:
        return response_headers.get("x-request-id"), sent_headers.get("x-correlation-id")

    def body_error(self, body: Any) -> str | None:
        if isinstance(body, dict) and body.get("success") is False:
            return str(body.get("error") or "success: false")
        return None


class FakeTime:
    """Records the waits the core asks for and advances a fake monotonic clock by them."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def make_core(
    auth: Any = None, secrets: tuple[str, ...] = (SECRET,), **settings: Any
) -> tuple[HttpCore, FakeTime]:
    fake = FakeTime()
    core = HttpCore(
        Profile(), HttpSettings(**{"max_attempts": 4, **settings}), auth, Redactor(secrets),
        {"User-Agent": "tests"}, sleep=fake.sleep, asleep=fake.asleep, clock=fake.clock,
    )
    return core, fake


def get(url: str = URL, **kw: Any) -> ApiRequest:
    return ApiRequest("GET", url, "get thing", "thing 7", **kw)


def post(url: str = URL, **kw: Any) -> ApiRequest:
    return ApiRequest("POST", url, "create thing", "collection things", json={"name": "x"}, **kw)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A port that accepts TCP connections (kernel backlog) but never answers: a read timeout."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/slow"
    sock.close()


@pytest.fixture
def hangup_server() -> Iterator[str]:
    """Accepts each connection, reads the request, and closes without answering."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    conn.recv(65536)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/drop"
    stop.set()
    thread.join(2)
    sock.close()


def ok(body: Any = None, status: int = 200, **headers: str) -> dict[str, Any]:
    return {"json": {"ok": True} if body is None else body, "status_code": status, "headers": headers}


def err(status: int, message: str = "boom", **headers: str) -> dict[str, Any]:
    return {"json": {"error": {"message": message}}, "status_code": status, "headers": headers}


# ----------------------------------------------------------------------------------------------
# Retry policy, sync path
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_status_is_retried_then_succeeds(status: int) -> None:
    core, fake = make_core()
    with rm.Mocker() as m:
        m.get(URL, [err(status), ok({"id": 7})])
        resp = core.request(get())
    assert m.call_count == 2
    assert resp.status == 200 and resp.body == {"id": 7}
    assert len(fake.waits) == 1 and 0 <= fake.waits[0] <= core.settings.backoff_base


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retries_are_bounded_by_max_attempts(status: int) -> None:
    core, fake = make_core(max_attempts=4)
    with rm.Mocker() as m:
        m.get(URL, **err(status, "busy", **{"x-request-id": "req-9"}))
        with pytest.raises(ApiError) as info:
            core.request(get())
    assert m.call_count == 4
    assert len(fake.waits) == 3
    error = info.value
    assert error.status == status and error.retryable and error.attempts == 4
    assert "after 4 attempts" in str(error) and "request id req-9" in str(error)


def test_backoff_is_exponential_with_full_jitter_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    class Top:  # full jitter draws from [0, ceiling]: take the ceiling to see the growth
        @staticmethod
        def uniform(low: float, high: float) -> float:
            assert low == 0
            return high

    monkeypatch.setattr(_http, "random", Top)
    core, fake = make_core(max_attempts=7, backoff_base=0.5, backoff_max=4.0)
    with rm.Mocker() as m:
        m.get(URL, **err(503))
        with pytest.raises(ApiError):
            core.request(get())
    assert fake.waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_backoff_jitter_stays_within_bounds() -> None:
    core, fake = make_core(max_attempts=8, backoff_base=0.5, backoff_max=3.0)
    with rm.Mocker() as m:
        m.get(URL, **err(502))
        with pytest.raises(ApiError):
            core.request(get())
    ceilings = [min(3.0, 0.5 * 2**i) for i in range(7)]
    assert all(0 <= w <= c for w, c in zip(fake.waits, ceilings, strict=True))
    assert len(set(fake.waits)) > 1  # random, not a fixed schedule


def test_retry_after_seconds_is_honoured() -> None:
    core, fake = make_core()
    with rm.Mocker() as m:
        m.get(URL, [err(429, **{"Retry-After": "7"}), ok()])
        core.request(get())
    assert fake.waits == [7.0]


def test_retry_after_http_date_is_honoured() -> None:
    core, fake = make_core()
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    with rm.Mocker() as m:
        m.get(URL, [err(503, **{"Retry-After": email.utils.format_datetime(when, usegmt=True)}), ok()])
        core.request(get())
    assert len(fake.waits) == 1 and 28 <= fake.waits[0] <= 30.5


def test_retry_after_is_capped() -> None:
    core, fake = make_core(retry_after_max=20.0)
    with rm.Mocker() as m:
        m.get(URL, [err(429, **{"Retry-After": "3600"}), ok()])
        core.request(get())
    assert fake.waits == [20.0]


def test_total_time_is_bounded() -> None:
    """With Retry-After 40 s and a 100 s budget: attempts at t=0, 40, 80; waiting again would pass 100."""
    core, fake = make_core(max_attempts=10, max_retry_seconds=100.0)
    with rm.Mocker() as m:
        m.get(URL, **err(429, **{"Retry-After": "40"}))
        with pytest.raises(ApiError) as info:
            core.request(get())
    assert m.call_count == 3
    assert fake.waits == [40.0, 40.0]
    assert info.value.status == 429 and info.value.attempts == 3


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422, 500])
def test_other_statuses_are_never_retried(status: int) -> None:
    core, fake = make_core()
    with rm.Mocker() as m:
        m.get(URL, **err(status, "nope", **{"x-request-id": "r-1"}))
        with pytest.raises(ApiError) as info:
            core.request(get())
    assert m.call_count == 1 and fake.waits == []
    assert info.value.status == status and not info.value.retryable and not info.value.ambiguous
    assert "after" not in str(info.value)


def test_error_after_retries_reports_the_attempts() -> None:
    core, _ = make_core()
    with rm.Mocker() as m:
        m.get(URL, [err(503), err(503), err(404, "gone")])
        with pytest.raises(ApiError) as info:
            core.request(get())
    assert info.value.status == 404 and info.value.attempts == 3
    assert "gone" in str(info.value) and "after 3 attempts" in str(info.value)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_non_idempotent_post_is_not_retried_on_transient_5xx(status: int) -> None:
    core, fake = make_core()
    with rm.Mocker() as m:
        m.post(URL, **err(status))
        with pytest.raises(ApiError) as info:
            core.request(post())
    assert m.call_count == 1 and fake.waits == []
    assert info.value.ambiguous and not info.value.retryable


def test_non_idempotent_post_is_retried_on_429() -> None:
    core, fake = make_core()
    with rm.Mocker() as m:
        m.post(URL, [err(429, **{"Retry-After": "2"}), ok({"id": 1}, 201)])
        resp = core.request(post())
    assert m.call_count == 2 and resp.status == 201 and fake.waits == [2.0]


def test_post_marked_idempotent_is_retried_on_503() -> None:
    core, _ = make_core()
    with rm.Mocker() as m:
        m.post(URL, [err(503), ok()])
        core.request(post(idempotent=True))
    assert m.call_count == 2


@pytest.mark.parametrize("make", [get, post], ids=["GET", "POST"])
def test_connection_refused_is_retried_for_every_method(make: Any) -> None:
    core, fake = make_core(max_attempts=3)
    with pytest.raises(ApiError) as info:
        core.request(make(f"http://127.0.0.1:{closed_port()}/x"))
    error = info.value
    assert error.status is None and error.attempts == 3 and len(fake.waits) == 2
    assert "no response" in str(error) and "could not connect" in str(error)
    assert not error.ambiguous


def test_read_timeout_is_retried_for_idempotent_requests(silent_listener: str) -> None:
    core, _ = make_core(max_attempts=2, read_timeout=0.15)
    started = time.monotonic()
    with pytest.raises(ApiError) as info:
        core.request(get(silent_listener))
    assert time.monotonic() - started < 2
    assert info.value.attempts == 2 and info.value.retryable and not info.value.ambiguous
    assert "no answer within the read timeout of 0.15 s" in str(info.value)


def test_read_timeout_on_post_is_ambiguous_and_not_retried(silent_listener: str) -> None:
    core, fake = make_core(max_attempts=3, read_timeout=0.15)
    with pytest.raises(ApiError) as info:
        core.request(post(silent_listener))
    assert info.value.attempts == 1 and info.value.ambiguous and fake.waits == []


def test_dropped_connection_on_post_is_ambiguous(hangup_server: str) -> None:
    core, fake = make_core(max_attempts=3)
    with pytest.raises(ApiError) as info:
        core.request(post(hangup_server))
    assert info.value.ambiguous and info.value.attempts == 1 and fake.waits == []
    assert "connection dropped" in str(info.value)


def test_dropped_connection_on_get_is_retried(hangup_server: str) -> None:
    core, _ = make_core(max_attempts=2)
    with pytest.raises(ApiError) as info:
        core.request(get(hangup_server))
    assert info.value.attempts == 2 and not info.value.ambiguous


def test_timeouts_come_from_settings() -> None:
    core, _ = make_core(connect_timeout=3.5, read_timeout=42.0)
    seen: list[Any] = []
    with rm.Mocker() as m:
        m.get(URL, json={})
        original = core.session.request

        def spy(*args: Any, **kwargs: Any) -> Any:
            seen.append(kwargs["timeout"])
            return original(*args, **kwargs)

        core.session.request = spy  # type: ignore[method-assign]
        core.request(get())
    assert seen == [(3.5, 42.0)]


# ----------------------------------------------------------------------------------------------
# 401: one token refresh and one retry
# ----------------------------------------------------------------------------------------------


def token_auth(tokens: list[str], cache: TokenCache) -> tuple[CachedTokenAuth, list[str]]:
    handed: list[str] = []

    def fetch() -> tuple[str, float]:
        handed.append(tokens[len(handed)])
        return handed[-1], 3600

    async def afetch() -> tuple[str, float]:
        return fetch()

    return CachedTokenAuth("key", fetch, afetch, cache), handed


def test_401_refreshes_the_token_once_and_retries() -> None:
    auth, handed = token_auth(["tok-old-123456", "tok-new-654321"], TokenCache())
    core, fake = make_core(auth=auth)
    with rm.Mocker() as m:
        m.get(URL, [err(401, "expired"), ok()])
        core.request(get())
    assert handed == ["tok-old-123456", "tok-new-654321"]
    assert [r.headers["Authorization"] for r in m.request_history] == [
        "Bearer tok-old-123456", "Bearer tok-new-654321"]
    assert fake.waits == [0.0]  # the retry after a refresh is immediate


def test_second_401_fails_clearly_without_the_token() -> None:
    auth, handed = token_auth(["tok-old-123456", "tok-new-654321", "tok-3"], TokenCache())
    core, _ = make_core(auth=auth)
    with rm.Mocker() as m:
        m.get(URL, **err(401, "Unauthorized: token rejected", **{"x-request-id": "rq-401"}))
        with pytest.raises(ApiError) as info:
            core.request(get())
    assert m.call_count == 2 and len(handed) == 2
    text = str(info.value)
    assert info.value.status == 401 and not info.value.retryable
    assert "still refused after one token refresh" in text and "rq-401" in text
    assert "tok-old-123456" not in text and "tok-new-654321" not in text


def test_401_with_a_static_credential_is_not_retried() -> None:
    core, _ = make_core(auth=StaticHeaderAuth("Authorization", "Bearer static-token-abcdef"))
    with rm.Mocker() as m:
        m.get(URL, **err(401))
        with pytest.raises(ApiError) as info:
            core.request(get())
    assert m.call_count == 1 and info.value.status == 401


def test_unauthenticated_request_sends_no_auth_and_does_not_refresh() -> None:
    auth, handed = token_auth(["t-1234567890"], TokenCache())
    core, _ = make_core(auth=auth)
    with rm.Mocker() as m:
        m.get(URL, **err(401))
        with pytest.raises(ApiError):
            core.request(get(authenticated=False))
    assert handed == [] and "Authorization" not in m.last_request.headers and m.call_count == 1


# ----------------------------------------------------------------------------------------------
# Responses and bodies
# ----------------------------------------------------------------------------------------------


def test_success_returns_body_headers_and_request_id() -> None:
    core, _ = make_core()
    with rm.Mocker() as m:
        m.get(URL, json={"a": 1}, headers={"X-Request-ID": "abc", "Location": "/next"})
        resp = core.request(get())
    assert resp.body == {"a": 1} and resp.request_id == "abc"
    assert resp.headers["location"] == "/next" and resp.headers.get("LOCATION") == "/next"
    assert "Location" in resp.headers and isinstance(resp.headers, dict)
    assert m.last_request.headers["Accept"] == "application/json"
    assert m.last_request.headers["User-Agent"] == "tests"


def test_malformed_json_on_get_is_retried_then_fails_with_an_excerpt() -> None:
    core, _ = make_core(max_attempts=2)
    with rm.Mocker() as m:
        m.get(URL, text='{"items": [1, 2', status_code=200, headers={"x-request-id": "rid-7"})
        with pytest.raises(ApiError) as info:
            core.request(get())
    assert m.call_count == 2
    text = str(info.value)
    assert "not valid JSON" in text and '{"items": [1, 2' in text and "rid-7" in text


def test_malformed_json_on_post_is_ambiguous_and_not_retried() -> None:
    core, _ = make_core()
    with rm.Mocker() as m:
        m.post(URL, text="<html>proxy error</html>", status_code=200)
        with pytest.raises(ApiError) as info:
            core.request(post())
    assert m.call_count == 1 and info.value.ambiguous and "<html>proxy error</html>" in str(info.value)






def test_empty_error_body_is_described() -> None:
    core, _ = make_core()
    with rm.Mocker() as m:
        m.get(URL, text="", status_code=404)
        with pytest.raises(ApiError) as info:
            core.request(get())
    assert "(empty body)" in str(info.value)


def test_empty_success_body_is_none() -> None:
    core, _ = make_core()
    with rm.Mocker() as m:
        m.delete(URL, text="", status_code=204)
        resp = core.request(ApiRequest("DELETE", URL, "delete thing"))
    assert resp.status == 204 and resp.body is None


def test_allowed_status_is_returned_instead_of_raised() -> None:
    core, _ = make_core()
    with rm.Mocker() as m:
        m.get(URL, **err(404, "no run yet"))
        resp = core.request(get(allow_statuses=frozenset({404})))
    assert resp.status == 404 and resp.body == {"error": {"message": "no run yet"}}


def test_error_in_a_2xx_body_is_raised_and_not_retried() -> None:
    core, _ = make_core()
    with rm.Mocker() as m:
        m.get(URL, json={"success": False, "error": "Project is archived"})
        with pytest.raises(ApiError) as info:
            core.request(get())
    assert m.call_count == 1 and "Project is archived" in str(info.value) and info.value.status == 200


def test_query_parameters_drop_none_and_spell_booleans_in_lower_case() -> None:
    core, _ = make_core()
    with rm.Mocker() as m:
        m.get(URL, json={})
        core.request(get(params={"flag": True, "off": False, "skip": None, "limit": 5}))
    assert m.last_request.qs == {"flag": ["true"], "off": ["false"], "limit": ["5"]}


def test_headers_factory_runs_before_every_attempt() -> None:
    core, _ = make_core()
    counter = iter(range(100))
    with rm.Mocker() as m:
        m.get(URL, [err(503), ok()])
        core.request(get(headers_factory=lambda: {"x-correlation-id": f"c-{next(counter)}"}))
    assert [r.headers["x-correlation-id"] for r in m.request_history] == ["c-0", "c-1"]


def test_sync_session_is_pooled_and_keeps_no_cookies() -> None:
    core, _ = make_core()
    assert core.session is core.session
    with rm.Mocker() as m:
        m.get(URL, json={}, headers={"Set-Cookie": "sticky=abc; Path=/"})
        core.request(get())
        core.request(get())
    assert "Cookie" not in m.request_history[1].headers
    core.close()













# ----------------------------------------------------------------------------------------------
# Retry-After parsing, HTTPS rule, settings
# ----------------------------------------------------------------------------------------------


def test_parse_retry_after() -> None:
    now = time.time()
    future = email.utils.formatdate(now + 90, usegmt=True)
    past = email.utils.formatdate(now - 90, usegmt=True)
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(future, now=now) == pytest.approx(90, abs=1)
    assert parse_retry_after(past, now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("inf") is None and parse_retry_after("nan") is None
    assert parse_retry_after(None) is None and parse_retry_after("") is None


@pytest.mark.parametrize("url", ["https://api.acme.test", "https://api.acme.test/", "http://127.0.0.1:8080",
                                 "http://localhost:1/", "http://[::1]:9/", "http://127.1.2.3"])
def test_require_https_accepts_https_and_loopback(url: str) -> None:
    assert require_https(url, conn_id="c") == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://api.acme.test", "http://127.example.com", "http://10.0.0.1",
                                 "http://localhost.example.com"])
def test_require_https_rejects_plain_http_to_other_hosts(url: str) -> None:
    with pytest.raises(AirflowException, match=r"Connection 'my_conn': host .* must use https://"):
        require_https(url, conn_id="my_conn")


@pytest.mark.parametrize("url", ["api.acme.test", "ftp://api.acme.test", "https://", ""])
def test_require_https_rejects_non_urls(url: str) -> None:
    with pytest.raises(AirflowException, match=r"token_url .* is not an absolute http"):
        require_https(url, conn_id="c", field_name="token_url")


def test_is_loopback_host() -> None:
    assert is_loopback_host("localhost") and is_loopback_host("127.0.0.1") and is_loopback_host("::1")
    assert not is_loopback_host("127.0.0.1.nip.io") and not is_loopback_host(None)
    assert not is_loopback_host("0.0.0.0")


def test_settings_defaults_and_overrides_from_extra() -> None:
    assert HttpSettings.from_extra({}, "c") == HttpSettings()
    settings = HttpSettings.from_extra(
        {"connect_timeout": "2.5", "read_timeout": 30, "max_attempts": "3", "max_retry_seconds": 60.0,
         "backoff_base": 0.1, "backoff_max": 5, "retry_after_max": "10", "project": "ignored",
         "ca_bundle": "/etc/ssl/corp.pem"}, "c")
    assert settings == HttpSettings(connect_timeout=2.5, read_timeout=30.0, max_attempts=3,
                                    max_retry_seconds=60.0, backoff_base=0.1, backoff_max=5.0,
                                    retry_after_max=10.0, verify="/etc/ssl/corp.pem")
    assert isinstance(settings.max_attempts, int)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("read_timeout", "soon", "must be a number"),
    ("read_timeout", 0, "must be > 0"),
    ("connect_timeout", -1, "must be > 0"),
    ("read_timeout", "nan", "must be a number"),
    ("read_timeout", "inf", "must be a number"),
    ("read_timeout", True, "must be a number"),
    ("max_attempts", 2.5, "must be an integer"),
    ("max_attempts", "two", "must be an integer"),
    ("max_attempts", [3], "must be an integer"),
])
def test_settings_reject_bad_values_clearly(key: str, value: Any, expected: str) -> None:
    with pytest.raises(AirflowException, match=rf"Connection 'my_conn': extra '{key}' {expected}, got"):
        HttpSettings.from_extra({key: value}, "my_conn")


def test_settings_tls_options(caplog: pytest.LogCaptureFixture) -> None:
    assert HttpSettings.from_extra({"verify_ssl": "false"}, "c").verify is False
    assert "disables TLS certificate verification" in caplog.text
    assert HttpSettings.from_extra({"verify_ssl": False}, "c").verify is False
    assert HttpSettings.from_extra({"verify_ssl": "true"}, "c").verify is True
    with pytest.raises(AirflowException, match="'verify_ssl' must be true or false"):
        HttpSettings.from_extra({"verify_ssl": "maybe"}, "c")
    with pytest.raises(AirflowException, match="'ca_bundle' must be the path"):
        HttpSettings.from_extra({"ca_bundle": ["a"]}, "c")




def test_env_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                 "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("https://api.acme.test/x") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.corp,localhost")
    assert env_proxy("https://api.acme.test/x") == "http://proxy.corp:3128"
    assert env_proxy("https://svc.internal.corp:8443/x") is None
    assert env_proxy("http://api.acme.test/x") is None  # no HTTP_PROXY


# ----------------------------------------------------------------------------------------------
# Async path against a local aiohttp server
# ----------------------------------------------------------------------------------------------


class Scripted:
    """An aiohttp handler answering from a script of (status, body, headers); records requests."""

    def __init__(self, *answers: tuple[int, Any, dict[str, str]]) -> None:
        self.answers = list(answers)
        self.seen: list[web.Request] = []
        self.queries: list[str] = []
        self.cookies: list[str | None] = []

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        self.queries.append(request.query_string)
        self.cookies.append(request.headers.get("Cookie"))
        status, body, headers = self.answers[min(len(self.seen), len(self.answers)) - 1]
        if isinstance(body, bytes):
            return web.Response(status=status, body=body, headers=headers)
        return web.json_response(body, status=status, headers=headers)


async def serve(handler: Any, path: str = "/v1/things/7") -> TestServer:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", path, endpoint)
    server = TestServer(app)
    await server.start_server()
    return server


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_async_retryable_status_is_retried(status: int) -> None:
    handler = Scripted((status, {"error": {"message": "busy"}}, {"Retry-After": "3"}), (200, {"id": 7}, {}))
    server = await serve(handler)
    try:
        core, fake = make_core()
        resp = await core.arequest(get(str(server.make_url("/v1/things/7"))))
    finally:
        await server.close()
    assert resp.body == {"id": 7} and len(handler.seen) == 2 and fake.waits == [3.0]


@pytest.mark.asyncio
async def test_async_retry_after_http_date_is_honoured() -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    date = email.utils.format_datetime(when, usegmt=True)
    handler = Scripted((503, {}, {"Retry-After": date}), (200, {}, {}))
    server = await serve(handler)
    try:
        core, fake = make_core()
        await core.arequest(get(str(server.make_url("/v1/things/7"))))
    finally:
        await server.close()
    assert len(handler.seen) == 2 and len(fake.waits) == 1 and 28 <= fake.waits[0] <= 30.5


@pytest.mark.asyncio
async def test_async_same_policy_for_non_idempotent_post() -> None:
    handler = Scripted((503, {"error": {"message": "busy"}}, {}), (200, {}, {}))
    server = await serve(handler)
    try:
        core, fake = make_core()
        with pytest.raises(ApiError) as info:
            await core.arequest(post(str(server.make_url("/v1/things/7"))))
        handler.answers = [(429, {}, {"Retry-After": "1"}), (201, {"id": 1}, {})]
        handler.seen.clear()
        resp = await core.arequest(post(str(server.make_url("/v1/things/7"))))
    finally:
        await server.close()
    assert info.value.ambiguous and info.value.attempts == 1
    assert resp.status == 201 and len(handler.seen) == 2 and fake.waits == [1.0]


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 500])
async def test_async_other_statuses_are_not_retried(status: int) -> None:
    handler = Scripted((status, {"error": {"message": "nope"}}, {"x-request-id": "ar-1"}))
    server = await serve(handler)
    try:
        core, fake = make_core()
        with pytest.raises(ApiError) as info:
            await core.arequest(get(str(server.make_url("/v1/things/7"))))
    finally:
        await server.close()
    assert len(handler.seen) == 1 and fake.waits == []
    assert info.value.status == status and "nope" in str(info.value) and "ar-1" in str(info.value)


@pytest.mark.asyncio
async def test_async_total_time_is_bounded() -> None:
    handler = Scripted((429, {}, {"Retry-After": "40"}))
    server = await serve(handler)
    try:
        core, fake = make_core(max_attempts=10, max_retry_seconds=100.0)
        with pytest.raises(ApiError):
            await core.arequest(get(str(server.make_url("/v1/things/7"))))
    finally:
        await server.close()
    assert len(handler.seen) == 3 and fake.waits == [40.0, 40.0]


@pytest.mark.asyncio
async def test_async_401_refreshes_once_then_fails_clearly() -> None:
    handler = Scripted((401, {"error": {"message": "expired"}}, {}), (200, {"ok": 1}, {}))
    server = await serve(handler)
    try:
        auth, handed = token_auth(["tok-a-1234567", "tok-b-7654321", "tok-c-000000"], TokenCache())
        core, _ = make_core(auth=auth)
        url = str(server.make_url("/v1/things/7"))
        resp = await core.arequest(get(url))
        assert resp.body == {"ok": 1}
        sent = [r.headers["Authorization"] for r in handler.seen]
        assert sent == ["Bearer tok-a-1234567", "Bearer tok-b-7654321"]
        handler.answers = [(401, {"error": {"message": "expired"}}, {})]
        handler.seen.clear()
        with pytest.raises(ApiError) as info:
            await core.arequest(get(url))
    finally:
        await server.close()
    assert len(handler.seen) == 2 and "still refused after one token refresh" in str(info.value)
    assert not any(t in str(info.value) for t in handed)


@pytest.mark.asyncio
async def test_async_connection_refused() -> None:
    core, fake = make_core(max_attempts=3)
    with pytest.raises(ApiError) as info:
        await core.arequest(post(f"http://127.0.0.1:{closed_port()}/x"))
    assert info.value.status is None and info.value.attempts == 3 and len(fake.waits) == 2
    assert "could not connect" in str(info.value) and not info.value.ambiguous


async def serve_slow() -> tuple[TestServer, asyncio.Event]:
    """A server whose answers wait until the returned event is set (set it before closing)."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    return await serve(slow), release


async def requests_in_flight(count: int) -> None:
    """Wait until ``count`` requests of this loop are waiting for their answer (read deadline set)."""
    loop = asyncio.get_running_loop()
    for _ in range(1000):
        entry = _http._loop_sessions.get(loop)
        if entry is not None and len(entry.deadlines._due) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {count} requests in flight after 10 s")


@pytest.mark.asyncio
async def test_async_read_timeout() -> None:
    server, release = await serve_slow()
    try:
        core, _ = make_core(max_attempts=2, read_timeout=0.1)
        url = str(server.make_url("/v1/things/7"))
        with pytest.raises(ApiError) as get_info:
            await core.arequest(get(url))
        with pytest.raises(ApiError) as post_info:
            await core.arequest(post(url))
    finally:
        release.set()
        await server.close()
    assert get_info.value.attempts == 2
    assert "no answer within the read timeout of 0.1 s" in str(get_info.value)
    assert post_info.value.attempts == 1 and post_info.value.ambiguous


@pytest.mark.asyncio
async def test_async_read_deadlines_use_one_timer_per_loop_not_one_per_request() -> None:
    """Requests register their read deadline with the loop's watchdog: no aiohttp read timer per
    request, and with equal timeouts the watchdog's one timer is armed once for many requests."""
    server = await serve(Scripted(*[(200, {"ok": i}, {}) for i in range(60)]))
    loop = asyncio.get_running_loop()
    scheduled: list[str] = []
    original = loop.call_at

    def counting_call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        scheduled.append(getattr(callback, "__qualname__", repr(callback)))
        return original(when, callback, *args, **kwargs)

    try:
        core, _ = make_core(read_timeout=30.0)
        url = str(server.make_url("/v1/things/7"))
        async with shared_session_scope():
            entry = _http._loop_sessions[loop]
            await core.arequest(get(url))  # the connection is open: only requests are counted now
            loop.call_at = counting_call_at  # type: ignore[method-assign]
            try:
                for _ in range(20):
                    await core.arequest(get(url))
                await asyncio.gather(*(core.arequest(get(url)) for _ in range(30)))
            finally:
                loop.call_at = original  # type: ignore[method-assign]
            assert entry.deadlines._due == {} and entry.deadlines._expired == set()
            timer = entry.deadlines._timer
            assert timer is not None and not timer.cancelled()
        assert entry.deadlines._timer is None and timer.cancelled()  # dropped with the session
    finally:
        await server.close()
    # (the test server in the same loop schedules its own timers: only the client's are checked)
    client_timers = [name for name in scheduled if "_on_read_timeout" in name or "TimeoutHandle" in name]
    assert not client_timers, scheduled
    assert scheduled.count("_ReadDeadlines._fire") <= 1, scheduled


@pytest.mark.asyncio
async def test_async_shorter_read_timeout_fires_before_a_longer_one_already_armed() -> None:
    server, release = await serve_slow()
    try:
        patient, _ = make_core(max_attempts=1, read_timeout=30.0)
        hasty, _ = make_core(max_attempts=1, read_timeout=0.2)
        url = str(server.make_url("/v1/things/7"))
        async with shared_session_scope():
            long_wait = asyncio.ensure_future(patient.arequest(get(url)))
            await requests_in_flight(1)  # the 30 s deadline is armed first
            started = time.monotonic()
            with pytest.raises(ApiError) as info:
                await hasty.arequest(get(url))
            took = time.monotonic() - started
            assert not long_wait.done()  # the other request keeps waiting: its deadline is later
            long_wait.cancel()
            with pytest.raises(asyncio.CancelledError):
                await long_wait
    finally:
        release.set()
        await server.close()
    assert "no answer within the read timeout of 0.2 s" in str(info.value) and info.value.status is None
    assert took < 5.0  # not the 30 s of the deadline armed before it


@pytest.mark.asyncio
async def test_async_cancelling_a_waiting_request_is_never_turned_into_a_read_timeout() -> None:
    """A trigger cancelled by the triggerer (or a user kill) while its poll is in flight must end
    cancelled, not report a timeout or retry."""
    server, release = await serve_slow()
    try:
        core, fake = make_core(max_attempts=3, read_timeout=30.0)
        task = asyncio.ensure_future(core.arequest(get(str(server.make_url("/v1/things/7")))))
        await requests_in_flight(1)  # the request is waiting for its answer
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        entry = _http._loop_sessions[asyncio.get_running_loop()]
        assert entry.deadlines._due == {} and fake.waits == []  # not retried
    finally:
        release.set()
        await server.close()


@pytest.mark.asyncio
async def test_read_deadlines_tell_their_cancellation_from_anyone_elses() -> None:
    import sys

    deadlines = _http._ReadDeadlines()
    never = asyncio.get_running_loop().create_future()

    async def waiting(also_cancelled_elsewhere: bool) -> str:
        task = deadlines.watch(0.05)
        try:
            await never
        except asyncio.CancelledError:
            if also_cancelled_elsewhere:
                assert task is not None
                task.cancel()  # a second request, e.g. the triggerer stopping the trigger
            if deadlines.expired(task):
                return "timeout"
            raise
        finally:
            deadlines.unwatch(task)
        return "answer"

    assert await waiting(False) == "timeout"
    cancelled_too = asyncio.ensure_future(waiting(True))
    if sys.version_info >= (3, 11):  # 3.10 does not count cancellation requests
        with pytest.raises(asyncio.CancelledError):
            await cancelled_too
    else:  # pragma: no cover
        await asyncio.gather(cancelled_too, return_exceptions=True)
    assert deadlines._due == {} and deadlines._expired == set()
    deadlines.close()
    assert deadlines._timer is None


@pytest.mark.asyncio
async def test_async_malformed_and_undecodable_bodies() -> None:
    handler = Scripted((200, b'{"status": "Runn', {"Content-Type": "application/json"}))
    server = await serve(handler)
    try:
        core, _ = make_core(max_attempts=1)
        url = str(server.make_url("/v1/things/7"))
        with pytest.raises(ApiError) as info:
            await core.arequest(get(url))
        assert "not valid JSON" in str(info.value) and '{"status": "Runn' in str(info.value)
        handler.answers = [(502, b"\xff\xfe bad gateway \xc3", {"Content-Type": "text/plain; charset=utf-8"})]
        with pytest.raises(ApiError) as info:
            await core.arequest(post(url))
        assert info.value.status == 502 and "bad gateway" in str(info.value)
    finally:
        await server.close()


@pytest.mark.asyncio
async def test_async_query_and_headers_match_the_sync_path() -> None:
    handler = Scripted((200, {}, {"X-Request-ID": "q1", "Location": "/there"}))
    server = await serve(handler)
    try:
        core, _ = make_core()
        resp = await core.arequest(get(str(server.make_url("/v1/things/7")),
                                       params={"flag": True, "off": False, "skip": None, "limit": 5}))
    finally:
        await server.close()
    assert handler.queries == ["flag=true&off=false&limit=5"]
    assert resp.request_id == "q1" and resp.headers["LOCATION"] == "/there" and resp.headers.get("location")


@pytest.mark.asyncio
async def test_async_session_is_shared_per_loop_and_closed_after_the_last_scope() -> None:
    handler = Scripted((200, {"ok": True}, {"Set-Cookie": "sticky=1; Path=/"}))
    server = await serve(handler)
    try:
        core, _ = make_core()
        url = str(server.make_url("/v1/things/7"))
        before = async_sessions_created()
        async with shared_session_scope() as session:
            results = await asyncio.gather(*(core.arequest(get(url)) for _ in range(40)))
            async with shared_session_scope() as inner:
                assert inner is session
            assert not session.closed
        assert session.closed
        assert async_sessions_created() == before + 1
        assert len(results) == 40 and len(handler.seen) == 40
        assert handler.cookies == [None] * 40  # the shared session keeps no cookies between callers

        # without an outer scope, concurrent calls still share one session, closed afterwards
        await asyncio.gather(*(core.arequest(get(url)) for _ in range(20)))
        assert async_sessions_created() == before + 2
        entry = _http._loop_sessions[asyncio.get_running_loop()]
        assert entry.users == 0 and entry.session.closed
    finally:
        await server.close()


def test_each_event_loop_gets_its_own_session() -> None:
    sessions = []

    async def grab() -> None:
        async with shared_session_scope() as session:
            sessions.append(session)

    asyncio.run(grab())
    asyncio.run(grab())
    assert len(sessions) == 2 and sessions[0] is not sessions[1] and all(s.closed for s in sessions)


@pytest.mark.asyncio
async def test_async_path_uses_the_environment_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append(str(request.url))
        return web.json_response({"via": "proxy"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    server = TestServer(app)
    await server.start_server()
    try:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", str(server.make_url("")).rstrip("/"))
        core, _ = make_core(max_attempts=1)
        resp = await core.arequest(get("http://api.acme.invalid/v1/things/7"))
    finally:
        await server.close()
    assert resp.body == {"via": "proxy"} and seen == ["http://api.acme.invalid/v1/things/7"]


def test_request_json_body_is_sent(requests_mock: rm.Mocker) -> None:
    core, _ = make_core()
    requests_mock.post(URL, json={"id": 1}, status_code=201)
    core.request(post())
    assert json.loads(requests_mock.last_request.text) == {"name": "x"}


def test_requests_exception_types_are_classified() -> None:
    core, fake = make_core(max_attempts=3)
    with rm.Mocker() as m:
        m.get(URL, exc=requests.exceptions.ConnectTimeout("connect timed out"))
        with pytest.raises(ApiError) as info:
            core.request(get())
        assert m.call_count == 3 and "could not connect" in str(info.value)
        m.post(URL, exc=requests.exceptions.ConnectTimeout("connect timed out"))
        with pytest.raises(ApiError) as info:
            core.request(post())
        assert not info.value.ambiguous and info.value.attempts == 3
        m.post(URL, exc=requests.exceptions.ChunkedEncodingError("truncated"))
        with pytest.raises(ApiError) as info:
            core.request(post())
        assert info.value.ambiguous and info.value.attempts == 1
    assert len(fake.waits) == 4
