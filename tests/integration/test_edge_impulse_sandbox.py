"""Edge Impulse hook, operator, sensor and trigger against the running sandbox.

The sandbox emulates the inferred Edge Impulse behaviour (edge-impulse.md A.2): pipeline 12
succeeds, 13 fails in its second step, 14 cannot start (``lastRunStartError``); a second run while
one is in progress is refused with ``success: false`` (unconfirmed in the real API).
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_pipelines._compat import AirflowException
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.edge_impulse import EdgeImpulseHook
from airflow_provider_pipelines.jobs.base import JobFailedError
from airflow_provider_pipelines.operators.edge_impulse import EdgeImpulseRunPipelineOperator
from airflow_provider_pipelines.sandbox.config import (
    EI_API_KEY,
    EI_ORGANIZATION_ID,
    EI_PIPELINE_BROKEN_START,
    EI_PIPELINE_FAILING,
    EI_PIPELINE_NIGHTLY,
    EI_PROJECT_API_KEY,
    EI_PROJECT_HMAC_KEY,
)
from airflow_provider_pipelines.sensors.edge_impulse import EdgeImpulsePipelineRunSensor
from airflow_provider_pipelines.triggers.edge_impulse import EdgeImpulsePipelineRunTrigger

pytestmark = pytest.mark.integration

ORG = EI_ORGANIZATION_ID
SECRETS = (EI_API_KEY, EI_PROJECT_API_KEY, EI_PROJECT_HMAC_KEY)


def pipeline_path(pipeline_id: int) -> str:
    return f"/v1/api/organizations/{ORG}/pipelines/{pipeline_id}"


def assert_no_secrets(*values: Any) -> None:
    for value in values:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        for secret in SECRETS:
            assert secret not in text


class TI:
    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


class Store:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self.data[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


@pytest.fixture
def context() -> dict[str, Any]:
    return {"ti": TI(), "task_state_store": Store()}


@pytest.fixture
def logs(caplog, capfd):
    caplog.set_level("DEBUG")

    def _text() -> str:
        out, err = capfd.readouterr()
        return caplog.text + out + err

    return _text


def op(**kwargs: Any) -> EdgeImpulseRunPipelineOperator:
    params: dict[str, Any] = {"task_id": "run", "organization_id": ORG, "pipeline_id": EI_PIPELINE_NIGHTLY,
                              "poll_interval": 0.1, "deferrable": False, "timeout": 60}
    params.update(kwargs)
    return EdgeImpulseRunPipelineOperator(**params)


def runs_started(sandbox: Any, pipeline_id: int) -> int:
    """Runs the sandbox created for a pipeline. Its request log cannot tell a refused start
    (``success: false``, HTTP 200) from an accepted one, so this reads the emulator's state."""
    return sum(1 for run in sandbox.state.edge_impulse.runs.values() if run["pipelineId"] == pipeline_id)


# ---- hook ----------------------------------------------------------------------------------------------


def test_hook_reads_a_pipeline_with_step_secrets_redacted(sandbox):
    pipeline = EdgeImpulseHook().get_pipeline(ORG, EI_PIPELINE_NIGHTLY)
    assert pipeline["id"] == EI_PIPELINE_NIGHTLY
    project_step = next(s for s in pipeline["steps"] if s.get("uploadType") == "project")
    assert project_step["projectApiKey"] == "***" and project_step["projectHmacKey"] == "***"
    assert_no_secrets(pipeline)


def test_unknown_pipeline_is_success_false_with_http_200(sandbox):
    with pytest.raises(ApiError) as info:
        EdgeImpulseHook().get_pipeline(ORG, 99)
    assert info.value.status == 200
    assert ("get organizational pipeline (organization 1 pipeline 99) failed: HTTP 200: Pipeline 99 not "
            "found") in str(info.value)


