"""The shared foundation (HTTP core, token cache, CogniteHook auth, job watching) against the sandbox.

The sandbox's fault injection plays the misbehaving server; the HTTP core's sleeps are recorded
instead of slept, and the job loop's sleeps advance the sandbox's simulation clock, so these
tests are exact and fast.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any

import pytest

from airflow_provider_pipelines.hooks._http import ApiError, async_sessions_created
from airflow_provider_pipelines.hooks.cognite import CogniteHook
from airflow_provider_pipelines.jobs import base
from airflow_provider_pipelines.jobs.base import (
    JobTimeoutError,
    Outcome,
    PollPolicy,
    awatch_job,
    wait_for_job,
)
from airflow_provider_pipelines.jobs.cognite import ENTITY_MATCHING_RUN
from airflow_provider_pipelines.sandbox.config import (
    COGNITE_CLIENT_SECRET,
    EM_PIPELINE_ASSETS_ID,
    EM_PIPELINE_ASSETS_XID,
    EM_PIPELINE_FAILING_ID,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RUNS = "/api/v1/projects/*/context/entitymatching/pipelines/*/runs*"
TOKEN_PATH = "/sandbox-tenant/oauth2/v2.0/token"


def hook_with_recorded_sleeps(conn_id: str = "cognite_default") -> tuple[CogniteHook, list[float]]:
    hook = CogniteHook(conn_id)
    waits: list[float] = []
    hook.core.sleep = waits.append
    return hook, waits


def token_posts(sandbox: Any) -> list[dict[str, Any]]:
    return list(sandbox.requests(method="POST", path=TOKEN_PATH))


def test_test_connection_succeeds(sandbox: Any) -> None:
    assert CogniteHook().test_connection() == (True, "Connected to CDF project 'sandbox'.")
    assert len(token_posts(sandbox)) == 1


def test_test_connection_wrong_secret(sandbox: Any, conn_env: Any) -> None:
    conn = sandbox.connection_dicts()["AIRFLOW_CONN_COGNITE_DEFAULT"]
    conn_env("cognite_wrong", **{**conn, "password": "not-the-secret-at-all"})
    ok, message = CogniteHook("cognite_wrong").test_connection()
    assert not ok and message.startswith("The token endpoint refused the client credentials (HTTP 401)")
    assert "AADSTS7000215" in message and "not-the-secret-at-all" not in message


def test_test_connection_unknown_project(sandbox: Any, conn_env: Any) -> None:
    conn = sandbox.connection_dicts()["AIRFLOW_CONN_COGNITE_DEFAULT"]
    conn_env("cognite_elsewhere", **{**conn, "extra": {**conn["extra"], "project": "not-mine"}})
    ok, message = CogniteHook("cognite_elsewhere").test_connection()
    assert not ok and message.startswith("CDF project 'not-mine' is unknown, or this identity has no access")
    assert "HTTP 403" in message and "request id" in message and COGNITE_CLIENT_SECRET not in message


def test_expired_token_is_refreshed_once(sandbox: Any) -> None:
    hook, _ = hook_with_recorded_sleeps()
    run = hook.run_pipeline(EM_PIPELINE_ASSETS_ID)
    sandbox.expire_tokens(vendor="cognite")
    assert hook.get_pipeline_run(EM_PIPELINE_ASSETS_ID, run["jobId"])["jobId"] == run["jobId"]
    assert len(token_posts(sandbox)) == 2
    statuses = [r["status"] for r in sandbox.requests(method="GET", path=RUNS)]
    assert statuses == [401, 200]


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_with_retry_after_is_waited_out(sandbox: Any, form: str) -> None:
    hook, waits = hook_with_recorded_sleeps()
    run = hook.run_pipeline(EM_PIPELINE_ASSETS_ID)
    retry_after: Any = 7
    if form == "http-date":
        retry_after = email.utils.formatdate(time.time() + 20, usegmt=True)
    sandbox.inject_fault(method="GET", path=RUNS, action="status", status=429, retry_after=retry_after,
                         times=2)
    assert hook.get_pipeline_run(EM_PIPELINE_ASSETS_ID, run["jobId"])["status"] in ("Queued", "Running")
    if form == "seconds":
        assert waits == [7.0, 7.0]
    else:
        assert len(waits) == 2 and all(17 <= w <= 20.5 for w in waits)


def test_starting_a_run_is_not_repeated_after_a_503(sandbox: Any) -> None:
    hook, waits = hook_with_recorded_sleeps()
    sandbox.inject_fault(method="POST", path=RUNS, action="status", status=503, times=1)
    with pytest.raises(ApiError) as info:
        hook.run_pipeline(EM_PIPELINE_ASSETS_ID)
    assert info.value.ambiguous and info.value.status == 503 and waits == []
    assert len(sandbox.requests(method="POST", path=RUNS)) == 1


def test_dropped_connection_on_start_is_ambiguous_and_not_repeated(sandbox: Any) -> None:
    hook, _ = hook_with_recorded_sleeps()
    sandbox.inject_fault(method="POST", path=RUNS, action="drop", times=1)
    with pytest.raises(ApiError) as info:
        hook.run_pipeline(EM_PIPELINE_ASSETS_ID)
    assert info.value.ambiguous and info.value.status is None
    assert len(sandbox.requests(method="POST", path=RUNS)) == 1


def test_starting_a_run_is_retried_on_429(sandbox: Any) -> None:
    hook, waits = hook_with_recorded_sleeps()
    sandbox.inject_fault(method="POST", path=RUNS, action="status", status=429, retry_after=1, times=1)
    assert hook.run_pipeline(EM_PIPELINE_ASSETS_ID)["status"] == "Queued"
    assert waits == [1.0] and len(sandbox.requests(method="POST", path=RUNS)) == 2


def test_malformed_status_body_is_retried(sandbox: Any) -> None:
    hook, waits = hook_with_recorded_sleeps()
    run = hook.run_pipeline(EM_PIPELINE_ASSETS_ID)
    sandbox.inject_fault(method="GET", path=RUNS, action="malformed", times=1)
    assert hook.get_pipeline_run(EM_PIPELINE_ASSETS_ID, run["jobId"])["jobId"] == run["jobId"]
    assert len(waits) == 1


def test_slow_answer_hits_the_read_timeout_and_is_retried(sandbox: Any, conn_env: Any) -> None:
    conn = sandbox.connection_dicts()["AIRFLOW_CONN_COGNITE_DEFAULT"]
    conn_env("cognite_impatient", **{**conn, "extra": {**conn["extra"], "read_timeout": 0.3}})
    hook, _ = hook_with_recorded_sleeps("cognite_impatient")
    run = hook.run_pipeline(EM_PIPELINE_ASSETS_ID)
    sandbox.inject_fault(method="GET", path=RUNS, action="delay", seconds=2, times=1)
    assert hook.get_pipeline_run(EM_PIPELINE_ASSETS_ID, run["jobId"])["jobId"] == run["jobId"]
    assert len(sandbox.requests(method="GET", path=RUNS)) == 2


def test_fifty_concurrent_async_calls_share_one_token_and_one_session(sandbox: Any) -> None:
    async def scenario() -> list[dict[str, Any]]:
        hook = CogniteHook()
        run = await hook.arun_pipeline(EM_PIPELINE_ASSETS_ID)
        return await asyncio.gather(*(hook.aget_pipeline_run(EM_PIPELINE_ASSETS_ID, run["jobId"])
                                      for _ in range(50)))

    before = async_sessions_created()
    results = asyncio.run(scenario())
    assert len(results) == 50 and len({r["jobId"] for r in results}) == 1
    assert len(token_posts(sandbox)) == 1
    assert async_sessions_created() - before <= 2  # one for the start, one for the 50 concurrent reads


# ----------------------------------------------------------------------------------------------
# The job loop on the simulation clock
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def sim_time(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Freeze the sandbox clock; the job loop's sleeps advance it (and the deadline clock) instead."""
    sandbox.clock.freeze()
    offset = {"s": 0.0}

    def now() -> float:
        return time.time() + offset["s"]

    def sleep(seconds: float) -> None:
        offset["s"] += seconds
        sandbox.advance(seconds)

    async def asleep(seconds: float) -> None:
        sleep(seconds)

    monkeypatch.setattr(base, "_now", now)
    monkeypatch.setattr(base, "_sleep", sleep)
    monkeypatch.setattr(base, "_asleep", asleep)
    return now


