"""HERE operator, sensor, triggers and hook against the running sandbox (real HTTP, real signing)."""

from __future__ import annotations

import asyncio
import json
import logging
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_pipelines.hooks._auth import TOKEN_CACHE
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.here import HerePipelineHook
from airflow_provider_pipelines.jobs.base import JobFailedError
from airflow_provider_pipelines.operators.here import HereSchedulePipelineVersionOperator
from airflow_provider_pipelines.sandbox.config import (
    HERE_ACCESS_KEY_SECRET,
    HERE_PIPELINE_FAILING,
    HERE_PIPELINE_OK,
    HERE_VERSION_FAILING,
    HERE_VERSION_OK,
    HERE_VERSION_OK_SIBLING,
)
from airflow_provider_pipelines.sensors.here import HerePipelineJobSensor

pytestmark = pytest.mark.integration

FAST = {"operation_accepted": 0.05, "operation_processing": 0.1, "job_starting": 0.1, "job_running": 0.4,
        "scheduled_job_delay": 0.3}
CATALOGS = {"weather": {"processingType": "changes", "version": 75, "sinceVersion": 70}}
ACTIVATE = "/pipeline-service*/v2/pipelines/*/versions/*/operations/activate"


class FakeTI:
    dag_id, run_id, task_id, map_index, try_number = "here_it", "manual__1", "run", -1, 1

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = json.loads(json.dumps(value))