def test_revoked_key_is_a_clear_401(sandbox):
    sandbox.expire_tokens("edge_impulse")
    with pytest.raises(ApiError) as info:
        EdgeImpulseHook().get_pipeline(ORG, EI_PIPELINE_NIGHTLY)
    assert info.value.status == 401
    assert "revoked" in str(info.value)
    assert_no_secrets(str(info.value))


def test_test_connection(sandbox, conn_env):
    conn_env("ei_test", conn_type="edge_impulse", host=sandbox.url, password=EI_API_KEY,
             extra={"organization_id": ORG})
    ok, message = EdgeImpulseHook("ei_test").test_connection()
    assert ok, message
    assert message == "Connected to Edge Impulse organization 1 (3 pipelines)."
    conn_env("ei_bad", conn_type="edge_impulse", host=sandbox.url, password="ei_wrong",
             extra={"organization_id": ORG})
    assert EdgeImpulseHook("ei_bad").test_connection() == (
        False,
        "Edge Impulse API: list organizational pipelines (organization 1) failed: HTTP 401: Invalid API key",
    )


def test_429_on_polling_and_on_start_is_retried(sandbox, context):
    sandbox.inject_fault(method="POST", path=f"{pipeline_path(EI_PIPELINE_NIGHTLY)}/run", status=429,
                         retry_after=0, times=1)
    sandbox.inject_fault(method="GET", path=pipeline_path(EI_PIPELINE_NIGHTLY), status=429, retry_after=0,
                         times=2)
    result = op().execute(context)
    assert result["state"] == "finished"
    assert runs_started(sandbox, EI_PIPELINE_NIGHTLY) == 1


def test_503_on_start_is_not_retried_and_no_run_is_adopted(sandbox, context):
    """The sandbox fails the request before the handler: no run started, so nothing may be adopted."""
    sandbox.inject_fault(method="POST", path=f"{pipeline_path(EI_PIPELINE_NIGHTLY)}/run", status=503, times=1)
    with pytest.raises(ApiError) as info:
        op().execute(context)
    assert info.value.ambiguous and info.value.status == 503
    assert len(sandbox.requests(method="POST", path=f"{pipeline_path(EI_PIPELINE_NIGHTLY)}/run")) == 1


# ---- operator (worker mode) --------------------------------------------------------------------------------


def test_operator_success(sandbox, context, logs):
    result = op().execute(context)
    assert result["state"] == "finished" and result["run_id"] == context["ti"].xcom["run_id"]
    assert context["ti"].xcom["pipeline_url"] == f"{sandbox.url}/organization/1/pipelines"
    assert [s["name"] for s in result["steps"]] == ["Import from bucket", "Import into project"]
    assert all(s["status"] == "finished" for s in result["steps"])
    assert result["item_count_after"]["itemCount"] == result["item_count_before"]["itemCount"] + 10
    text = logs()
    assert "Started Edge Impulse pipeline 12" in text
    assert_no_secrets(text, result, context["ti"].xcom)


def test_operator_failed_step(sandbox, context, logs):
    with pytest.raises(JobFailedError) as info:
        op(pipeline_id=EI_PIPELINE_FAILING).execute(context)
    assert "step 2 'Import into project' failed (status=failed, transformJobStatus=failed)" in str(info.value)
    assert_no_secrets(logs(), str(info.value))


def test_operator_start_error(sandbox, context):
    with pytest.raises(JobFailedError, match="transformation block 57 has been deleted"):
        op(pipeline_id=EI_PIPELINE_BROKEN_START).execute(context)


def test_operator_adopts_or_fails_on_a_running_pipeline(sandbox, context):
    sandbox.configure_resource("edge_impulse", "pipelines", EI_PIPELINE_NIGHTLY, transform=1.0)
    foreign = EdgeImpulseHook().run_pipeline(ORG, EI_PIPELINE_NIGHTLY)
    with pytest.raises(AirflowException, match=f"already has run {foreign['id']} in progress"):
        op(if_running="fail").execute(context)
    with pytest.raises(ApiError, match="already running"):
        op(if_running="start_new").execute(context)
    result = op(if_running="wait").execute(context)
    assert result["run_id"] == foreign["id"] and result["state"] == "finished"
    assert runs_started(sandbox, EI_PIPELINE_NIGHTLY) == 1


