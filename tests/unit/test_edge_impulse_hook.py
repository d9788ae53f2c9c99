"""EdgeImpulseHook: connection parsing, the {success, error} envelope, retries, secrets (sync and async)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from airflow_provider_pipelines._compat import AirflowException
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.edge_impulse import (
    STUDIO_PIPELINES_URL,
    EdgeImpulseHook,
    EdgeImpulseProfile,
    validate_int_id,
)

API_KEY = "ei_unit_test_key_0123456789"
PROJECT_KEY = "ei_project_key_SECRET_a1b2c3d4e5"
PROJECT_HMAC = "hmac_SECRET_f6e5d4c3b2a1"
BASE = "https://studio.example.com/v1/api/organizations/1/pipelines"
FAST_RETRIES = {"backoff_base": 0.001, "backoff_max": 0.001, "retry_after_max": 0.01}


def project_step(**job: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"name": "Import into project", "uploadType": "project", "projectId": 501,
                            "projectApiKey": PROJECT_KEY, "projectHmacKey": PROJECT_HMAC}
    if job:
        step["transformationJob"] = job
    return step


def pipeline_body(**pipeline: Any) -> dict[str, Any]:
    return {"success": True, "pipeline": {"id": 12, "name": "nightly", "steps": [project_step()],
                                          "currentRun": None, "lastRun": None, **pipeline}}


@pytest.fixture
def ei_conn(conn_env):
    def _set(conn_id: str = "edge_impulse_default", **fields: Any) -> None:
        fields.setdefault("conn_type", "edge_impulse")
        fields.setdefault("host", "https://studio.example.com")
        fields.setdefault("password", API_KEY)
        extra = {**FAST_RETRIES, **fields.pop("extra", {})}
        conn_env(conn_id, extra=extra, **fields)

    _set()
    return _set


# ---- ids and connection ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, "abc", "", None, True, 1.5, "1.0", [], 2**53])
def test_validate_int_id_rejects(value):
    with pytest.raises(ValueError, match="organization_id must be"):
        validate_int_id("organization_id", value)


@pytest.mark.parametrize(("value", "expected"), [(1, 1), ("42", 42), (" 7 ", 7)])
def test_validate_int_id_accepts(value, expected):
    assert validate_int_id("pipeline_id", value) == expected


@pytest.mark.parametrize(
    ("host", "port", "base"),
    [
        (None, None, "https://studio.edgeimpulse.com/v1"),
        ("studio.example.com", None, "https://studio.example.com/v1"),
        ("https://studio.example.com/", None, "https://studio.example.com/v1"),
        ("https://studio.example.com/v1", None, "https://studio.example.com/v1"),
        ("http://127.0.0.1", 8123, "http://127.0.0.1:8123/v1"),
    ],
)
def test_base_url(conn_env, host, port, base):
    fields: dict[str, Any] = {"conn_type": "edge_impulse", "password": API_KEY}
    if host is not None:
        fields["host"] = host
    if port is not None:
        fields["port"] = port
    conn_env("ei", **fields)
    assert EdgeImpulseHook("ei").resolved.base_url == base


def test_missing_api_key_says_what_to_set(conn_env):
    conn_env("ei", conn_type="edge_impulse", host="https://studio.example.com")
    with pytest.raises(AirflowException, match=r"no API key \(password\).*organization API key"):
        EdgeImpulseHook("ei").resolved  # noqa: B018


def test_plain_http_to_remote_host_is_refused(conn_env):
    conn_env("ei", conn_type="edge_impulse", host="http://studio.example.com", password=API_KEY)
    with pytest.raises(AirflowException, match="must use https://"):
        EdgeImpulseHook("ei").resolved  # noqa: B018


def test_bad_organization_id_in_extra(conn_env):
    conn_env("ei", conn_type="edge_impulse", password=API_KEY, extra={"organization_id": "acme"})
    with pytest.raises(AirflowException, match="extra organization_id must be a positive integer"):
        EdgeImpulseHook("ei").resolved  # noqa: B018


def test_ui_field_behaviour():
    ui = EdgeImpulseHook.get_ui_field_behaviour()
    assert "login" in ui["hidden_fields"]
    assert ui["relabeling"]["password"] == "API key"


# ---- requests -----------------------------------------------------------------------------------


def test_get_pipeline_sends_api_key_and_redacts_step_secrets(ei_conn, requests_mock, monkeypatch):
    masked: list[str] = []
    monkeypatch.setattr("airflow_provider_pipelines.hooks.edge_impulse.mask_secret", masked.append)
    run = {"id": 7, "steps": [project_step(id=1, status="started")], "created": "2025-01-01T00:00:00Z"}
    requests_mock.get(f"{BASE}/12", json=pipeline_body(currentRun=run))
    pipeline = EdgeImpulseHook().get_pipeline(1, 12)

    req = requests_mock.request_history[0]
    assert req.headers["x-api-key"] == API_KEY
    assert req.headers["Accept"] == "application/json"
    assert pipeline["currentRun"]["id"] == 7
    text = json.dumps(pipeline)
    assert PROJECT_KEY not in text and PROJECT_HMAC not in text
    assert pipeline["steps"][0]["projectApiKey"] == "***"
    assert pipeline["currentRun"]["steps"][0]["projectHmacKey"] == "***"
    # registered with the masker once each, however often they appear
    assert sorted(masked) == sorted([PROJECT_KEY, PROJECT_HMAC])


def test_success_false_with_http_200_is_an_error(ei_conn, requests_mock):
    requests_mock.get(f"{BASE}/99", json={"success": False, "error": "Pipeline 99 not found"},
                      headers={"x-request-id": "req-123"})
    with pytest.raises(ApiError) as info:
        EdgeImpulseHook().get_pipeline(1, 99)
    err = info.value
    assert err.status == 200
    assert err.vendor_message == "Pipeline 99 not found"
    assert err.request_id == "req-123"
    assert str(err) == ("Edge Impulse API: get organizational pipeline (organization 1 pipeline 99) failed: "
                        "HTTP 200: Pipeline 99 not found [request id req-123]")
    assert requests_mock.call_count == 1  # a vendor refusal is not retried


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"pipeline": {}}, "the response has no 'success' field"),
        ({"success": False}, "'success' is False and the response gives no error text"),
        ({"success": "yes", "pipeline": {}}, "'success' is 'yes'"),
        ([1, 2], "expected a JSON object with 'success': true, got a JSON list"),
    ],
)
def test_envelope_violations(ei_conn, requests_mock, body, message):
    requests_mock.get(f"{BASE}/12", json=body)
    with pytest.raises(ApiError, match=message):
        EdgeImpulseHook().get_pipeline(1, 12)


def test_success_without_the_expected_object(ei_conn, requests_mock):
    requests_mock.get(f"{BASE}/12", json={"success": True})
    with pytest.raises(ApiError, match="the response has no 'pipeline' object"):
        EdgeImpulseHook().get_pipeline(1, 12)


def test_http_401_names_vendor_message_and_never_the_key(ei_conn, requests_mock):
    """Unconfirmed: real 4xx statuses with the same {success, error} body (the OpenAPI declares only 200)."""
    requests_mock.get(f"{BASE}/12", status_code=401, json={"success": False, "error": "Invalid API key"})
    with pytest.raises(ApiError) as info:
        EdgeImpulseHook().get_pipeline(1, 12)
    assert info.value.status == 401
    assert "HTTP 401: Invalid API key" in str(info.value)
    assert API_KEY not in str(info.value)
    assert requests_mock.call_count == 1  # a static API key cannot be refreshed


def test_get_is_retried_on_503_and_429(ei_conn, requests_mock):
    """Unconfirmed: Edge Impulse documents no 429/5xx; the conservative reading retries them on reads."""
    requests_mock.get(f"{BASE}/12", [
        {"status_code": 503, "text": "busy"},
        {"status_code": 429, "json": {"success": False, "error": "slow down"},
         "headers": {"Retry-After": "0"}},
        {"json": pipeline_body()},
    ])
    assert EdgeImpulseHook().get_pipeline(1, 12)["id"] == 12
    assert requests_mock.call_count == 3


def test_500_is_not_retried(ei_conn, requests_mock):
    requests_mock.get(f"{BASE}/12", status_code=500, json={"success": False, "error": "boom"})
    with pytest.raises(ApiError, match="HTTP 500: boom"):
        EdgeImpulseHook().get_pipeline(1, 12)
    assert requests_mock.call_count == 1


def test_run_pipeline(ei_conn, requests_mock):
    """Unconfirmed whether ``ignoreLastSuccessfulRun=false`` counts as "set": it is only sent when true."""
    requests_mock.post(f"{BASE}/12/run", json={"success": True, "error": None, "pipelineRun": {
        "id": 1234, "steps": [project_step()], "created": "2025-02-21T18:21:53.755Z"}})
    hook = EdgeImpulseHook()
    run = hook.run_pipeline(1, 12)
    assert run["id"] == 1234
    assert run["steps"][0]["projectApiKey"] == "***"
    assert requests_mock.last_request.qs == {}  # not sent unless asked for (see hook comment)
    hook.run_pipeline(1, 12, ignore_last_successful_run=True)
    assert requests_mock.last_request.qs == {"ignorelastsuccessfulrun": ["true"]}


def test_run_pipeline_not_retried_on_503(ei_conn, requests_mock):
    """A POST that may have started a run is never repeated blindly: the error says it is ambiguous."""
    requests_mock.post(f"{BASE}/12/run", status_code=503, text="upstream")
    with pytest.raises(ApiError) as info:
        EdgeImpulseHook().run_pipeline(1, 12)
    assert info.value.ambiguous
    assert requests_mock.call_count == 1


def test_run_pipeline_refused(ei_conn, requests_mock):
    requests_mock.post(f"{BASE}/12/run", json={"success": False, "error": "Pipeline 12 is already running"})
    with pytest.raises(ApiError, match=r"run organizational pipeline .* HTTP 200: Pipeline 12 is already"):
        EdgeImpulseHook().run_pipeline(1, 12)


@pytest.mark.parametrize("body", [{"success": True}, {"success": True, "pipelineRun": {"id": "x"}}])
def test_run_pipeline_without_run_id(ei_conn, requests_mock, body):
    requests_mock.post(f"{BASE}/12/run", json=body)
    with pytest.raises(ApiError, match="pipelineRun"):
        EdgeImpulseHook().run_pipeline(1, 12)


def test_stop_pipeline(ei_conn, requests_mock):
    requests_mock.post(f"{BASE}/12/stop", json={"success": True})
    EdgeImpulseHook().stop_pipeline(1, 12)
    assert requests_mock.last_request.method == "POST"


@pytest.mark.parametrize("call", ["get_pipeline", "run_pipeline", "stop_pipeline"])
@pytest.mark.parametrize(("org", "pid"), [("acme", 12), (1, 0), (1, "12a"), (True, 12)])
def test_bad_ids_fail_before_any_request(ei_conn, requests_mock, call, org, pid):
    with pytest.raises(ValueError, match="must be"):
        getattr(EdgeImpulseHook(), call)(org, pid)
    assert requests_mock.call_count == 0


def test_step_secret_seen_earlier_is_redacted_from_later_errors(ei_conn, requests_mock):
    requests_mock.get(f"{BASE}/12", json=pipeline_body())
    requests_mock.post(f"{BASE}/12/run", json={"success": False, "error": f"bad key {PROJECT_KEY}"})
    hook = EdgeImpulseHook()
    hook.get_pipeline(1, 12)
    with pytest.raises(ApiError) as info:
        hook.run_pipeline(1, 12)
    assert PROJECT_KEY not in str(info.value)
    assert "bad key ***" in str(info.value)


def test_studio_url(ei_conn):
    """Unconfirmed: Edge Impulse documents no Studio deep link; the organization's pipeline list is used."""
    url = EdgeImpulseHook().studio_pipeline_url(1, 12)
    assert url == STUDIO_PIPELINES_URL.format(studio="https://studio.example.com", organization_id=1,
                                              pipeline_id=12)
    assert url == "https://studio.example.com/organization/1/pipelines"