class FakeStore(dict):  # the Airflow 3.3 task state store, as the operator uses it
    def set(self, key: str, value: Any, retention: Any = None) -> None:
        self[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.pop(key, None)


@pytest.fixture
def sb(sandbox):
    sandbox.configure(here={"default": FAST})
    return sandbox


def context(store: FakeStore | None = None) -> dict[str, Any]:
    return {"ti": FakeTI(), "task_state_store": store if store is not None else FakeStore()}


def op(**kwargs: Any) -> HereSchedulePipelineVersionOperator:
    params: dict[str, Any] = {"task_id": "run", "pipeline_id": HERE_PIPELINE_OK,
                              "pipeline_version_id": HERE_VERSION_OK, "input_catalogs": CATALOGS,
                              "poll_interval": 0.1, "deferrable": False, "timeout": 60}
    params.update(kwargs)
    return HereSchedulePipelineVersionOperator(**params)


def run_trigger(trigger: Any) -> dict[str, Any]:
    async def collect() -> list[Any]:
        return [event async for event in trigger.run()]

    events = asyncio.run(collect())
    assert len(events) == 1
    return events[0].payload


def run_deferred(
    make: Callable[[], HereSchedulePipelineVersionOperator], ctx: dict[str, Any]
) -> dict[str, Any]:
    """Drive a deferrable operator like Airflow does: execute, run each trigger, resume a new instance."""
    try:
        return make().execute(ctx)
    except TaskDeferred as deferred:
        current = deferred
    deferrals = 0
    while True:
        deferrals += 1
        classpath, kwargs = current.trigger.serialize()
        module, name = classpath.rsplit(".", 1)
        trigger = getattr(__import__(module, fromlist=[name]), name)(**json.loads(json.dumps(kwargs)))
        event = run_trigger(trigger)
        try:
            result = getattr(make(), current.method_name)(ctx, event=event, **(current.kwargs or {}))
            result["_deferrals"] = deferrals
            return result
        except TaskDeferred as again:
            current = again


# --------------------------------------------------------------------------------------------


def test_run_now_in_the_worker(sb, caplog):
    caplog.set_level(logging.DEBUG)
    ctx = context()
    result = op(output_catalog={"baseVersion": 42}).execute(ctx)
    assert result["operation"]["state"] == "succeeded" and result["job"]["state"] == "completed"
    assert result["job"]["catalog_versions"] == {"inputCatalogs": CATALOGS,
                                                 "outputCatalog": {"baseVersion": 42}}
    assert result["job"]["execution_mode"] == "on-demand"
    assert ctx["ti"].xcom["logging_url"].startswith(f"{sb.url}/_sandbox/here/logs?jobId=")
    assert ctx["ti"].xcom["pipeline_ui_url"].endswith("/sparkui")
    assert len(sb.requests(method="POST", path=ACTIVATE)) == 1
    assert list(TOKEN_CACHE.fetches.values()) == [1]
    assert HERE_ACCESS_KEY_SECRET not in caplog.text


def test_run_now_deferred_twice(sb):
    ctx = context()
    result = run_deferred(lambda: op(deferrable=True), ctx)
    assert result["_deferrals"] == 2
    assert result["job"]["state"] == "completed" and ctx["ti"].xcom["job_id"] == result["job"]["job_id"]
    assert len(sb.requests(method="POST", path=ACTIVATE)) == 1


def test_a_failing_job_fails_the_task_in_both_modes(sb):
    for deferrable in (False, True):
        sb.reset({"here": {"default": FAST}})
        def make(deferrable: bool = deferrable) -> HereSchedulePipelineVersionOperator:
            return op(pipeline_id=HERE_PIPELINE_FAILING, pipeline_version_id=HERE_VERSION_FAILING,
                      deferrable=deferrable)

        with pytest.raises(JobFailedError, match=r"ended failed; HERE jobs carry no error message, see the "
                                                 r"logs at http://127\.0\.0\.1:\d+/_sandbox/here/logs\?jobId="):
            run_deferred(make, context())


def test_a_failed_operation_fails_the_task_with_its_message(sb):
    sb.configure_resource("here", "versions", HERE_VERSION_OK, operation_outcome="failure")
    with pytest.raises(JobFailedError, match="ended failed: Operation failed with error - Main class not"):
        op().execute(context())


def test_schedule_then_sensor_waits_for_the_scheduled_job(sb):
    result = op(input_catalogs=None).execute(context())
    assert result["version_state"] == "scheduled" and result["job"] is None
    sensor = HerePipelineJobSensor(task_id="wait", pipeline_id=HERE_PIPELINE_OK,
                                   pipeline_version_id=HERE_VERSION_OK, poke_interval=0.1, timeout=30,
                                   deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context())
    event = run_trigger(deferred.value.trigger)
    job = sensor.execute_complete(context(), event=event)
    assert job["state"] == "completed" and job["execution_mode"] == "scheduled"
    # the version stays scheduled: a run from here is refused with what to do
    with pytest.raises(Exception, match=r"is already scheduled .* Deactivate it first"):
        op().execute(context())


def test_wait_for_job_without_catalogs(sb):
    result = op(input_catalogs=None, wait_for_job=True).execute(context())
    assert result["job"]["state"] == "completed" and result["job"]["execution_mode"] == "scheduled"


def test_kill_while_deferred_cancels_the_run(sb):
    sb.configure_resource("here", "versions", HERE_VERSION_OK, job_running=30)
    operator = op(deferrable=True)
    ctx = context()
    with pytest.raises(TaskDeferred) as first:
        operator.execute(ctx)
    event = run_trigger(first.value.trigger)
    with pytest.raises(TaskDeferred) as second:
        op(deferrable=True).execute_operation_complete(ctx, event=event, **first.value.kwargs)
    trigger = second.value.trigger
    assert trigger.cancel_on_kill

    async def kill_when_running() -> dict[str, Any]:
        watch = asyncio.ensure_future(anext(trigger.run()))
        hook = HerePipelineHook()
        for _ in range(100):
            version = await hook.aget_pipeline_version(HERE_PIPELINE_OK, HERE_VERSION_OK)
            if (version.get("latestJob") or {}).get("state") == "running":
                break
            await asyncio.sleep(0.05)
        await trigger.on_kill()
        return (await asyncio.wait_for(watch, 10)).payload

    payload = asyncio.run(kill_when_running())
    assert payload["status"] == "failed" and payload["state"] == "canceled"
    assert len(sb.requests(method="POST", path="*/operations/cancel")) == 1
    assert HerePipelineHook().get_pipeline_version(HERE_PIPELINE_OK, HERE_VERSION_OK)["state"] == "ready"


def test_kill_in_the_worker_cancels_the_run(sb):
    sb.configure_resource("here", "versions", HERE_VERSION_OK, job_running=30)
    operator = op()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            operator.execute(context())
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    hook = HerePipelineHook()
    for _ in range(200):
        latest = hook.get_pipeline_version(HERE_PIPELINE_OK, HERE_VERSION_OK).get("latestJob") or {}
        if latest.get("state") == "running":
            break
        time.sleep(0.05)
    operator.on_kill()
    thread.join(15)
    assert errors and isinstance(errors[0], JobFailedError) and "ended canceled" in str(errors[0])


def test_307_is_followed_to_the_same_host(sb):
    sb.configure_resource("here", "versions", HERE_VERSION_OK, redirect=True)
    result = op().execute(context())
    assert result["job"]["state"] == "completed"
    posts = sb.requests(method="POST", path=ACTIVATE)
    assert [p["status"] for p in posts] == [307, 202]
    assert posts[1]["path"].startswith("/pipeline-service-alt/")


def test_307_to_a_foreign_host_is_refused(sb):
    sb.configure_resource("here", "versions", HERE_VERSION_OK, redirect="http://127.0.0.2:9/pipeline-service")
    with pytest.raises(ApiError, match=r"redirected to http://127\.0\.0\.2:9, .*no token was sent"):
        op().execute(context())
    assert [p["status"] for p in sb.requests(method="POST", path=ACTIVATE)] == [307]


def test_expired_token_mid_run_is_refreshed_once(sb):
    sb.configure_resource("here", "versions", HERE_VERSION_OK, job_running=1.0)
    operator = op()
    ctx = context()
    thread = threading.Thread(target=lambda: ctx.setdefault("result", operator.execute(ctx)))
    thread.start()
    time.sleep(0.6)
    sb.expire_tokens("here")
    thread.join(30)
    assert ctx["result"]["job"]["state"] == "completed"
    assert list(TOKEN_CACHE.fetches.values()) == [2]
    assert sb.requests(status=401, vendor="here")


def test_rate_limits_are_honoured(sb):
    sb.inject_fault(method="GET", path="/pipeline-service/v2/pipelines/*/operations/*", action="status",
                    status=429, retry_after=0.2, times=2)
    assert op().execute(context())["job"]["state"] == "completed"
    assert len(sb.requests(method="GET", path="*/operations/*", status=429)) == 2


def test_an_active_sibling_is_reported_with_heres_reason(sb):
    op(input_catalogs=None).execute(context())  # version a1 scheduled
    with pytest.raises(ApiError, match=r"HTTP 400: Cannot activate: sibling PipelineVersion .* \(code E1001"):
        op(pipeline_version_id=HERE_VERSION_OK_SIBLING).execute(context())


def test_retry_reattaches_instead_of_starting_a_second_run(sb):
    sb.configure_resource("here", "versions", HERE_VERSION_OK, job_running=1.0)
    store = FakeStore()
    with pytest.raises(TaskDeferred):
        op(deferrable=True).execute(context(store))  # the worker "dies" while deferred
    assert store[HereSchedulePipelineVersionOperator.STATE_KEY]["operation_id"]
    retry = context(store)
    retry["ti"].try_number = 2
    result = op().execute(retry)
    assert result["job"]["state"] == "completed"
    assert len(sb.requests(method="POST", path=ACTIVATE)) == 1
    assert store == {}


def test_dag_with_the_deferred_operator_and_sensor(sb, dags_test, tmp_path):
    dag_file = tmp_path / "here_dag.py"
    dag_file.write_text(textwrap.dedent(f"""
        from datetime import datetime

        from airflow.sdk import DAG

        from airflow_provider_pipelines.operators.here import HereSchedulePipelineVersionOperator
        from airflow_provider_pipelines.sensors.here import HerePipelineJobSensor

        OK = ("here_ok", {HERE_PIPELINE_OK!r}, {HERE_VERSION_OK!r})
        FAILING = ("here_failing", {HERE_PIPELINE_FAILING!r}, {HERE_VERSION_FAILING!r})
        for dag_id, pipeline, version in (OK, FAILING):
            with DAG(dag_id, start_date=datetime(2026, 1, 1), schedule=None, params={{"version": 75}}):
                run = HereSchedulePipelineVersionOperator(
                    task_id="run_now", pipeline_id=pipeline, pipeline_version_id=version,
                    input_catalogs={{"weather": {{"processingType": "changes",
                                                 "version": "{{{{ params.version }}}}"}}}},
                    deferrable=True, poll_interval=0.2, timeout=120,
                )
                check = HerePipelineJobSensor(
                    task_id="check", pipeline_id=pipeline, pipeline_version_id=version,
                    job_id="{{{{ ti.xcom_pull(task_ids='run_now', key='job_id') }}}}",
                    deferrable=True, poke_interval=0.5, timeout=60,
                )
                run >> check
    """))
    env = {"AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path)}
    # slow enough that both phases defer (the task's first status check finds them still running)
    sb.configure_resource("here", "versions", HERE_VERSION_OK, operation_processing=3.0, job_running=2.0)
    ok = dags_test(dag_file, "here_ok", env=env)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    output = ok.stdout + ok.stderr
    assert output.count("[DAG TEST] running trigger in line") == 2  # operation, then job: one deadline
    assert "HERE job" in output and "completed" in output
    assert HERE_ACCESS_KEY_SECRET not in output
    jobs = sb.requests(method="GET", path="/pipeline-service/v2/pipelines/*/versions/*")
    assert jobs and len(sb.requests(method="POST", path=ACTIVATE)) == 1

    failing = dags_test(dag_file, "here_failing", env=env)
    output = failing.stdout + failing.stderr
    assert failing.returncode == 1, output[-3000:]
    assert "ended failed; HERE jobs carry no error message" in output
def test_here_test_connection_against_sandbox(sandbox):
    ok, message = HerePipelineHook().test_connection()
    assert ok, message
    assert "2 pipelines visible" in message
    assert sandbox.requests(method="GET", path="*/v2/pipelines")