def test_wait_for_job_follows_a_run_to_completion(sandbox: Any, sim_time: Any) -> None:
    hook = CogniteHook()
    run = hook.run_pipeline(EM_PIPELINE_ASSETS_ID)
    ref = {"pipeline_id": EM_PIPELINE_ASSETS_ID, "job_id": run["jobId"]}
    snap = wait_for_job(ENTITY_MATCHING_RUN, hook, ref, PollPolicy(0.5, max_interval=1.0, jitter=0), None)
    assert snap.outcome is Outcome.SUCCESS and snap.state == "Completed"
    assert snap.result["matches_count"] > 0
    assert 4 <= len(sandbox.requests(method="GET", path=RUNS)) <= 6  # 3 simulated seconds at 0.5-1 s


def test_awatch_job_reports_a_failed_run(sandbox: Any, sim_time: Any) -> None:
    async def scenario() -> Any:
        hook = CogniteHook()
        run = await hook.arun_pipeline(EM_PIPELINE_FAILING_ID)
        ref = {"pipeline_id": EM_PIPELINE_FAILING_ID, "job_id": run["jobId"]}
        return await awatch_job(ENTITY_MATCHING_RUN, hook, ref, PollPolicy(0.5, jitter=0), None)

    snap = asyncio.run(scenario())
    assert snap.outcome is Outcome.FAILED and snap.state == "Failed" and snap.message