# ---- test_connection ----------------------------------------------------------------------------


def test_test_connection_ok(ei_conn, requests_mock):
    ei_conn(extra={"organization_id": 1})
    requests_mock.get(BASE, json={"success": True, "pipelines": [{"id": 12}, {"id": 13}]})
    expected = (True, "Connected to Edge Impulse organization 1 (2 pipelines).")
    assert EdgeImpulseHook().test_connection() == expected


def test_test_connection_bad_key(ei_conn, requests_mock):
    ei_conn(extra={"organization_id": 1})
    requests_mock.get(BASE, status_code=401, json={"success": False, "error": "Invalid API key"})
    ok, message = EdgeImpulseHook().test_connection()
    assert not ok
    assert "HTTP 401: Invalid API key" in message
    assert API_KEY not in message


def test_test_connection_needs_organization(ei_conn, requests_mock):
    """Assumption: an organization key has no organization-independent endpoint to be tested with."""
    ok, message = EdgeImpulseHook().test_connection()
    assert not ok
    assert '"organization_id"' in message
    assert requests_mock.call_count == 0


def test_test_connection_network_error(conn_env, unused_tcp_port):
    conn_env("ei", conn_type="edge_impulse", host=f"http://127.0.0.1:{unused_tcp_port}", password=API_KEY,
             extra={"organization_id": 1, "max_attempts": 1})
    ok, message = EdgeImpulseHook("ei").test_connection()
    assert not ok
    assert "could not connect" in message


