"""Entity matching pipeline runs on CDF: hook, operator, sensor and trigger, success and failure paths.

Sync paths run against ``requests-mock``; async paths (hook twins, the trigger) against a small
local CDF built on ``aiohttp.test_utils.TestServer`` (:class:`FakeCdf`, also used by
``test_cognite_quality.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from airflow.sdk import PokeReturnValue
from airflow.triggers.base import TriggerEvent

from airflow_provider_pipelines._compat import (
    AIRFLOW_V_3_3_PLUS,
    AirflowException,
    AirflowSensorTimeout,
    TaskDeferred,
)
from airflow_provider_pipelines.hooks._auth import TOKEN_CACHE
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.cognite import CDF_VERSIONS, CogniteHook
from airflow_provider_pipelines.jobs.base import JobFailedError, JobTimeoutError
from airflow_provider_pipelines.operators.cognite import CogniteEntityMatchingPipelineRunOperator
from airflow_provider_pipelines.sensors.cognite import CogniteEntityMatchingPipelineRunSensor
from airflow_provider_pipelines.triggers.cognite import CogniteEntityMatchingPipelineRunTrigger

HOST = "https://westeurope-1.cognitedata.com"
BASE = f"{HOST}/api/v1/projects/proj"
TOKEN_URL = "https://login.example.com/tenant/oauth2/v2.0/token"
CLIENT_SECRET = "cdf-client-secret-7f3a9c"
ACCESS_TOKEN = "eyJ-access-token-b81d44e2"
RUNS = f"{BASE}/context/entitymatching/pipelines/7/runs"
BETA = CDF_VERSIONS["entity_matching_pipelines"]


# --------------------------------------------------------------------------------------------
# Test doubles shared with test_cognite_quality.py
# --------------------------------------------------------------------------------------------


#: Tests of the Airflow 3.3 task state store; older releases adopt the vendor's active run
#: instead (that side: tests/unit/test_version_compat.py).
state_store_only = pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS,
                                      reason="the task state store exists from Airflow 3.3")


class FakeTI:
    """The parts of a RuntimeTaskInstance the operators use."""

    def __init__(self, try_number: int = 1) -> None:
        self.try_number = try_number
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)  # XCom values must be JSON
        self.xcoms[key] = value


class FakeStateStore:
    """Airflow 3.3's task state store accessor: survives retries, unlike XCom."""

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        self.values = dict(values or {})

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        json.dumps(value)
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def make_context(ti: FakeTI | None = None, store: FakeStateStore | None = None) -> dict[str, Any]:
    ti = ti or FakeTI()
    context: dict[str, Any] = {"ti": ti, "task_instance": ti}
    if store is not None:
        context["task_state_store"] = store
    return context


def run_doc(job_id: int, status: str, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"jobId": job_id, "status": status, "createdTime": 1730204346000,
                           "startTime": 1730204346000, "statusTime": 1730204350000, "errorMessage": None}
    doc.update(extra)
    return doc


def completed_run(job_id: int, **extra: Any) -> dict[str, Any]:
    results: dict[str, Any] = {
        "matches": [{"source": {"id": i}, "target": {"id": 100 + i}, "score": 0.9, "matchType": "model"}
                    for i in range(3)],
        "suggestedRules": [{"inputPattern": "x", "predictPattern": "y", "numMatches": 2, "avgScore": 0.8}],
        "generatedRules": [], "errors": [],
    }
    return run_doc(job_id, "Completed", **{**results, **extra})


class FakeCdf:
    """A small CDF for the async paths: token endpoint, pipeline runs, estimate-quality jobs.

    Scripts: ``runs[job_id]`` / ``estimates[job_id]`` are lists of documents returned one per
    GET (the last one repeats). ``faults`` holds ``(method, path_suffix, status, body, times)``.
    Every request is logged in :attr:`log` as ``(method, path, headers)``.
    """

    project = "proj"

    def __init__(self) -> None:
        self.log: list[tuple[str, str, dict[str, str]]] = []
        self.runs: dict[int, list[dict[str, Any]]] = {}
        self.latest: dict[int, dict[str, Any] | None] = {}
        self.estimates: dict[str, list[dict[str, Any]]] = {}
        self.faults: list[list[Any]] = []
        self.next_job_id = 5000
        self.token = ACCESS_TOKEN

    # -- helpers for tests ------------------------------------------------------------------

    def calls(self, method: str, contains: str) -> list[tuple[str, str, dict[str, str]]]:
        return [c for c in self.log if c[0] == method and contains in c[1]]

    def connection(self, port: int) -> dict[str, Any]:
        return {"conn_type": "cognite", "host": f"http://127.0.0.1:{port}", "login": "client-id",
                "password": CLIENT_SECRET,
                "extra": {"project": self.project, "token_url": f"http://127.0.0.1:{port}/tenant/oauth2/v2.0/token",
                          "backoff_base": 0.01, "backoff_max": 0.05}}

    # -- the app -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        p = f"/api/v1/projects/{self.project}"
        em = p + "/context/entitymatching/pipelines/{pid}/runs"
        app.router.add_post("/tenant/oauth2/v2.0/token", self._token)
        app.router.add_post(em, self._run)
        app.router.add_get(em, self._list)
        app.router.add_get(em + "/latest", self._latest)
        app.router.add_get(em + "/{jid}", self._get_run)
        app.router.add_post(p + "/advancedjoins/estimatequality", self._start_estimate)
        app.router.add_get(p + "/advancedjoins/estimatequality/{jid}", self._get_estimate)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.log.append((request.method, request.path_qs, dict(request.headers)))
        for fault in self.faults:
            method, suffix, status, body, times = fault
            if times and request.method == method and request.path.endswith(suffix):
                fault[4] -= 1
                return web.json_response(body, status=status, headers={"x-request-id": "req-fault-1"})
        if request.path.startswith("/api/"):
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return web.json_response({"error": {"code": 401, "message": "Unauthorized"}}, status=401)
            api = "advanced_joins" if "advancedjoins" in request.path else "entity_matching_pipelines"
            wanted = CDF_VERSIONS[api]
            if request.headers.get("cdf-version") != wanted:
                return web.json_response({"error": {"code": 400, "message": "wrong cdf-version"}}, status=400)
        return await handler(request)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_secret") != CLIENT_SECRET or form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "invalid_client"}, status=401)
        return web.json_response({"access_token": self.token, "expires_in": 3600, "token_type": "Bearer"})

    async def _run(self, request: web.Request) -> web.Response:
        job_id = self.next_job_id
        self.next_job_id += 1
        doc = run_doc(job_id, "Queued")
        self.runs.setdefault(job_id, [run_doc(job_id, "Running"), completed_run(job_id)])
        self.latest[int(request.match_info["pid"])] = doc
        return web.json_response(doc)

    def _scripted(self, script: list[dict[str, Any]]) -> dict[str, Any]:
        return script.pop(0) if len(script) > 1 else script[0]

    async def _get_run(self, request: web.Request) -> web.Response:
        jid = int(request.match_info["jid"])
        if jid not in self.runs:
            return web.json_response({"error": {"code": 404, "message": f"run {jid} not found"}}, status=404)
        return web.json_response(self._scripted(self.runs[jid]))

    async def _list(self, request: web.Request) -> web.Response:
        items = [script[0] for script in self.runs.values()]
        return web.json_response({"items": items[: int(request.query.get("limit", 100))]})

    async def _latest(self, request: web.Request) -> web.Response:
        latest = self.latest.get(int(request.match_info["pid"]))
        if latest is None:
            return web.json_response({"error": {"code": 404, "message": "no runs"}}, status=404)
        return web.json_response(latest)

    async def _start_estimate(self, request: web.Request) -> web.Response:
        body = await request.json()
        job_id = str(uuid.uuid4())
        doc = {"jobId": job_id, "status": "Queued", "createdTime": 1, "startTime": 1, "statusTime": 1,
               "advancedJoinExternalId": body.get("advancedJoinExternalId"), "matcher": body.get("matcher"),
               "errorMessage": None}
        self.estimates.setdefault(job_id, [dict(doc, status="Running"), dict(
            doc, status="Completed", qualityScorePercent=91, confidencePercent=88,
            contextualizationScorePercent=75)])
        return web.json_response(doc)

    async def _get_estimate(self, request: web.Request) -> web.Response:
        jid = request.match_info["jid"]
        if jid not in self.estimates:
            return web.json_response({"error": {"code": 404, "message": f"job {jid} not found"}}, status=404)
        return web.json_response(self._scripted(self.estimates[jid]))


