"""Fault injection (every action, Python and control API) and the request log (secrets redacted)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
import requests

from airflow_provider_pipelines.sandbox import SandboxServer
from airflow_provider_pipelines.sandbox.config import (
    COGNITE_CLIENT_SECRET,
    EI_API_KEY,
    HERE_ACCESS_KEY_SECRET,
)
from airflow_provider_pipelines.sandbox.faults import FaultError

from .conftest import EI, api, cdf, cognite_token, ei, here_api, here_token

EM_RUN = "/api/v1/projects/*/context/entitymatching/pipelines/*/runs/*"


# --------------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------------
def test_status_fault_times_and_vendor_shapes(sb: SandboxServer) -> None:
    h = cdf(sb)
    run = requests.post(api(sb, "/context/entitymatching/pipelines/1/runs"), headers=h, timeout=5).json()
    url = api(sb, f"/context/entitymatching/pipelines/1/runs/{run['jobId']}")
    fault = sb.inject_fault(method="GET", path=EM_RUN, action="status", status=503, times=2, retry_after=None)
    assert fault["remaining"] == 2
    for _ in range(2):
        r = requests.get(url, headers=h, timeout=5)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == 503 and r.headers["x-request-id"]
        assert "Retry-After" not in r.headers
    assert requests.get(url, headers=h, timeout=5).status_code == 200
    assert sb.faults()[0]["remaining"] == 0 and sb.faults()[0]["applied"] == 2
    # method filter: a POST is not affected by a GET fault
    sb.inject_fault(method="GET", path="*", action="status", status=500, times=None)
    assert (
        requests.post(api(sb, "/context/entitymatching/pipelines/1/runs"), headers=h, timeout=5).status_code
        == 200
    )


def test_429_with_retry_after_seconds_and_http_date(sb: SandboxServer) -> None:
    sb.inject_fault(path="/v1/api/*", status=429, retry_after=2)
    r = requests.get(ei(sb, "/12"), headers=EI, timeout=5)
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert r.json() == {"success": False, "error": "Too Many Requests (sandbox fault injection)"}
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    sb.inject_fault(path="/pipeline-service/*", status=429, retry_after=date)
    r = requests.get(here_api(sb, "/x/versions/y"), timeout=5)
    assert r.status_code == 429 and r.headers["Retry-After"] == date
    assert r.json()["status"] == 429 and r.headers["X-Request-ID"]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_on_token_endpoints(sb: SandboxServer, status: int) -> None:
    sb.inject_fault(method="POST", path="*/token", status=status, times=2)
    r = requests.post(
        f"{sb.url}/sandbox-tenant/oauth2/v2.0/token", data={"grant_type": "client_credentials"}, timeout=5
    )
    assert r.status_code == status and "error_description" in r.json()
    r = requests.post(f"{sb.url}/oauth2/token", data={"grant_type": "client_credentials"}, timeout=5)
    assert r.status_code == status and r.json()["errorCode"] == status * 1000


def test_jobs_list_500_is_an_array(sb: SandboxServer) -> None:
    sb.inject_fault(path="*/jobs", status=500)
    r = requests.get(here_api(sb, "/a/versions/b/jobs"), timeout=5)
    assert r.status_code == 500 and isinstance(r.json(), list)


def test_skip_then_fail(sb: SandboxServer) -> None:
    sb.inject_fault(path="/v1/api/*", status=502, skip=2, times=1)
    codes = [requests.get(ei(sb, "/12"), headers=EI, timeout=5).status_code for _ in range(4)]
    assert codes == [200, 200, 502, 200]


# --------------------------------------------------------------------------------------------
# delay, drop, malformed, expire_tokens
# --------------------------------------------------------------------------------------------
def test_delay_causes_read_timeout(sb: SandboxServer) -> None:
    sb.inject_fault(path="/v1/api/*", action="delay", seconds=1.0)
    start = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(ei(sb, "/12"), headers=EI, timeout=0.3)
    assert time.monotonic() - start < 1.0
    sb.inject_fault(path="/v1/api/*", action="delay", seconds=0.2)
    start = time.monotonic()
    r = requests.get(ei(sb, "/12"), headers=EI, timeout=5)
    assert r.status_code == 200 and time.monotonic() - start >= 0.2


@pytest.mark.parametrize(
    ("mode", "requests_error"),
    [("close", requests.exceptions.ConnectionError), ("partial", requests.exceptions.ChunkedEncodingError)],
)
def test_drop_makes_clients_see_a_disconnect(
    sb: SandboxServer, mode: str, requests_error: type[Exception]
) -> None:
    # times=None: aiohttp retries an idempotent request once by itself when the server disconnects
    sb.inject_fault(path="/v1/api/*", action="drop", times=None, mode=mode)
    with pytest.raises(requests_error):
        requests.get(ei(sb, "/12"), headers=EI, timeout=5)

    async def aio() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(ei(sb, "/12"), headers=EI) as resp:
                await resp.read()

    with pytest.raises(aiohttp.ClientError):
        asyncio.run(aio())
    sb.clear_faults()
    assert requests.get(ei(sb, "/12"), headers=EI, timeout=5).status_code == 200
    dropped = sb.requests(path="/v1/api/*")
    assert {e["fault"] for e in dropped[:-1]} == {"drop"} and dropped[-1]["fault"] is None
    assert all(e["status"] is None for e in dropped[:-1])


def test_malformed_json(sb: SandboxServer) -> None:
    sb.inject_fault(path="/api/v1/*", action="malformed")
    r = requests.get(api(sb, "/context/entitymatching/pipelines/1"), headers=cdf(sb), timeout=5)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    sb.inject_fault(path="/v1/api/*", action="malformed", body='{"success": tru')
    assert requests.get(ei(sb, "/12"), headers=EI, timeout=5).text == '{"success": tru'


def test_expire_tokens_fault_and_python_api(sb: SandboxServer) -> None:
    h = cdf(sb)
    url = api(sb, "/context/entitymatching/pipelines/1")
    sb.inject_fault(method="GET", path="/api/v1/*", action="expire_tokens")
    assert requests.get(url, headers=h, timeout=5).status_code == 401
    h = cdf(sb)  # a new token works
    assert requests.get(url, headers=h, timeout=5).status_code == 200

    hh = {"Authorization": f"Bearer {here_token(sb)}"}
    version = here_api(
        sb, "/5f2b5b1e-0000-4000-8000-000000000001/versions/5f2b5b1e-0000-4000-8000-0000000000a1"
    )
    assert requests.get(version, headers=hh, timeout=5).status_code == 200
    assert sb.expire_tokens(vendor="here") == {"here": 1}
    assert requests.get(version, headers=hh, timeout=5).status_code == 401
    assert requests.get(url, headers=h, timeout=5).status_code == 200  # cognite unaffected

    sb.expire_tokens("edge_impulse")  # EI issues no tokens: its API keys are revoked until reset
    assert requests.get(ei(sb, "/12"), headers=EI, timeout=5).status_code == 401
    sb.reset()
    assert requests.get(ei(sb, "/12"), headers=EI, timeout=5).status_code == 200


def test_invalid_fault_specs(sb: SandboxServer) -> None:
    for kwargs in (
        {"action": "explode"},
        {"action": "status", "status": 200},
        {"action": "status", "times": 0},
        {"action": "delay"},
        {"action": "drop", "status": 500},
        {"action": "status", "retry_after": [1]},
    ):
        with pytest.raises(FaultError):
            sb.inject_fault(**kwargs)


def test_control_paths_are_never_faulted(sb: SandboxServer) -> None:
    sb.inject_fault(path="*", status=500, times=None)
    assert requests.get(f"{sb.url}/_sandbox/health", timeout=5).status_code == 200
    assert requests.get(ei(sb, "/12"), headers=EI, timeout=5).status_code == 500


# --------------------------------------------------------------------------------------------
# Request log
# --------------------------------------------------------------------------------------------
def test_request_log_redacts_secrets(sb: SandboxServer) -> None:
    token = cognite_token(sb)
    requests.post(
        api(sb, "/extpipes/runs"),
        json={"items": [{"externalId": "sandbox-contextualization", "status": "seen"}]},
        headers={"Authorization": f"Bearer {token}", "Cookie": "session=abc"},
        timeout=5,
    )
    requests.post(ei(sb, "/12/run?ignoreLastSuccessfulRun=true"), headers=EI, timeout=5)
    here_token(sb)
    entries = sb.requests()
    dump = json.dumps(entries)
    for secret in (COGNITE_CLIENT_SECRET, token, EI_API_KEY, HERE_ACCESS_KEY_SECRET, "session=abc"):
        assert secret not in dump
    token_entry = sb.requests(method="POST", path="*/oauth2/v2.0/token")[0]
    assert token_entry["vendor"] == "cognite" and token_entry["status"] == 200
    assert token_entry["body"]["client_secret"] == "<redacted>"
    assert token_entry["body"]["client_id"] == "sandbox-client"
    (run_entry,) = sb.requests(method="POST", path="*/extpipes/runs")
    assert run_entry["headers"]["authorization"] == "Bearer <redacted>"
    assert run_entry["headers"]["cookie"] == "<redacted>"
    assert run_entry["body"] == {"items": [{"externalId": "sandbox-contextualization", "status": "seen"}]}
    assert run_entry["status"] == 201 and isinstance(run_entry["time"], float)
    (ei_entry,) = sb.requests(vendor="edge_impulse")
    assert ei_entry["headers"]["x-api-key"] == "<redacted>"
    assert ei_entry["query"] == "ignoreLastSuccessfulRun=true"
    assert ei_entry["query_params"] == {"ignoreLastSuccessfulRun": "true"}
    (here_entry,) = sb.requests(vendor="here")
    assert here_entry["headers"]["authorization"] == "OAuth <redacted>"
    assert len(sb.requests(method="POST", path="*/runs")) == 1
    assert sb.clear_requests() == len(entries)
    assert sb.requests() == []


def test_request_log_and_faults_over_the_control_api(sb: SandboxServer) -> None:
    base = f"{sb.url}/_sandbox"
    r = requests.post(
        f"{base}/faults",
        json={"method": "GET", "path": "/v1/api/*", "action": "status", "status": 503, "times": 1},
        timeout=5,
    )
    assert r.status_code == 201 and r.json()["id"]
    assert requests.get(f"{base}/faults", timeout=5).json()["items"][0]["status"] == 503
    assert requests.get(ei(sb, "/12"), headers=EI, timeout=5).status_code == 503
    assert requests.get(ei(sb, "/12"), headers=EI, timeout=5).status_code == 200
    items = requests.get(f"{base}/requests", params={"method": "GET", "path": "/v1/api/*"}, timeout=5).json()[
        "items"
    ]
    assert [i["status"] for i in items] == [503, 200] and items[0]["fault"] == "status"
    assert requests.get(f"{base}/requests", params={"vendor": "cognite"}, timeout=5).json()["items"] == []
    assert requests.delete(f"{base}/requests", timeout=5).json()["deleted"] == 2
    assert requests.get(f"{base}/requests", timeout=5).json()["items"] == []
    assert requests.post(f"{base}/faults", json={"action": "nope"}, timeout=5).status_code == 400
    assert requests.post(f"{base}/faults", json={"action": "status", "wat": 1}, timeout=5).status_code == 400
    fid = requests.post(f"{base}/faults", json={"action": "drop"}, timeout=5).json()["id"]
    assert requests.delete(f"{base}/faults/{fid}", timeout=5).status_code == 200
    assert requests.delete(f"{base}/faults/{fid}", timeout=5).status_code == 404
    many = requests.post(f"{base}/faults", json=[{"action": "drop"}, {"action": "malformed"}], timeout=5)
    assert many.status_code == 201 and len(many.json()) == 2
    assert requests.delete(f"{base}/faults", timeout=5).json()["deleted"] == 3