def test_operator_retry_reattaches(sandbox, context):
    sandbox.configure_resource("edge_impulse", "pipelines", EI_PIPELINE_NIGHTLY, transform=1.0)
    first = op(wait_for_completion=False).execute(context)
    result = op(if_running="fail").execute(context)  # a retry: its own run, never "fail"
    assert result["run_id"] == first["run_id"]
    assert runs_started(sandbox, EI_PIPELINE_NIGHTLY) == 1


def test_on_kill_stops_only_our_run(sandbox, context):
    sandbox.configure_resource("edge_impulse", "pipelines", EI_PIPELINE_NIGHTLY, transform=None)  # never ends
    task = op()
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("error", _capture(task.execute, context)))
    thread.start()
    deadline = time.time() + 10
    while len(sandbox.requests(method="GET", path=pipeline_path(EI_PIPELINE_NIGHTLY))) < 3:
        assert time.time() < deadline
        time.sleep(0.05)
    task.on_kill()
    thread.join(10)
    assert len(sandbox.requests(method="POST", path=f"{pipeline_path(EI_PIPELINE_NIGHTLY)}/stop")) == 1
    assert isinstance(outcome["error"], JobFailedError)  # the stopped run ends failed


def _capture(fn: Any, *args: Any) -> BaseException | None:
    try:
        fn(*args)
    except BaseException as err:
        return err
    return None


def test_on_kill_leaves_an_adopted_run_alone(sandbox, context):
    sandbox.configure_resource("edge_impulse", "pipelines", EI_PIPELINE_NIGHTLY, transform=None)
    EdgeImpulseHook().run_pipeline(ORG, EI_PIPELINE_NIGHTLY)
    task = op(wait_for_completion=False)
    task.execute(context)
    task.on_kill()
    assert sandbox.requests(method="POST", path=f"{pipeline_path(EI_PIPELINE_NIGHTLY)}/stop") == []


# ---- sensor and trigger ------------------------------------------------------------------------------------


def test_sensor_pokes_until_done(sandbox, context):
    run = EdgeImpulseHook().run_pipeline(ORG, EI_PIPELINE_NIGHTLY)
    sensor = EdgeImpulsePipelineRunSensor(task_id="wait", organization_id=ORG,
                                          pipeline_id=EI_PIPELINE_NIGHTLY, run_id=run["id"],
                                          poke_interval=0.1, timeout=30)
    result = sensor.execute(context)
    assert result["state"] == "finished" and result["run_id"] == run["id"]
    assert_no_secrets(result)


def test_operator_defers_and_trigger_finishes(sandbox, context):
    with pytest.raises(TaskDeferred) as info:
        op(deferrable=True, pipeline_id=EI_PIPELINE_FAILING).execute(context)
    trigger = info.value.trigger
    _, kwargs = trigger.serialize()
    assert_no_secrets(kwargs)

    async def collect() -> list[Any]:
        return [event async for event in EdgeImpulsePipelineRunTrigger(**kwargs).run()]

    events = asyncio.run(asyncio.wait_for(collect(), 30))
    assert len(events) == 1 and events[0].payload["status"] == "failed"
    assert_no_secrets(events[0].payload)
    with pytest.raises(JobFailedError, match="step 2 'Import into project' failed"):
        op(pipeline_id=EI_PIPELINE_FAILING).execute_complete(context, events[0].payload, **info.value.kwargs)


def test_trigger_on_kill_stops_our_run(sandbox, context):
    sandbox.configure_resource("edge_impulse", "pipelines", EI_PIPELINE_NIGHTLY, transform=None)
    with pytest.raises(TaskDeferred) as info:
        op(deferrable=True).execute(context)
    _, kwargs = info.value.trigger.serialize()
    asyncio.run(EdgeImpulsePipelineRunTrigger(**kwargs).on_kill())
    pipeline = EdgeImpulseHook().get_pipeline(ORG, EI_PIPELINE_NIGHTLY)
    assert pipeline["currentRun"] is None and pipeline["lastRun"]["id"] == kwargs["ref"]["run_id"]
    assert len(sandbox.requests(method="POST", path=f"{pipeline_path(EI_PIPELINE_NIGHTLY)}/stop")) == 1