def test_profile_request_id_and_message():
    """Unconfirmed: Edge Impulse documents no request-id header; ``x-request-id`` is read if present."""
    profile = EdgeImpulseProfile()
    assert profile.request_ids({"x-request-id": "abc"}, {}) == ("abc", None)
    assert profile.request_ids({}, {}) == (None, None)
    assert profile.error_message(404, {"success": False, "error": "nope"}, "") == "nope"
    assert profile.error_message(502, None, "<html>") == ""


# ---- async path against a local aiohttp server ----------------------------------------------------


class FakeStudio:
    """A tiny Edge Impulse stand-in: records requests, answers from a script."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], str]] = []
        self.answers: dict[tuple[str, str], list[tuple[int, Any]]] = {}

    def answer(self, method: str, path: str, *answers: tuple[int, Any]) -> None:
        self.answers[(method, path)] = list(answers)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, dict(request.headers), request.query_string))
        queue = self.answers.get((request.method, request.path))
        if not queue:
            return web.json_response({"success": False, "error": "no such route"}, status=404)
        status, body = queue[0] if len(queue) == 1 else queue.pop(0)
        return web.json_response(body, status=status)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@pytest_asyncio.fixture
async def studio(conn_env):
    fake = FakeStudio()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    conn_env("edge_impulse_default", conn_type="edge_impulse", host=f"http://127.0.0.1:{server.port}",
             password=API_KEY, extra=FAST_RETRIES)
    yield fake
    await server.close()


P = "/v1/api/organizations/1/pipelines/12"


@pytest.mark.asyncio
async def test_async_get_run_stop(studio, monkeypatch):
    masked: list[str] = []

    async def amask(value: str) -> None:
        masked.append(value)

    monkeypatch.setattr("airflow_provider_pipelines.hooks.edge_impulse.amask_secret", amask)
    studio.answer("GET", P, (200, pipeline_body()))
    studio.answer("POST", f"{P}/run",
                  (200, {"success": True, "pipelineRun": {"id": 5, "steps": [project_step()]}}))
    studio.answer("POST", f"{P}/stop", (200, {"success": True}))
    hook = EdgeImpulseHook()
    pipeline = await hook.aget_pipeline(1, 12)
    run = await hook.arun_pipeline(1, 12, ignore_last_successful_run=True)
    await hook.astop_pipeline(1, 12)

    assert pipeline["id"] == 12 and run["id"] == 5
    assert PROJECT_KEY not in json.dumps([pipeline, run])
    assert sorted(masked) == sorted([PROJECT_KEY, PROJECT_HMAC])
    assert [(m, p, q) for m, p, _, q in studio.requests] == [
        ("GET", P, ""), ("POST", f"{P}/run", "ignoreLastSuccessfulRun=true"), ("POST", f"{P}/stop", "")]
    assert all(h["x-api-key"] == API_KEY for _, _, h, _ in studio.requests)


@pytest.mark.asyncio
async def test_async_success_false_with_http_200(studio):
    studio.answer("GET", P, (200, {"success": False, "error": "Organization 1 not found"}))
    with pytest.raises(ApiError) as info:
        await EdgeImpulseHook().aget_pipeline(1, 12)
    assert info.value.status == 200
    assert "Organization 1 not found" in str(info.value)
    assert len(studio.requests) == 1


@pytest.mark.asyncio
async def test_async_retries_502_on_get(studio):
    studio.answer("GET", P, (502, {"success": False, "error": "bad gateway"}), (200, pipeline_body()))
    pipelines = await asyncio.gather(EdgeImpulseHook().aget_pipeline(1, 12))
    assert pipelines[0]["id"] == 12
    assert len(studio.requests) == 2