def test_deadline_with_a_run_that_never_finishes(sandbox: Any, sim_time: Any) -> None:
    sandbox.configure_resource("cognite", "entity_matching", EM_PIPELINE_ASSETS_XID, running=None)
    hook = CogniteHook()
    run = hook.run_pipeline(EM_PIPELINE_ASSETS_ID)
    ref = {"pipeline_id": EM_PIPELINE_ASSETS_ID, "job_id": run["jobId"]}
    with pytest.raises(JobTimeoutError) as info:
        wait_for_job(ENTITY_MATCHING_RUN, hook, ref, PollPolicy(2, jitter=0), sim_time() + 30)
    assert info.value.last is not None and info.value.last.state == "Running"
    assert "its last status was 'Running'" in str(info.value)
    assert "CogniteEntityMatchingPipelineRunSensor(" in str(info.value)


def test_poll_errors_with_retry_after_are_tolerated(sandbox: Any, sim_time: Any) -> None:
    hook = CogniteHook()
    hook.core.sleep = lambda seconds: None  # the HTTP core's own retries: no waiting
    run = hook.run_pipeline(EM_PIPELINE_ASSETS_ID)
    ref = {"pipeline_id": EM_PIPELINE_ASSETS_ID, "job_id": run["jobId"]}
    # one whole poll (all the core's attempts) answers 429 Retry-After 4, then the run goes on
    attempts = hook.resolved.http.max_attempts
    sandbox.inject_fault(method="GET", path=RUNS, action="status", status=429, retry_after=4, times=attempts)
    started = sim_time()
    snap = wait_for_job(ENTITY_MATCHING_RUN, hook, ref, PollPolicy(1, jitter=0), None)
    assert snap.state == "Completed"
    assert sim_time() - started >= 4