# ---- the deferred path through the real `airflow dags test` ------------------------------------------------

DAG_FILE = textwrap.dedent(
    """
    from datetime import datetime

    from airflow.sdk import DAG

    from airflow_provider_pipelines.operators.edge_impulse import EdgeImpulseRunPipelineOperator
    from airflow_provider_pipelines.sensors.edge_impulse import EdgeImpulsePipelineRunSensor

    with DAG(dag_id="ei_deferred", schedule=None, start_date=datetime(2025, 1, 1), catchup=False):
        start = EdgeImpulseRunPipelineOperator(
            task_id="start", organization_id=1, pipeline_id="{{ dag_run.conf['pipeline_id'] }}",
            wait_for_completion=False,
        )
        wait = EdgeImpulsePipelineRunSensor(
            task_id="wait", organization_id=1, pipeline_id="{{ dag_run.conf['pipeline_id'] }}",
            run_id="{{ ti.xcom_pull(task_ids='start', key='run_id') }}",
            deferrable=True, poke_interval=0.5, timeout=120,
        )
        run = EdgeImpulseRunPipelineOperator(
            task_id="run", organization_id=1, pipeline_id="{{ dag_run.conf['pipeline_id'] }}",
            deferrable=True, poll_interval=0.5, timeout=120,
        )
        start >> wait >> run
    """
)


@pytest.fixture
def dag_file(tmp_path: Path) -> Path:
    path = tmp_path / "ei_deferred.py"
    path.write_text(DAG_FILE)
    return path


def in_dags_folder(dag_file: Path) -> dict[str, str]:
    """`airflow dags test --dagfile-path` only accepts files inside the DAGs-folder bundle."""
    return {"AIRFLOW__CORE__DAGS_FOLDER": str(dag_file.parent)}


def test_dags_test_deferred_success(sandbox, dags_test, dag_file):
    """`airflow dags test` exits 0 and marks the DAG run successful; both deferrals ran the trigger inline."""
    sandbox.configure_resource("edge_impulse", "pipelines", EI_PIPELINE_NIGHTLY, transform=1.5)
    proc = dags_test(dag_file, "ei_deferred", env=in_dags_folder(dag_file),
                     conf={"pipeline_id": EI_PIPELINE_NIGHTLY})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert output.count("[DAG TEST] running trigger in line") == 2  # the sensor and the operator deferred
    assert "Marking run <DagRun ei_deferred" in output and "> successful" in output
    assert runs_started(sandbox, EI_PIPELINE_NIGHTLY) == 2  # one by "start", one by "run"
    assert_no_secrets(output)


def test_dags_test_deferred_failure(sandbox, dags_test, dag_file):
    """A failed run fails the deferred sensor with the reasons; `airflow dags test` exits 1."""
    sandbox.configure_resource("edge_impulse", "pipelines", EI_PIPELINE_FAILING, transform=1.5)
    proc = dags_test(dag_file, "ei_deferred", env=in_dags_folder(dag_file),
                     conf={"pipeline_id": EI_PIPELINE_FAILING})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-4000:]
    assert "[DAG TEST] running trigger in line" in output
    assert ("JobFailedError: Organizational pipeline run (Edge Impulse organization 1, pipeline 13, run "
            in output)
    assert "step 2 'Import into project' failed (status=failed, transformJobStatus=failed)" in output
    assert "DagRun failed" in output
    assert "[DAG TEST] starting task_id=run" not in output  # downstream of the failed sensor
    assert runs_started(sandbox, EI_PIPELINE_FAILING) == 1
    assert_no_secrets(output)
