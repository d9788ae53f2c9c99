"""CogniteHook: connection, OAuth client credentials, token cache, 401 refresh, test_connection.

Sync calls go through requests-mock (a real threaded server for the thread-safety test);
async calls against a local aiohttp ``TestServer`` acting as both the token endpoint and CDF.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
import pytest_asyncio
import requests_mock as rm
from aiohttp import web
from aiohttp.test_utils import TestServer

from airflow_provider_pipelines._compat import NATIVE_ASYNC_CONNECTION_LOOKUP, AirflowException, BaseHook
from airflow_provider_pipelines.get_provider_info import connection_ui
from airflow_provider_pipelines.hooks import _base
from airflow_provider_pipelines.hooks._auth import TOKEN_CACHE
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.cognite import CDF_VERSIONS, CogniteHook, token_lifetime

HOST = "https://westeurope-1.cognitedata.com"
TOKEN_URL = "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token"
API = f"{HOST}/api/v1/projects/my-project"
PROBE = f"{API}/context/entitymatching/pipelines"
RUN = f"{API}/context/entitymatching/pipelines/5/runs/9"
CLIENT_SECRET = "cl1ent-s3cret-VALUE-xyz"
TOKEN_1 = "eyJ0eXAiOiJKV1QifQ.first-access-token.sig"
TOKEN_2 = "eyJ0eXAiOiJKV1QifQ.second-access-token.sig"
STATIC = "static-bearer-token-0123456789"


#: Before Airflow 3.3.2 the async lookup runs the sync one in a worker thread (that side:
#: tests/unit/test_version_compat.py).
native_async_lookup_only = pytest.mark.skipif(
    not NATIVE_ASYNC_CONNECTION_LOOKUP,
    reason="non-blocking connection lookup exists from Airflow 3.3.2")


@pytest.fixture
def cognite(conn_env: Callable[..., None]) -> Callable[..., CogniteHook]:
    """Create the ``cognite_default`` connection (client credentials unless overridden) and a hook."""

    def make(conn_id: str = "cognite_default", **overrides: Any) -> CogniteHook:
        extra = {"project": "my-project", "token_url": TOKEN_URL, "backoff_base": 0.001, "max_attempts": 3}
        extra.update(overrides.pop("extra", {}))
        fields = {"conn_type": "cognite", "host": HOST, "login": "client-id-1", "password": CLIENT_SECRET,
                  "extra": {k: v for k, v in extra.items() if v is not None}}
        fields.update(overrides)
        conn_env(conn_id, **{k: v for k, v in fields.items() if v is not None})
        return CogniteHook(conn_id)

    return make


def token_response(token: str = TOKEN_1, expires_in: Any = 3599) -> dict[str, Any]:
    return {"json": {"token_type": "Bearer", "expires_in": expires_in, "access_token": token}}


def cdf_error(status: int, message: str, request_id: str = "cdf-req-1") -> dict[str, Any]:
    return {"status_code": status, "json": {"error": {"code": status, "message": message}},
            "headers": {"x-request-id": request_id}}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------------------------
# Connection
# ----------------------------------------------------------------------------------------------


def test_hook_metadata() -> None:
    assert CogniteHook.conn_type == "cognite" and CogniteHook.default_conn_name == "cognite_default"
    assert CogniteHook.conn_name_attr == "cognite_conn_id"
    assert CogniteHook.get_ui_field_behaviour() == connection_ui("cognite")
    assert CogniteHook().cognite_conn_id == "cognite_default"
    assert CogniteHook(cognite_conn_id="other").conn_id == "other"


def test_connection_resolves_base_url_project_and_scope(cognite: Callable[..., CogniteHook]) -> None:
    hook = cognite(host="westeurope-1.cognitedata.com/", extra={"project": "my project/ä"})
    resolved = hook.resolved
    assert resolved.base_url == f"{HOST}/api/v1/projects/my%20project%2F%C3%A4"
    assert resolved.options["project"] == "my project/ä" and resolved.options["host"] == HOST
    assert resolved.options["scopes"] == f"{HOST}/.default"
    assert resolved.http.max_attempts == 3


@pytest.mark.parametrize(("scopes", "expected"), [
    (["https://a/.default", "offline"], "https://a/.default offline"),
    ("https://a/.default, https://b/.default", "https://a/.default https://b/.default"),
])
def test_scopes_from_extra(cognite: Callable[..., CogniteHook], scopes: Any, expected: str) -> None:
    assert cognite(extra={"scopes": scopes}).resolved.options["scopes"] == expected


@pytest.mark.parametrize(("overrides", "message"), [
    ({"host": None}, "Connection 'cognite_default' has no host. Set it to your cluster URL"),
    ({"extra": {"project": None}}, "has no project in its extra. Add {\"project\""),
    ({"login": None}, "has no client id (login)"),
    ({"password": None}, "has no client secret (password)"),
    ({"extra": {"token_url": None}}, "has no token_url in its extra"),
    ({"host": "http://westeurope-1.cognitedata.com"}, "must use https://"),
    ({"extra": {"token_url": "http://login.test/t"}}, "token_url 'http://login.test/t' must use https"),
    ({"extra": {"read_timeout": "fast"}}, "extra 'read_timeout' must be a number"),
])
def test_bad_connections_fail_before_any_request(
    cognite: Callable[..., CogniteHook], overrides: dict[str, Any], message: str
) -> None:
    hook = cognite(**overrides)
    with rm.Mocker() as m, pytest.raises(AirflowException) as info:
        hook.get_pipeline_run(1, 2)
    assert message in str(info.value) and m.call_count == 0
    assert CLIENT_SECRET not in str(info.value)


def test_secrets_are_masked_when_the_connection_is_read(
    cognite: Callable[..., CogniteHook], monkeypatch: pytest.MonkeyPatch
) -> None:
    masked: list[str] = []
    monkeypatch.setattr(_base, "mask_secret", lambda value: masked.append(value))
    cognite().resolved  # noqa: B018
    assert CLIENT_SECRET in masked
    masked.clear()
    cognite("static_conn", extra={"token": STATIC}).resolved  # noqa: B018
    assert STATIC in masked


# ----------------------------------------------------------------------------------------------
# Tokens
# ----------------------------------------------------------------------------------------------


def test_client_credentials_token_request_and_bearer_header(cognite: Callable[..., CogniteHook]) -> None:
    hook = cognite()
    with rm.Mocker() as m:
        token = m.post(TOKEN_URL, **token_response())
        run = m.get(RUN, json={"jobId": 9, "status": "Running"})
        assert hook.get_pipeline_run(5, 9)["status"] == "Running"
        hook.get_pipeline_run(5, 9)
    assert token.call_count == 1 and run.call_count == 2
    form = parse_qs(token.last_request.text)
    assert form == {"grant_type": ["client_credentials"], "client_id": ["client-id-1"],
                    "client_secret": [CLIENT_SECRET], "scope": [f"{HOST}/.default"]}
    assert token.last_request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in token.last_request.headers
    assert run.last_request.headers["Authorization"] == f"Bearer {TOKEN_1}"


def test_token_is_shared_by_hooks_of_the_same_credential(cognite: Callable[..., CogniteHook]) -> None:
    first, second = cognite(), cognite("cognite_other")
    with rm.Mocker() as m:
        token = m.post(TOKEN_URL, **token_response())
        m.get(PROBE, json={"items": []})
        first.test_connection()
        second.test_connection()
    assert token.call_count == 1


def test_cdf_version_header_follows_api_maturity(cognite: Callable[..., CogniteHook]) -> None:
    hook = cognite()
    with rm.Mocker() as m:
        m.post(TOKEN_URL, **token_response())
        em = m.get(RUN, json={"jobId": 9, "status": "Queued"})
        eq = m.get(f"{API}/advancedjoins/estimatequality/abc-123",
                   json={"jobId": "abc-123", "status": "Queued"})
        hook.get_pipeline_run(5, 9)
        hook.get_estimate_quality("abc-123")
    assert em.last_request.headers["cdf-version"] == "20230101-beta"
    assert CDF_VERSIONS["entity_matching_pipelines"] == "20230101-beta"
    assert eq.last_request.headers["cdf-version"] == CDF_VERSIONS["advanced_joins"] == "20230101-alpha"
    assert CDF_VERSIONS["extraction_pipelines"] is None  # stable: the default, no header


def test_401_refreshes_the_token_once_and_retries(cognite: Callable[..., CogniteHook]) -> None:
    hook = cognite()
    with rm.Mocker() as m:
        token = m.post(TOKEN_URL, [token_response(TOKEN_1), token_response(TOKEN_2)])
        run = m.get(RUN,
                    [cdf_error(401, "Unauthorized"), {"json": {"jobId": 9, "status": "Completed"}}])
        assert hook.get_pipeline_run(5, 9)["status"] == "Completed"
    assert token.call_count == 2
    sent = [r.headers["Authorization"] for r in run.request_history]
    assert sent == [f"Bearer {TOKEN_1}", f"Bearer {TOKEN_2}"]


def test_second_401_fails_with_a_clear_error_and_no_secret(cognite: Callable[..., CogniteHook]) -> None:
    hook = cognite()
    with rm.Mocker() as m:
        token = m.post(TOKEN_URL, [token_response(TOKEN_1), token_response(TOKEN_2)])
        run = m.get(RUN, **cdf_error(401, "Unauthorized", "r-401"))
        with pytest.raises(ApiError) as info:
            hook.get_pipeline_run(5, 9)
    assert token.call_count == 2 and run.call_count == 2
    text = str(info.value)
    assert text.startswith(
        "Cognite API: get entity matching pipeline run (pipeline 5 run 9) failed: HTTP 401")
    assert "still refused after one token refresh" in text and "r-401" in text
    for secret in (CLIENT_SECRET, TOKEN_1, TOKEN_2):
        assert secret not in text


def test_token_endpoint_failure_is_raised_not_retried_on_the_api(cognite: Callable[..., CogniteHook]) -> None:
    hook = cognite()
    body = {"error": "invalid_client",
            "error_description": f"AADSTS7000215: Invalid client secret {CLIENT_SECRET}"}
    with rm.Mocker() as m:
        token = m.post(TOKEN_URL, status_code=401, json=body, headers={"x-ms-request-id": "ms-req-1"})
        run = m.get(RUN, json={})
        with pytest.raises(ApiError) as info:
            hook.get_pipeline_run(5, 9)
    assert token.call_count == 1 and run.call_count == 0
    text = str(info.value)
    assert "request an OAuth token (client client-id-1 at https://login.microsoftonline.com" in text
    assert "HTTP 401: invalid_client: AADSTS7000215" in text and "request id ms-req-1" in text
    assert CLIENT_SECRET not in text


def test_ten_threads_cause_one_token_request(cognite: Callable[..., CogniteHook]) -> None:
    hits = {"token": 0, "api": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                hits["token"] += 1
            time.sleep(0.05)  # a slow token endpoint widens the race
            self._send({"access_token": TOKEN_1, "expires_in": 3600})

        def do_GET(self) -> None:
            with lock:
                hits["api"] += 1
            self._send({"jobId": 9, "status": "Running"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        hook = cognite(host=base, extra={"token_url": f"{base}/tenant/oauth2/v2.0/token"})
        barrier = threading.Barrier(10)
        results: list[str] = []

        def worker() -> None:
            barrier.wait(5)
            results.append(hook.get_pipeline_run(5, 9)["status"])

        workers = [threading.Thread(target=worker) for _ in range(10)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(10)
    finally:
        server.shutdown()
        server.server_close()
    assert results == ["Running"] * 10
    assert hits == {"token": 1, "api": 10}


@pytest.mark.parametrize(("raw", "expected"), [
    (3599, 3599.0), ("3599", 3599.0), (None, 3600.0), ("soon", 3600.0), (0, 3600.0), (-5, 3600.0),
    ("inf", 3600.0), ("nan", 3600.0),
])
def test_token_lifetime(raw: Any, expected: float) -> None:
    assert token_lifetime(raw) == expected


def test_token_response_without_access_token_is_a_clear_error(cognite: Callable[..., CogniteHook]) -> None:
    hook = cognite()
    with rm.Mocker() as m:
        m.post(TOKEN_URL, json={"token_type": "Bearer"})
        ok, message = hook.test_connection()
    assert not ok and message == f"The token endpoint {TOKEN_URL} answered without an access_token."


def test_static_token_is_used_without_a_token_request(cognite: Callable[..., CogniteHook]) -> None:
    hook = cognite(login=None, password=None, extra={"token": STATIC, "token_url": None})
    with rm.Mocker() as m:
        probe = m.get(PROBE, json={"items": []})
        assert hook.test_connection() == (True, "Connected to CDF project 'my-project'.")
    assert probe.last_request.headers["Authorization"] == f"Bearer {STATIC}"
    assert probe.last_request.qs == {"limit": ["1"]}
    assert probe.last_request.headers["cdf-version"] == "20230101-beta"
    assert TOKEN_CACHE.fetches == {}


# ----------------------------------------------------------------------------------------------
# test_connection
# ----------------------------------------------------------------------------------------------


def test_test_connection_success(cognite: Callable[..., CogniteHook]) -> None:
    hook = cognite()
    with rm.Mocker() as m:
        token = m.post(TOKEN_URL, **token_response())
        probe = m.get(PROBE, json={"items": [{"id": 1}]})
        assert hook.test_connection() == (True, "Connected to CDF project 'my-project'.")
    assert token.call_count == 1 and probe.call_count == 1


def test_test_connection_token_endpoint_refuses(cognite: Callable[..., CogniteHook]) -> None:
    hook = cognite()
    with rm.Mocker() as m:
        m.post(TOKEN_URL, status_code=401, headers={"x-ms-request-id": "ms-77"},
               json={"error": "invalid_client",
                     "error_description": "AADSTS7000215: Invalid client secret provided."})
        probe = m.get(PROBE, json={})
        ok, message = hook.test_connection()
    assert not ok and probe.call_count == 0
    assert message.startswith(
        "The token endpoint refused the client credentials (HTTP 401): check the client id")
    assert "AADSTS7000215: Invalid client secret provided." in message and "ms-77" in message
    assert CLIENT_SECRET not in message


def test_test_connection_token_endpoint_bad_scope(cognite: Callable[..., CogniteHook]) -> None:
    hook = cognite(extra={"scopes": "https://wrong/.default"})
    with rm.Mocker() as m:
        m.post(TOKEN_URL, status_code=400,
               json={"error": "invalid_scope", "error_description": "AADSTS70011: bad"})
        ok, message = hook.test_connection()
    assert not ok and "refused the client credentials (HTTP 400)" in message
    assert "'https://wrong/.default'" in message and "invalid_scope: AADSTS70011: bad" in message


@pytest.mark.parametrize("status", [403, 404])
def test_test_connection_unknown_project(cognite: Callable[..., CogniteHook], status: int) -> None:
    hook = cognite()
    with rm.Mocker() as m:
        m.post(TOKEN_URL, **token_response())
        m.get(PROBE, **cdf_error(
            status, "Resource not found. This may also be due to insufficient access rights.", "cdf-404"))
        ok, message = hook.test_connection()
    assert not ok
    assert message.startswith(f"CDF project 'my-project' is unknown, or this identity has no access to it "
                              f"(HTTP {status};")
    assert "Resource not found" in message and "cdf-404" in message and TOKEN_1 not in message


def test_test_connection_rejected_token(cognite: Callable[..., CogniteHook]) -> None:
    hook = cognite()
    with rm.Mocker() as m:
        token = m.post(TOKEN_URL, [token_response(TOKEN_1), token_response(TOKEN_2)])
        m.get(PROBE, **cdf_error(401, "Unauthorized"))
        ok, message = hook.test_connection()
    assert not ok and token.call_count == 2
    assert message.startswith(
        f"CDF rejected the token issued for scopes '{HOST}/.default' (is it for this cluster?)")


def test_test_connection_static_token_rejected(cognite: Callable[..., CogniteHook]) -> None:
    hook = cognite(extra={"token": STATIC})
    with rm.Mocker() as m:
        probe = m.get(PROBE, **cdf_error(401, "Unauthorized"))
        ok, message = hook.test_connection()
    assert not ok and probe.call_count == 1
    assert message.startswith("CDF rejected the static token in the connection extra (it may have expired)")
    assert STATIC not in message


def test_test_connection_network_error(cognite: Callable[..., CogniteHook]) -> None:
    host = f"http://127.0.0.1:{closed_port()}"
    hook = cognite(host=host, extra={"token": STATIC, "max_attempts": 2})
    ok, message = hook.test_connection()
    assert not ok and message.startswith(f"Could not reach CDF at {host}: Cognite API:")
    assert "no response: could not connect" in message and "after 2 attempts" in message


def test_test_connection_token_endpoint_unreachable(cognite: Callable[..., CogniteHook]) -> None:
    token_url = f"http://127.0.0.1:{closed_port()}/tenant/oauth2/v2.0/token"
    hook = cognite(extra={"token_url": token_url, "max_attempts": 1})
    ok, message = hook.test_connection()
    assert not ok and message.startswith(f"Could not reach the token endpoint {token_url}:")
    assert CLIENT_SECRET not in message


def test_test_connection_bad_configuration(cognite: Callable[..., CogniteHook]) -> None:
    ok, message = cognite(extra={"project": ""}).test_connection()
    assert not ok and "has no project in its extra" in message


# ----------------------------------------------------------------------------------------------
# Async: non-blocking connection lookup, one token for many concurrent callers
# ----------------------------------------------------------------------------------------------


class FakeCdf:
    """Token endpoint + one CDF GET, on a local aiohttp server."""

    def __init__(self) -> None:
        self.token_requests: list[dict[str, list[str]]] = []
        self.api_auth: list[str] = []
        self.tokens = iter([TOKEN_1, TOKEN_2, "third-token-abcdef"])
        self.reject_next = 0
        self.token_delay = 0.02

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests.append(parse_qs(await request.text()))
        await asyncio.sleep(self.token_delay)
        return web.json_response(
            {"access_token": next(self.tokens), "expires_in": 3600, "token_type": "Bearer"})

    async def run(self, request: web.Request) -> web.Response:
        self.api_auth.append(request.headers.get("Authorization", ""))
        if self.reject_next:
            self.reject_next -= 1
            return web.json_response({"error": {"code": 401, "message": "Unauthorized"}}, status=401)
        return web.json_response({"jobId": int(request.match_info["job"]), "status": "Running"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/tenant/oauth2/v2.0/token", self.token)
        app.router.add_get(
            "/api/v1/projects/my-project/context/entitymatching/pipelines/{pid}/runs/{job}", self.run)
        return app


@pytest_asyncio.fixture
async def fake_cdf() -> Any:
    fake = FakeCdf()
    server = TestServer(fake.app())
    await server.start_server()
    fake.base = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    yield fake
    await server.close()


@native_async_lookup_only
@pytest.mark.asyncio
async def test_async_lookup_does_not_use_the_blocking_connection_api(
    cognite: Callable[..., CogniteHook], fake_cdf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = cognite(host=fake_cdf.base, extra={"token_url": f"{fake_cdf.base}/tenant/oauth2/v2.0/token"})

    def blocked(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("sync get_connection called inside the event loop")

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(blocked))
    assert (await hook.aget_pipeline_run(5, 9))["status"] == "Running"


@pytest.mark.asyncio
async def test_fifty_concurrent_async_callers_cause_one_token_request(
    cognite: Callable[..., CogniteHook], fake_cdf: Any
) -> None:
    hook = cognite(host=fake_cdf.base, extra={"token_url": f"{fake_cdf.base}/tenant/oauth2/v2.0/token"})
    results = await asyncio.gather(*(hook.aget_pipeline_run(5, job) for job in range(1, 51)))
    assert [r["jobId"] for r in results] == list(range(1, 51))
    assert len(fake_cdf.token_requests) == 1
    assert fake_cdf.token_requests[0]["client_secret"] == [CLIENT_SECRET]
    assert set(fake_cdf.api_auth) == {f"Bearer {TOKEN_1}"}


@pytest.mark.asyncio
async def test_async_401_refreshes_once(cognite: Callable[..., CogniteHook], fake_cdf: Any) -> None:
    hook = cognite(host=fake_cdf.base, extra={"token_url": f"{fake_cdf.base}/tenant/oauth2/v2.0/token"})
    fake_cdf.reject_next = 1
    assert (await hook.aget_pipeline_run(5, 9))["status"] == "Running"
    assert len(fake_cdf.token_requests) == 2
    assert fake_cdf.api_auth == [f"Bearer {TOKEN_1}", f"Bearer {TOKEN_2}"]
    fake_cdf.reject_next = 2
    with pytest.raises(ApiError) as info:
        await hook.aget_pipeline_run(5, 9)
    assert info.value.status == 401 and "still refused after one token refresh" in str(info.value)
    assert len(fake_cdf.token_requests) == 3


def test_sync_and_async_calls_share_the_process_token(cognite: Callable[..., CogniteHook]) -> None:
    fake = FakeCdf()

    async def scenario() -> None:
        server = TestServer(fake.app())
        await server.start_server()
        base = str(server.make_url("")).rstrip("/")
        try:
            hook = cognite(host=base, extra={"token_url": f"{base}/tenant/oauth2/v2.0/token"})
            await hook.aget_pipeline_run(5, 1)
            other = cognite("cognite_again", host=base,
                            extra={"token_url": f"{base}/tenant/oauth2/v2.0/token"})
            await other.aget_pipeline_run(5, 2)
        finally:
            await server.close()

    asyncio.run(scenario())
    assert len(fake.token_requests) == 1 and fake.api_auth == [f"Bearer {TOKEN_1}"] * 2


@pytest.fixture(autouse=True)
def _no_real_sleep_leak() -> Iterator[None]:
    started = time.monotonic()
    yield
    assert time.monotonic() - started < 5, "a unit test slept for real"