@pytest.fixture
def cognite_conn(conn_env: Any) -> None:
    conn_env("cognite_default", conn_type="cognite", host=HOST, login="client-id", password=CLIENT_SECRET,
             extra={"project": "proj", "token_url": TOKEN_URL, "backoff_base": 0.01, "backoff_max": 0.05})


@pytest.fixture
def cdf(requests_mock: Any, cognite_conn: None) -> Any:
    """requests-mock with the token endpoint registered; returns the mocker."""
    requests_mock.post(TOKEN_URL, json={"access_token": ACCESS_TOKEN, "expires_in": 3600})
    return requests_mock


@pytest_asyncio.fixture
async def fake_cdf(conn_env: Any) -> AsyncIterator[FakeCdf]:
    fake = FakeCdf()
    server = TestServer(fake.app())
    await server.start_server()
    conn_env("cognite_default", **fake.connection(server.port))
    try:
        yield fake
    finally:
        await server.close()


def cdf_requests(mocker: Any) -> list[Any]:
    """The requests sent to CDF itself (the token request excluded)."""
    return [r for r in mocker.request_history if r.url.startswith(BASE)]


def all_logs(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> str:
    """Everything logged: stdlib records and the task logger's structlog output (printed)."""
    out = capfd.readouterr()
    return "\n".join((caplog.text, out.out, out.err))


async def collect(trigger: Any) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Make the worker-mode wait loop instant; records the requested sleeps."""
    sleeps: list[float] = []
    monkeypatch.setattr("airflow_provider_pipelines.jobs.base.time.sleep", sleeps.append)
    yield sleeps


# --------------------------------------------------------------------------------------------
# Hook (sync): paths, headers, ids, errors
# --------------------------------------------------------------------------------------------


class TestHookSync:
    def test_run_pipeline_posts_with_beta_header_and_bearer_token(self, cdf: Any) -> None:
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        body = CogniteHook().run_pipeline(7)
        assert body["jobId"] == 42
        token_req, run_req = cdf.request_history
        assert token_req.url == TOKEN_URL
        form = dict(x.split("=", 1) for x in token_req.text.split("&"))
        assert form["grant_type"] == "client_credentials" and form["client_id"] == "client-id"
        assert run_req.method == "POST"
        assert run_req.headers["cdf-version"] == BETA == "20230101-beta"
        assert run_req.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"

    def test_get_list_and_latest_use_documented_paths(self, cdf: Any) -> None:
        cdf.get(f"{RUNS}/42", json=completed_run(42))
        cdf.get(RUNS, json={"items": [run_doc(42, "Completed")], "nextCursor": "c2"})
        cdf.get(f"{RUNS}/latest", json=run_doc(43, "Running"))
        hook = CogniteHook()
        assert hook.get_pipeline_run(7, 42)["status"] == "Completed"
        assert hook.list_pipeline_runs(7, limit=500, cursor="c1")["nextCursor"] == "c2"
        assert hook.latest_pipeline_run("7")["jobId"] == 43
        get_req, list_req, latest_req = cdf_requests(cdf)
        assert get_req.path.endswith("/pipelines/7/runs/42")
        assert list_req.qs == {"limit": ["100"], "cursor": ["c1"]}  # limit clamped to the API's 1..100
        assert latest_req.qs == {"includeskipped": ["false"]}
        assert {r.headers["cdf-version"] for r in (get_req, list_req, latest_req)} == {BETA}

    def test_latest_run_is_none_when_the_pipeline_never_ran(self, cdf: Any) -> None:
        cdf.get(f"{RUNS}/latest", status_code=404, json={"error": {"code": 404, "message": "no runs"}})
        assert CogniteHook().latest_pipeline_run(7) is None

    @pytest.mark.parametrize("pipeline_id", ["abc", 0, -3, True, None, 2**60, "1.5"])
    def test_bad_pipeline_ids_fail_before_any_request(self, cdf: Any, pipeline_id: Any) -> None:
        with pytest.raises(ValueError, match="pipeline_id"):
            CogniteHook().run_pipeline(pipeline_id)
        assert cdf.request_history == []

    def test_non_integer_job_id_fails_before_any_request(self, cdf: Any) -> None:
        with pytest.raises(ValueError, match="job_id must be an integer"):
            CogniteHook().get_pipeline_run(7, "a-uuid")
        assert cdf.request_history == []

    def test_error_names_operation_resource_status_message_and_request_id(self, cdf: Any) -> None:
        cdf.post(RUNS, status_code=400, headers={"x-request-id": "req-123"},
                 json={"error": {"code": 400, "message": "Pipeline has no targets"}})
        with pytest.raises(ApiError) as info:
            CogniteHook().run_pipeline(7)
        text = str(info.value)
        for part in ("Cognite", "run entity matching pipeline", "pipeline 7", "HTTP 400",
                     "Pipeline has no targets", "req-123"):
            assert part in text
        assert len(cdf_requests(cdf)) == 1  # a 400 is never retried

    def test_starting_a_run_is_not_retried_on_503_but_is_on_429(self, cdf: Any) -> None:
        cdf.post(RUNS, [{"status_code": 429, "headers": {"Retry-After": "0"}, "json": {}},
                        {"status_code": 503, "json": {"error": {"message": "busy"}}}])
        with pytest.raises(ApiError) as info:
            CogniteHook().run_pipeline(7)
        assert info.value.status == 503 and info.value.ambiguous
        assert len(cdf_requests(cdf)) == 2  # the 429 was retried, the ambiguous 503 was not

    def test_status_reads_are_retried_on_503(self, cdf: Any) -> None:
        cdf.get(f"{RUNS}/42", [{"status_code": 503, "json": {}}, {"json": run_doc(42, "Running")}])
        assert CogniteHook().get_pipeline_run(7, 42)["status"] == "Running"
        assert len(cdf_requests(cdf)) == 2

    def test_token_is_fetched_once_for_many_calls(self, cdf: Any) -> None:
        cdf.get(f"{RUNS}/42", json=run_doc(42, "Running"))
        hook = CogniteHook()
        for _ in range(3):
            hook.get_pipeline_run(7, 42)
        assert [r.url for r in cdf.request_history].count(TOKEN_URL) == 1


# --------------------------------------------------------------------------------------------
# Hook (async twins) against a local aiohttp server
# --------------------------------------------------------------------------------------------


class TestHookAsync:
    @pytest.mark.asyncio
    async def test_async_twins_hit_the_same_endpoints_with_the_same_headers(self, fake_cdf: FakeCdf) -> None:
        hook = CogniteHook()
        started = await hook.arun_pipeline(7)
        job_id = started["jobId"]
        assert started["status"] == "Queued"
        assert (await hook.aget_pipeline_run(7, job_id))["status"] == "Running"
        assert (await hook.alatest_pipeline_run(7))["jobId"] == job_id
        assert len((await hook.alist_pipeline_runs(7, limit=1))["items"]) == 1
        assert await hook.alatest_pipeline_run(8) is None
        api_calls = [c for c in fake_cdf.log if c[1].startswith("/api/")]
        assert [c[0] for c in api_calls] == ["POST", "GET", "GET", "GET", "GET"]
        assert api_calls[1][1].endswith(f"/pipelines/7/runs/{job_id}")
        assert "includeSkipped=false" in api_calls[2][1]
        assert all(c[2]["cdf-version"] == BETA for c in api_calls)
        assert len(fake_cdf.calls("POST", "/oauth2/")) == 1

    @pytest.mark.asyncio
    async def test_async_error_carries_status_message_and_request_id(self, fake_cdf: FakeCdf) -> None:
        fake_cdf.faults.append(["GET", "/runs/99", 403, {"error": {"code": 403, "message": "No access"}}, 1])
        with pytest.raises(ApiError) as info:
            await CogniteHook().aget_pipeline_run(7, 99)
        assert info.value.status == 403
        assert "No access" in str(info.value) and "req-fault-1" in str(info.value)


# --------------------------------------------------------------------------------------------
# Operator: construction-time validation
# --------------------------------------------------------------------------------------------


class TestOperatorValidation:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"pipeline_id": "abc"}, "pipeline_id must be an integer id"),
            ({"pipeline_id": 0}, "pipeline_id must be between 1"),
            ({"pipeline_id": None}, "pipeline_id must be an integer id"),
            ({"pipeline_id": 7, "poll_interval": 0}, "poll_interval must be a positive"),
            ({"pipeline_id": 7, "poll_interval": -5}, "poll_interval must be a positive"),
            ({"pipeline_id": 7, "max_poll_interval": 0}, "max_poll_interval must be a positive"),
            ({"pipeline_id": 7, "timeout": 0}, "timeout must be a positive"),
            ({"pipeline_id": 7, "timeout": -1}, "timeout must be a positive"),
        ],
    )
    def test_bad_input_fails_at_construction_without_a_request(
        self, cdf: Any, kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            CogniteEntityMatchingPipelineRunOperator(task_id="em", **kwargs)
        assert cdf.request_history == []

    def test_templates_and_xcom_args_are_accepted_and_checked_after_rendering(self, cdf: Any) -> None:
        from airflow.sdk import DAG, task

        with DAG("em_templates", schedule=None):
            @task
            def upstream() -> int:
                return 7

            from_xcom = CogniteEntityMatchingPipelineRunOperator(task_id="from_xcom", pipeline_id=upstream())
            templated = CogniteEntityMatchingPipelineRunOperator(
                task_id="templated", pipeline_id="{{ params.pipeline_id }}")
        assert "pipeline_id" in templated.template_fields
        assert from_xcom.upstream_task_ids == {"upstream"}
        templated.pipeline_id = "not-a-number"  # what a bad param renders to
        with pytest.raises(ValueError, match="pipeline_id must be an integer id, got 'not-a-number'"):
            templated.execute(make_context())
        assert cdf.request_history == []

    def test_rendered_numeric_string_is_used_as_an_int(self, cdf: Any, no_sleep: list[float]) -> None:
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", json=completed_run(42))
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id="{{ params.p }}")
        op.pipeline_id = "7"
        assert op.execute(make_context())["pipeline_id"] == 7


# --------------------------------------------------------------------------------------------
# Operator: waiting in the worker
# --------------------------------------------------------------------------------------------


class TestOperatorInWorker:
    def test_success_returns_a_small_summary_and_pushes_job_id_and_link_before_waiting(
        self, cdf: Any, no_sleep: list[float]
    ) -> None:
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        ti = FakeTI()
        status_reads_when_pushed: list[int] = []
        original_push = ti.xcom_push

        def push(key: str, value: Any) -> None:
            status_reads_when_pushed.append(len([r for r in cdf_requests(cdf) if r.method == "GET"]))
            original_push(key, value)

        ti.xcom_push = push  # type: ignore[method-assign]
        cdf.get(f"{RUNS}/42", [{"json": run_doc(42, "Queued")}, {"json": run_doc(42, "Running")},
                               {"json": completed_run(42, errors=["row 3 skipped"])}])
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7, poll_interval=1)
        result = op.execute(make_context(ti))

        assert status_reads_when_pushed == [0, 0]  # job_id and run_url exist before the first status read
        assert ti.xcoms["job_id"] == 42
        assert ti.xcoms["run_url"].startswith("https://fusion.cognite.com/proj/entity_matching/pipelines/7/runs/42")
        assert result == {
            "pipeline_id": 7, "job_id": 42, "status": "Completed", "created_time": 1730204346000,
            "start_time": 1730204346000, "status_time": 1730204350000, "error_message": None,
            "matches_count": 3, "suggestedRules_count": 1, "generatedRules_count": 0, "errors_count": 1,
            "errors": ["row 3 skipped"],
        }
        assert "matches" not in result
        json.dumps(result)
        assert len(no_sleep) == 2  # polled three times in all, sleeping between polls

    def test_include_matches_adds_the_matches(self, cdf: Any, no_sleep: list[float]) -> None:
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", json=completed_run(42))
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7, include_matches=True)
        result = op.execute(make_context())
        assert result["matches_count"] == 3
        assert [m["target"]["id"] for m in result["matches"]] == [100, 101, 102]

    def test_failed_run_fails_the_task_with_cdfs_error_message(self, cdf: Any, no_sleep: list[float]) -> None:
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", [{"json": run_doc(42, "Running")},
                               {"json": run_doc(42, "Failed", errorMessage="Target data set 9 is empty")}])
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        with pytest.raises(JobFailedError, match="pipeline 7 run 42 ended Failed: Target data set 9 is"):
            op.execute(make_context())

    def test_unknown_status_fails_clearly(self, cdf: Any, no_sleep: list[float]) -> None:
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", json=run_doc(42, "Exploded"))
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        with pytest.raises(JobFailedError, match="unknown status 'Exploded'"):
            op.execute(make_context())

    def test_run_answer_without_job_id_fails_clearly(self, cdf: Any) -> None:
        cdf.post(RUNS, json={"status": "Queued"})
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        with pytest.raises(AirflowException, match="without a jobId"):
            op.execute(make_context())

    @state_store_only
    def test_timeout_names_job_last_status_and_how_to_keep_waiting(self, cdf: Any) -> None:
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", json=run_doc(42, "Running"))
        store = FakeStateStore()
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7, poll_interval=0.01,
                                                      timeout=0.2)
        started = time.monotonic()
        with pytest.raises(JobTimeoutError) as info:
            op.execute(make_context(store=store))
        assert time.monotonic() - started < 5
        text = str(info.value)
        assert "job 42" in text and "'Running'" in text and "left running" in text
        assert "CogniteEntityMatchingPipelineRunSensor(pipeline_id=7, job_id=42)" in text
        # the run is still remembered, so a retry reattaches instead of starting another
        assert store.values[op.STATE_KEY]["job_id"] == 42

    def test_transient_poll_errors_are_tolerated(self, cdf: Any, no_sleep: list[float]) -> None:
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", [{"json": run_doc(42, "Running")}] + [{"status_code": 503, "json": {}}] * 5
                + [{"json": completed_run(42)}])
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        assert op.execute(make_context())["status"] == "Completed"

    def test_permanent_poll_error_fails_with_the_api_error(self, cdf: Any, no_sleep: list[float]) -> None:
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", status_code=403, headers={"x-request-id": "r-9"},
                json={"error": {"code": 403, "message": "Missing entitymatchingAcl:READ"}})
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        with pytest.raises(ApiError, match=r"HTTP 403: Missing entitymatchingAcl:READ.*r-9"):
            op.execute(make_context())

    def test_without_waiting_returns_the_started_run(self, cdf: Any) -> None:
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        ti, store = FakeTI(), FakeStateStore()
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7, wait_for_completion=False)
        result = op.execute(make_context(ti, store))
        assert result["job_id"] == 42 and result["status"] == "Queued"
        assert ti.xcoms["job_id"] == 42
        assert store.values == {}  # nothing to reattach to: this task does not watch the run
        assert [r.method for r in cdf_requests(cdf)] == ["POST"]


# --------------------------------------------------------------------------------------------
# Operator: deferrable
# --------------------------------------------------------------------------------------------


class TestOperatorDeferrable:
    def test_defers_with_json_only_trigger_kwargs_and_an_absolute_deadline(self, cdf: Any) -> None:
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", json=run_doc(42, "Running"))
        ti = FakeTI()
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7, deferrable=True,
                                                      poll_interval=15, timeout=600, include_matches=True)
        before = time.time()
        with pytest.raises(TaskDeferred) as info:
            op.execute(make_context(ti))
        deferred = info.value
        assert deferred.method_name == "execute_complete"
        assert deferred.timeout is None  # the trigger sends its own timeout event
        assert ti.xcoms["job_id"] == 42  # pushed before deferring
        trigger = deferred.trigger
        assert isinstance(trigger, CogniteEntityMatchingPipelineRunTrigger)
        classpath, kwargs = trigger.serialize()
        assert classpath == ("airflow_provider_pipelines.triggers.cognite."
                             "CogniteEntityMatchingPipelineRunTrigger")
        assert kwargs["conn_id"] == "cognite_default"
        assert kwargs["ref"] == {"pipeline_id": 7, "job_id": 42, "include_matches": True}
        assert before + 600 <= kwargs["deadline"] <= time.time() + 600
        assert kwargs["poll_interval"] == 15
        text = json.dumps(kwargs)
        assert CLIENT_SECRET not in text and ACCESS_TOKEN not in text
        assert [r.method for r in cdf_requests(cdf)] == ["POST", "GET"]  # one status check, then defer

    def test_execution_timeout_shortens_the_deadline(self, cdf: Any) -> None:
        from datetime import timedelta

        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", json=run_doc(42, "Running"))
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7, deferrable=True,
                                                      timeout=3600, execution_timeout=timedelta(seconds=60))
        with pytest.raises(TaskDeferred) as info:
            op.execute(make_context())
        assert info.value.trigger.deadline <= time.time() + 60

    def test_a_run_already_over_does_not_defer(self, cdf: Any) -> None:
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", json=completed_run(42))
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7, deferrable=True)
        assert op.execute(make_context())["status"] == "Completed"

    @state_store_only
    def test_execute_complete_success_returns_the_summary_and_forgets_the_run(self) -> None:
        key = CogniteEntityMatchingPipelineRunOperator.STATE_KEY
        store = FakeStateStore({key: {"pipeline_id": 7, "job_id": 42}})
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7, deferrable=True)
        event = {"status": "success", "kind": "cognite.entity_matching_pipeline_run",
                 "ref": {"pipeline_id": 7, "job_id": 42}, "state": "Completed", "message": None,
                 "result": {"job_id": 42, "status": "Completed", "matches_count": 3}}
        assert op.execute_complete(make_context(store=store), event)["matches_count"] == 3
        assert store.values == {}

    def test_execute_complete_failed_raises_with_cdfs_message(self) -> None:
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7, deferrable=True)
        event = {"status": "failed", "kind": "x", "ref": {"pipeline_id": 7, "job_id": 42}, "state": "Failed",
                 "message": "Model training failed: too few true matches", "result": {}}
        with pytest.raises(JobFailedError, match="run 42 ended Failed: Model training failed: too few"):
            op.execute_complete(make_context(), event)

    def test_execute_complete_timeout_keeps_the_run_remembered(self) -> None:
        key = CogniteEntityMatchingPipelineRunOperator.STATE_KEY
        store = FakeStateStore({key: {"pipeline_id": 7, "job_id": 42}})
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7, deferrable=True)
        event = {"status": "timeout", "kind": "x", "ref": {}, "state": "Running",
                 "message": "Timed out after 600 s waiting for entity matching pipeline run (job 42)",
                 "result": {}}
        with pytest.raises(JobTimeoutError, match="job 42"):
            op.execute_complete(make_context(store=store), event)
        assert key in store.values

    @pytest.mark.parametrize("event", [None, {"status": "weird"}, {"nothing": 1}])
    def test_execute_complete_rejects_unexpected_events(self, event: Any) -> None:
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7, deferrable=True)
        with pytest.raises(AirflowException, match="Unexpected trigger event"):
            op.execute_complete(make_context(), event)

    def test_execute_complete_error_event_fails(self) -> None:
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7, deferrable=True)
        with pytest.raises(AirflowException, match="HTTP 403"):
            op.execute_complete(make_context(), {"status": "error", "message": "Cognite API: ... HTTP 403"})


# --------------------------------------------------------------------------------------------
# Operator: reattach on retry (never a second run while the first is active)
# --------------------------------------------------------------------------------------------


class TestReattach:
    KEY = CogniteEntityMatchingPipelineRunOperator.STATE_KEY

    @state_store_only
    def test_state_store_present_reattaches_to_the_running_run(self, cdf: Any, no_sleep: list[float]) -> None:
        store = FakeStateStore({self.KEY: {"pipeline_id": 7, "job_id": 42, "include_matches": False}})
        cdf.get(f"{RUNS}/42", [{"json": run_doc(42, "Running")}, {"json": completed_run(42)}])
        ti = FakeTI(try_number=2)
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        assert op.execute(make_context(ti, store))["job_id"] == 42
        assert [r.method for r in cdf_requests(cdf)] == ["GET", "GET"]  # no POST .../runs
        assert ti.xcoms["job_id"] == 42  # XCom is cleared on retry: pushed again
        assert store.values == {}  # handled: a later clear starts a new run

    @state_store_only
    def test_state_store_present_with_completed_run_returns_it_without_a_new_run(self, cdf: Any) -> None:
        store = FakeStateStore({self.KEY: {"pipeline_id": 7, "job_id": 42}})
        cdf.get(f"{RUNS}/42", json=completed_run(42))
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        assert op.execute(make_context(FakeTI(2), store))["status"] == "Completed"
        assert all(r.method == "GET" for r in cdf_requests(cdf))

    def test_remembered_failed_run_is_replaced_by_a_new_run(self, cdf: Any, no_sleep: list[float]) -> None:
        store = FakeStateStore({self.KEY: {"pipeline_id": 7, "job_id": 41}})
        cdf.get(f"{RUNS}/41", json=run_doc(41, "Failed", errorMessage="boom"))
        cdf.get(f"{RUNS}/latest", json=run_doc(41, "Failed"))
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", json=completed_run(42))
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        assert op.execute(make_context(FakeTI(2), store))["job_id"] == 42
        assert [r.method for r in cdf_requests(cdf)].count("POST") == 1

    def test_remembered_run_of_another_pipeline_is_ignored(self, cdf: Any, no_sleep: list[float]) -> None:
        store = FakeStateStore({self.KEY: {"pipeline_id": 8, "job_id": 41}})
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", json=completed_run(42))
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        assert op.execute(make_context(FakeTI(1), store))["job_id"] == 42
        assert not any("/runs/41" in r.url for r in cdf.request_history)

    def test_remembered_run_that_vanished_starts_a_new_run(self, cdf: Any, no_sleep: list[float]) -> None:
        store = FakeStateStore({self.KEY: {"pipeline_id": 7, "job_id": 41}})
        cdf.get(f"{RUNS}/41", status_code=404, json={"error": {"code": 404, "message": "not found"}})
        cdf.get(f"{RUNS}/latest", status_code=404, json={"error": {"code": 404, "message": "no runs"}})
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", json=completed_run(42))
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        assert op.execute(make_context(FakeTI(2), store))["job_id"] == 42

    def test_state_store_absent_retry_adopts_the_latest_active_run(
        self, cdf: Any, no_sleep: list[float]
    ) -> None:
        cdf.get(f"{RUNS}/latest", json=run_doc(40, "Running"))
        cdf.get(f"{RUNS}/40", json=completed_run(40))
        ti = FakeTI(try_number=2)
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        assert op.execute(make_context(ti, store=None))["job_id"] == 40
        assert "POST" not in [r.method for r in cdf_requests(cdf)]
        assert ti.xcoms["job_id"] == 40

    @pytest.mark.parametrize("status", ["Queued", "Running"])
    def test_active_latest_run_is_adopted_whatever_its_active_status(
        self, cdf: Any, no_sleep: list[float], status: str
    ) -> None:
        cdf.get(f"{RUNS}/latest", json=run_doc(40, status))
        cdf.get(f"{RUNS}/40", json=completed_run(40))
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        assert op.execute(make_context(FakeTI(3)))["job_id"] == 40

    def test_retry_starts_a_new_run_when_the_latest_run_is_over(
        self, cdf: Any, no_sleep: list[float]
    ) -> None:
        cdf.get(f"{RUNS}/latest", json=run_doc(40, "Completed"))
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", json=completed_run(42))
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        assert op.execute(make_context(FakeTI(2)))["job_id"] == 42

    def test_reuse_active_run_false_always_starts_a_new_run(self, cdf: Any, no_sleep: list[float]) -> None:
        cdf.get(f"{RUNS}/latest", json=run_doc(40, "Running"))
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", json=completed_run(42))
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7, reuse_active_run=False)
        assert op.execute(make_context(FakeTI(2)))["job_id"] == 42
        assert not any(r.url.split("?")[0].endswith("/latest") for r in cdf.request_history)

    def test_first_try_never_adopts_a_run_started_elsewhere(self, cdf: Any, no_sleep: list[float]) -> None:
        cdf.get(f"{RUNS}/latest", json=run_doc(40, "Running"))  # e.g. CDF's own schedule
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", json=completed_run(42))
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        assert op.execute(make_context(FakeTI(1), FakeStateStore()))["job_id"] == 42
        assert not any(r.url.split("?")[0].endswith("/latest") for r in cdf.request_history)

    def test_an_ambiguous_start_adopts_the_run_it_created(self, cdf: Any, no_sleep: list[float]) -> None:
        cdf.post(RUNS, status_code=504, text="Gateway Timeout")
        cdf.get(f"{RUNS}/latest", json=run_doc(42, "Queued", createdTime=int(time.time() * 1000)))
        cdf.get(f"{RUNS}/42", json=completed_run(42))
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        assert op.execute(make_context())["job_id"] == 42
        assert [r.method for r in cdf_requests(cdf)].count("POST") == 1  # never asked twice

    @pytest.mark.parametrize("latest", [
        None,
        run_doc(40, "Running", createdTime=int(time.time() * 1000) - 3_600_000),  # someone else's, older
        run_doc(40, "Completed"),
    ])
    def test_an_ambiguous_start_without_a_new_active_run_fails_clearly(
        self, cdf: Any, latest: dict[str, Any] | None
    ) -> None:
        cdf.post(RUNS, status_code=502, text="Bad Gateway")
        if latest is None:
            cdf.get(f"{RUNS}/latest", status_code=404, json={"error": {"code": 404, "message": "no runs"}})
        else:
            cdf.get(f"{RUNS}/latest", json=latest)
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        with pytest.raises(ApiError, match="HTTP 502") as info:
            op.execute(make_context())
        assert info.value.ambiguous
        assert [r.method for r in cdf_requests(cdf)].count("POST") == 1

    @state_store_only
    def test_a_retry_after_a_timeout_reattaches_end_to_end(self, cdf: Any) -> None:
        """Try 1 starts the run and times out; try 2 (same store) watches the same run to the end."""
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", json=run_doc(42, "Running"))
        store = FakeStateStore()
        first = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7, poll_interval=0.01,
                                                         timeout=0.1)
        with pytest.raises(JobTimeoutError):
            first.execute(make_context(FakeTI(1), store))
        cdf.get(f"{RUNS}/42", json=completed_run(42))
        second = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7, poll_interval=0.01)
        assert second.execute(make_context(FakeTI(2), store))["job_id"] == 42
        assert [r.method for r in cdf_requests(cdf)].count("POST") == 1


# --------------------------------------------------------------------------------------------
# Sensor: poke and deferrable
# --------------------------------------------------------------------------------------------


class TestSensor:
    def test_poke_returns_false_while_running_then_the_summary(self, cdf: Any) -> None:
        cdf.get(f"{RUNS}/42", [{"json": run_doc(42, "Running")}, {"json": completed_run(42)}])
        sensor = CogniteEntityMatchingPipelineRunSensor(task_id="s", pipeline_id=7, job_id=42)
        assert sensor.poke(make_context()) is False
        done = sensor.poke(make_context())
        assert isinstance(done, PokeReturnValue) and done.is_done
        assert done.xcom_value["matches_count"] == 3 and done.xcom_value["job_id"] == 42

    def test_poke_fails_on_a_failed_run_with_cdfs_message(self, cdf: Any) -> None:
        cdf.get(f"{RUNS}/42", json=run_doc(42, "Failed", errorMessage="Source data set is empty"))
        sensor = CogniteEntityMatchingPipelineRunSensor(task_id="s", pipeline_id=7, job_id=42)
        with pytest.raises(JobFailedError, match="Source data set is empty"):
            sensor.poke(make_context())

    def test_deferrable_checks_once_then_defers(self, cdf: Any) -> None:
        cdf.get(f"{RUNS}/42", json=run_doc(42, "Running"))
        sensor = CogniteEntityMatchingPipelineRunSensor(task_id="s", pipeline_id=7, job_id="42",
                                                        deferrable=True, poke_interval=30, timeout=3600)
        with pytest.raises(TaskDeferred) as info:
            sensor.execute(make_context())
        trigger = info.value.trigger
        assert isinstance(trigger, CogniteEntityMatchingPipelineRunTrigger)
        assert trigger.ref == {"pipeline_id": 7, "job_id": 42, "include_matches": False}
        assert trigger.deadline == pytest.approx(time.time() + 3600, abs=5)
        assert info.value.timeout is None

    def test_deferrable_returns_at_once_when_already_over(self, cdf: Any) -> None:
        cdf.get(f"{RUNS}/42", json=completed_run(42))
        sensor = CogniteEntityMatchingPipelineRunSensor(task_id="s", pipeline_id=7, job_id=42,
                                                        deferrable=True, include_matches=True)
        assert len(sensor.execute(make_context())["matches"]) == 3

    def test_execute_complete_paths(self) -> None:
        sensor = CogniteEntityMatchingPipelineRunSensor(task_id="s", pipeline_id=7, job_id=42,
                                                        deferrable=True)
        ref = {"pipeline_id": 7, "job_id": 42}
        ok = sensor.execute_complete(make_context(), {"status": "success", "ref": ref, "state": "Completed",
                                                      "result": {"job_id": 42}})
        assert ok == {"job_id": 42}
        with pytest.raises(JobFailedError, match="bad model"):
            sensor.execute_complete(make_context(), {"status": "failed", "ref": ref, "state": "Failed",
                                                     "message": "bad model"})
        with pytest.raises(AirflowSensorTimeout, match="job 42"):
            sensor.execute_complete(make_context(), {"status": "timeout", "ref": ref,
                                                     "message": "Timed out ... job 42"})

    @pytest.mark.parametrize(("kwargs", "message"), [
        ({"pipeline_id": 7, "job_id": "x"}, "job_id must be an integer id"),
        ({"pipeline_id": "p", "job_id": 42}, "pipeline_id must be an integer id"),
        ({"pipeline_id": 7, "job_id": 42, "poke_interval": 0}, "poke_interval must be a positive"),
        ({"pipeline_id": 7, "job_id": 42, "timeout": 0}, "timeout must be a positive"),
        ({"pipeline_id": 7, "job_id": 42, "timeout": -1}, "timeout"),
    ])
    def test_bad_input_fails_at_construction(self, cdf: Any, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            CogniteEntityMatchingPipelineRunSensor(task_id="s", **kwargs)
        assert cdf.request_history == []

    def test_templated_ids_are_checked_after_rendering_before_any_request(self, cdf: Any) -> None:
        sensor = CogniteEntityMatchingPipelineRunSensor(
            task_id="s", pipeline_id=7, job_id="{{ ti.xcom_pull('run', key='job_id') }}")
        assert "job_id" in sensor.template_fields
        sensor.job_id = "None"  # what a missing XCom renders to
        with pytest.raises(ValueError, match="job_id must be an integer id"):
            sensor.poke(make_context())
        assert cdf.request_history == []


# --------------------------------------------------------------------------------------------
# Trigger: events, serialisation, shared resources, on_kill
# --------------------------------------------------------------------------------------------


def em_trigger(
    job_id: int, deadline: float | None = None, poll: float = 0.01
) -> CogniteEntityMatchingPipelineRunTrigger:
    return CogniteEntityMatchingPipelineRunTrigger(
        conn_id="cognite_default", ref={"pipeline_id": 7, "job_id": job_id, "include_matches": False},
        deadline=deadline if deadline is not None else time.time() + 60, poll_interval=poll,
    )


class TestTrigger:
    @pytest.mark.asyncio
    async def test_success_sends_exactly_one_event_with_the_summary(self, fake_cdf: FakeCdf) -> None:
        fake_cdf.runs[42] = [run_doc(42, "Queued"), run_doc(42, "Running"), completed_run(42)]
        events = await collect(em_trigger(42))
        assert len(events) == 1
        payload = events[0].payload
        assert payload["status"] == "success" and payload["state"] == "Completed"
        assert payload["kind"] == "cognite.entity_matching_pipeline_run"
        assert payload["ref"]["job_id"] == 42 and payload["result"]["matches_count"] == 3
        assert len(fake_cdf.calls("GET", "/runs/42")) == 3
        json.dumps(payload)

    @pytest.mark.asyncio
    async def test_failed_run_sends_a_failed_event_with_cdfs_message(self, fake_cdf: FakeCdf) -> None:
        fake_cdf.runs[42] = [run_doc(42, "Running"), run_doc(42, "Failed", errorMessage="No matches")]
        (event,) = await collect(em_trigger(42))
        assert event.payload["status"] == "failed" and event.payload["message"] == "No matches"

    @pytest.mark.asyncio
    async def test_deadline_sends_a_timeout_event_with_the_sensor_hint(self, fake_cdf: FakeCdf) -> None:
        fake_cdf.runs[42] = [run_doc(42, "Running")]
        (event,) = await collect(em_trigger(42, deadline=time.time() + 0.3))
        assert event.payload["status"] == "timeout" and event.payload["state"] == "Running"
        assert "CogniteEntityMatchingPipelineRunSensor(pipeline_id=7, job_id=42" in event.payload["message"]

    @pytest.mark.asyncio
    async def test_a_deadline_in_the_past_still_reads_once_then_times_out(self, fake_cdf: FakeCdf) -> None:
        fake_cdf.runs[42] = [run_doc(42, "Running")]
        (event,) = await collect(em_trigger(42, deadline=time.time() - 10))
        assert event.payload["status"] == "timeout"
        assert len(fake_cdf.calls("GET", "/runs/42")) == 1

    @pytest.mark.asyncio
    async def test_permanent_api_error_sends_an_error_event(self, fake_cdf: FakeCdf) -> None:
        fake_cdf.runs[42] = [run_doc(42, "Running")]
        fake_cdf.faults.append(["GET", "/runs/42", 403, {"error": {"code": 403, "message": "No access"}}, 99])
        (event,) = await collect(em_trigger(42))
        assert event.payload["status"] == "error"
        assert "HTTP 403" in event.payload["message"] and "No access" in event.payload["message"]

    @pytest.mark.asyncio
    async def test_transient_errors_are_retried_without_an_event(self, fake_cdf: FakeCdf) -> None:
        fake_cdf.runs[42] = [run_doc(42, "Running"), completed_run(42)]
        fake_cdf.faults.append(["GET", "/runs/42", 503, {"error": {"message": "busy"}}, 3])
        (event,) = await collect(em_trigger(42))
        assert event.payload["status"] == "success"

    @pytest.mark.asyncio
    async def test_serialize_round_trip_resumes_the_same_job_with_the_same_deadline(
        self, fake_cdf: FakeCdf
    ) -> None:
        fake_cdf.runs[42] = [run_doc(42, "Running"), completed_run(42)]
        original = em_trigger(42, deadline=time.time() + 120)
        classpath, kwargs = original.serialize()
        kwargs = json.loads(json.dumps(kwargs))  # what the trigger table stores
        module, _, name = classpath.rpartition(".")
        rebuilt = getattr(__import__(module, fromlist=[name]), name)(**kwargs)
        assert rebuilt.serialize() == original.serialize()
        assert rebuilt.deadline == original.deadline and rebuilt.ref == original.ref
        (event,) = await collect(rebuilt)
        assert event.payload["status"] == "success" and event.payload["ref"]["job_id"] == 42
        assert fake_cdf.calls("POST", "/runs") == []  # resuming never starts a run

    @pytest.mark.asyncio
    async def test_many_triggers_share_one_session_and_one_token(self, fake_cdf: FakeCdf) -> None:
        from airflow_provider_pipelines.hooks._http import async_sessions_created

        for job in range(100, 120):
            fake_cdf.runs[job] = [run_doc(job, "Running"), completed_run(job)]
        sessions_before = async_sessions_created()
        results = await asyncio.gather(*(collect(em_trigger(job)) for job in range(100, 120)))
        assert all(events[0].payload["status"] == "success" for events in results)
        assert async_sessions_created() - sessions_before == 1
        assert len(fake_cdf.calls("POST", "/oauth2/")) == 1
        assert sum(TOKEN_CACHE.fetches.values()) == 1

    @pytest.mark.asyncio
    async def test_on_kill_sends_nothing_because_cdf_cannot_cancel_a_run(self, fake_cdf: FakeCdf) -> None:
        trigger = CogniteEntityMatchingPipelineRunTrigger(
            conn_id="cognite_default", ref={"pipeline_id": 7, "job_id": 42}, deadline=None, poll_interval=5,
            cancel_on_kill=True)
        assert trigger.kind.cancellable is False
        await trigger.on_kill()
        assert fake_cdf.log == []

    def test_non_json_kwargs_are_refused(self) -> None:
        with pytest.raises(ValueError, match="JSON-serialisable"):
            CogniteEntityMatchingPipelineRunTrigger(conn_id="c", ref={"job_id": object()}, deadline=None,
                                                    poll_interval=1)

    @pytest.mark.parametrize("poll", [0, -1])
    def test_non_positive_poll_interval_is_refused(self, poll: float) -> None:
        with pytest.raises(ValueError, match="poll_interval must be a positive"):
            em_trigger(42, poll=poll)


# --------------------------------------------------------------------------------------------
# Secrets never leak
# --------------------------------------------------------------------------------------------


class TestSecrets:
    def test_secrets_stay_out_of_logs_xcom_results_and_errors(
        self, cdf: Any, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
        no_sleep: list[float],
    ) -> None:
        caplog.set_level(logging.DEBUG)
        cdf.post(RUNS, json=run_doc(42, "Queued"))
        cdf.get(f"{RUNS}/42", [{"json": run_doc(42, "Running")}, {"json": completed_run(42)}])
        cdf.get(f"{RUNS}/43", status_code=401, json={"error": {"code": 401, "message": "Unauthorized"}})
        ti = FakeTI()
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        result = op.execute(make_context(ti))
        with pytest.raises(ApiError) as info:
            op.hook.get_pipeline_run(7, 43)  # 401 twice: refresh once, then a clear error
        assert info.value.status == 401
        logs = all_logs(caplog, capfd)
        assert "Started entity matching pipeline 7: job 42" in logs  # the task log is captured
        for text in (logs, json.dumps(ti.xcoms), json.dumps(result), str(info.value)):
            assert CLIENT_SECRET not in text and ACCESS_TOKEN not in text

    def test_token_endpoint_errors_do_not_echo_the_client_secret(
        self, requests_mock: Any, cognite_conn: None, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        caplog.set_level(logging.DEBUG)
        requests_mock.post(TOKEN_URL, status_code=401, json={
            "error": "invalid_client",
            "error_description": f"AADSTS7000215: Invalid client secret {CLIENT_SECRET}"})
        with pytest.raises(ApiError) as info:
            CogniteHook().run_pipeline(7)
        assert "invalid_client" in str(info.value)
        assert CLIENT_SECRET not in str(info.value) and CLIENT_SECRET not in all_logs(caplog, capfd)
        assert not any(r.url.startswith(BASE) for r in requests_mock.request_history)

    def test_rendered_template_fields_hold_no_secret(self, cognite_conn: None) -> None:
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=7)
        values = {name: getattr(op, name) for name in op.template_fields}
        assert values == {"pipeline_id": 7, "cognite_conn_id": "cognite_default"}

    @pytest.mark.asyncio
    async def test_trigger_events_and_kwargs_hold_no_secret(self, fake_cdf: FakeCdf) -> None:
        fake_cdf.runs[42] = [completed_run(42)]
        trigger = em_trigger(42)
        (event,) = await collect(trigger)
        text = json.dumps(event.payload) + json.dumps(trigger.serialize()[1])
        assert CLIENT_SECRET not in text and ACCESS_TOKEN not in text
