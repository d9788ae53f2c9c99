"""Extraction pipeline runs against the running sandbox: operator, sensor, trigger, and the callback
on a failing task (and its DAG) under the real ``airflow dags test`` CLI.

Fault injection reproduces the ambiguous create: a 503 or a dropped connection in front of the
API (nothing recorded), and a slow answer that the client gives up on while the sandbox still
records the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest

from airflow_provider_pipelines.hooks import cognite as cognite_hooks
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.cognite import CogniteHook, to_epoch_ms
from airflow_provider_pipelines.jobs.cognite import extraction_report_ref
from airflow_provider_pipelines.operators.cognite import CogniteExtractionPipelineRunOperator
from airflow_provider_pipelines.sandbox.config import (
    COGNITE_CLIENT_SECRET,
    EXTPIPE_CONTEXT_XID,
    EXTPIPE_EXTRACTOR_XID,
)
from airflow_provider_pipelines.sensors.cognite import (
    CogniteExtractionPipelineRunSensor,
    ExtractionRunFailedError,
)
from airflow_provider_pipelines.triggers.cognite import CogniteExtractionPipelineRunTrigger

pytestmark = pytest.mark.integration

CREATE = "*/extpipes/runs"
XID = EXTPIPE_EXTRACTOR_XID


def runs(xid: str = XID, **filters: Any) -> list[dict[str, Any]]:
    return CogniteHook().list_extpipe_runs(CogniteHook.extpipe_runs_filter(xid, **filters))


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def fast_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cognite_hooks, "REPORT_CHECK_DELAY", 0.0)


class TestOperator:
    def test_report_reaches_the_sandbox(self, sandbox: Any) -> None:
        created = now_ms()
        op = CogniteExtractionPipelineRunOperator(task_id="r", external_id=XID, status="failure",
                                                  message="m" * 1200, created_time=created)
        run = op.execute({})
        assert run["status"] == "failure" and run["createdTime"] == created and run["externalId"] == XID
        assert len(run["message"]) == 1000 and run["message"].endswith(" …[truncated]")
        pipeline = CogniteHook().retrieve_extpipe(XID)
        assert pipeline["lastFailure"] == created and pipeline["lastMessage"] == run["message"]
        sent = sandbox.requests(method="POST", path=CREATE)
        assert len(sent) == 1 and len(sent[0]["body"]["items"]) == 1

    def test_503_in_front_of_the_api_is_sent_again_once(self, sandbox: Any, fast_checks: None) -> None:
        sandbox.inject_fault(method="POST", path=CREATE, action="status", status=503, times=1)
        created = now_ms()
        CogniteExtractionPipelineRunOperator(task_id="r", external_id=XID, status="success",
                                             message="retry me", created_time=created).execute({})
        assert len(sandbox.requests(method="POST", path=CREATE)) == 2
        assert len(sandbox.requests(method="POST", path="*/extpipes/runs/list")) == 1  # one check
        assert [r["createdTime"] for r in runs(statuses=["success"], created_min=created)] == [created]

    def test_dropped_connection_is_sent_again_once(self, sandbox: Any, fast_checks: None) -> None:
        sandbox.inject_fault(method="POST", path=CREATE, action="drop", times=1)
        created = now_ms()
        CogniteExtractionPipelineRunOperator(task_id="r", external_id=XID, status="seen",
                                             created_time=created).execute({})
        assert len(runs(statuses=["seen"], created_min=created)) == 1
        assert len(sandbox.requests(method="POST", path=CREATE)) == 2

    def test_answer_lost_after_recording_is_not_doubled(
        self, sandbox: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # the client gives up after 0.5 s; the sandbox records the run after 1 s; we check after 2 s more
        conn = json.loads(os.environ["AIRFLOW_CONN_COGNITE_DEFAULT"])
        conn["extra"]["read_timeout"] = 0.5
        monkeypatch.setenv("AIRFLOW_CONN_COGNITE_DEFAULT", json.dumps(conn))
        monkeypatch.setattr(cognite_hooks, "REPORT_CHECK_DELAY", 2.0)
        sandbox.inject_fault(method="POST", path=CREATE, action="delay", seconds=1.0, times=1)
        created = now_ms()
        run = CogniteExtractionPipelineRunOperator(task_id="r", external_id=XID, status="success",
                                                   message="slow answer", created_time=created).execute({})
        recorded = runs(statuses=["success"], created_min=created)
        assert len(recorded) == 1 and run["id"] == recorded[0]["id"]
        assert len(sandbox.requests(method="POST", path=CREATE)) == 1

    def test_unknown_pipeline_is_a_clear_error(self, sandbox: Any) -> None:
        op = CogniteExtractionPipelineRunOperator(task_id="r", external_id="no-such-pipeline",
                                                  status="success")
        with pytest.raises(ApiError) as info:
            op.execute({})
        assert info.value.status == 400
        assert "Extraction pipeline 'no-such-pipeline' not found" in str(info.value)
        assert info.value.request_id


class TestSensorAndTrigger:
    def test_poke(self, sandbox: Any) -> None:
        since = now_ms()
        sensor = CogniteExtractionPipelineRunSensor(task_id="w", external_id=XID, created_after=since,
                                                    poke_interval=1, timeout=10)
        assert sensor.poke({}) is False  # the seed's success run is older
        CogniteHook().report_extpipe_run(CogniteHook.extpipe_run_item(XID, "success", "done", since + 5))
        result = sensor.poke({})
        assert result.xcom_value["createdTime"] == since + 5 and result.xcom_value["message"] == "done"

    def test_poke_fails_fast_on_failure(self, sandbox: Any) -> None:
        since = now_ms()
        hook = CogniteHook()
        hook.report_extpipe_run(hook.extpipe_run_item(XID, "failure", "source offline", since + 1))
        hook.report_extpipe_run(hook.extpipe_run_item(XID, "success", None, since + 2))
        sensor = CogniteExtractionPipelineRunSensor(task_id="w", external_id=XID, created_after=since,
                                                    poke_interval=1, timeout=10)
        with pytest.raises(ExtractionRunFailedError, match="source offline"):
            sensor.poke({})

    def test_trigger(self, sandbox: Any) -> None:
        since = now_ms()
        ref = extraction_report_ref(XID, ["seen"], ["failure"], since)
        trigger = CogniteExtractionPipelineRunTrigger(conn_id="cognite_default", ref=ref,
                                                      deadline=time.time() + 20, poll_interval=0.2)

        async def scenario() -> list[Any]:
            async def report() -> None:
                await asyncio.sleep(0.6)
                item = CogniteHook.extpipe_run_item(XID, "seen", "hb", since + 1)
                await CogniteHook().acreate_extpipe_run(item)

            reporter = asyncio.create_task(report())
            events = [e async for e in trigger.run()]
            await reporter
            return events

        events = asyncio.run(scenario())
        assert [e.payload["status"] for e in events] == ["success"]
        assert events[0].payload["result"]["run"]["message"] == "hb"
        assert len(sandbox.requests(method="POST", path="*/extpipes/runs/list")) >= 2

    def test_trigger_timeout(self, sandbox: Any) -> None:
        ref = extraction_report_ref(EXTPIPE_CONTEXT_XID, ["success"], ["failure"], now_ms())
        trigger = CogniteExtractionPipelineRunTrigger(conn_id="cognite_default", ref=ref,
                                                      deadline=time.time() + 0.5, poll_interval=0.2)

        async def collect() -> list[Any]:
            return [e async for e in trigger.run()]

        events = asyncio.run(collect())
        assert events[0].payload["status"] == "timeout"


# --------------------------------------------------------------------------------------------
# The real Airflow: callbacks on a failing task and its DAG, a backfill-style report, a
# deferred sensor, all under ``airflow dags test``
# --------------------------------------------------------------------------------------------

DAG_SOURCE = '''
import pendulum
from airflow.sdk import DAG, task

from airflow_provider_pipelines.callbacks.cognite import CogniteExtractionPipelineRunCallback
from airflow_provider_pipelines.operators.cognite import CogniteExtractionPipelineRunOperator
from airflow_provider_pipelines.sensors.cognite import CogniteExtractionPipelineRunSensor

task_report = CogniteExtractionPipelineRunCallback("%(extractor)s")
dag_report = CogniteExtractionPipelineRunCallback("%(context)s")

with DAG(
    "c5_extpipes",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    on_success_callback=dag_report,
    on_failure_callback=dag_report,
    params={"fail": False},
):

    @task(on_execute_callback=task_report, on_success_callback=task_report,
          on_failure_callback=task_report, retries=0)
    def extract(params=None):
        if params["fail"]:
            raise ValueError("source table orders is empty")
        return 12

    # backfill-friendly: the report carries the DAG run's own interval end
    report = CogniteExtractionPipelineRunOperator(
        task_id="report",
        external_id="%(extractor)s",
        status="success",
        message="{{ ti.xcom_pull('extract') }} rows for {{ ds }}",
        created_time="{{ data_interval_end }}",
    )

    # wait (in the triggerer) for the downstream pipeline to report its own success
    wait = CogniteExtractionPipelineRunSensor(
        task_id="wait",
        external_id="%(context)s",
        created_after="{{ data_interval_end }}",
        deferrable=True,
        poke_interval=1,
        timeout=120,
    )

    extract() >> report >> wait
'''


def report_once_polled(sandbox: Any) -> None:
    """The downstream pipeline reports success once the DAG's sensor has started looking for it."""
    deadline = time.time() + 120
    while time.time() < deadline:
        polls = [r for r in sandbox.requests(method="POST", path="*/extpipes/runs/list")
                 if (r.get("body") or {}).get("filter", {}).get("externalId") == EXTPIPE_CONTEXT_XID]
        if polls:
            time.sleep(1.0)
            hook = CogniteHook()
            item = hook.extpipe_run_item(EXTPIPE_CONTEXT_XID, "success", "contextualization done")
            hook.report_extpipe_run(item)
            return
        time.sleep(0.2)


@pytest.fixture
def dag_file() -> Iterator[Path]:
    """The DAG file, inside the isolated Airflow home's DAGs folder."""
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "c5_extpipes.py"
    path.write_text(DAG_SOURCE % {"extractor": XID, "context": EXTPIPE_CONTEXT_XID})
    yield path
    path.unlink(missing_ok=True)


class TestDagsTest:
    def test_failing_task_reports_failure(self, sandbox: Any, dags_test: Any, dag_file: Path) -> None:
        proc = dags_test(dag_file, "c5_extpipes", logical_date="2025-03-01", conf={"fail": True})
        output = proc.stdout + proc.stderr
        assert "source table orders is empty" in output, output[-4000:]
        assert proc.returncode != 0 or "state=failed" in output
        # the task's callbacks: a heartbeat when it started, then the failure with the exception
        task_runs = runs(XID, statuses=["seen", "failure"], created_min=now_ms() - 300_000)
        assert sorted(r["status"] for r in task_runs) == ["failure", "seen"], output[-4000:]
        failure = next(r for r in task_runs if r["status"] == "failure")
        assert failure["message"].startswith("Airflow task c5_extpipes.extract failed (run manual__")
        assert "try 1, logical date 2025-03-01T00:00:00+00:00): ValueError: source table orders is empty" \
            in failure["message"]
        # the DAG's failure callback reported to the other pipeline
        dag_runs = runs(EXTPIPE_CONTEXT_XID, statuses=["failure"])
        assert len(dag_runs) == 1
        assert dag_runs[0]["message"].startswith("Airflow DAG c5_extpipes failed (run manual__")
        assert dag_runs[0]["message"].endswith(
            "reason: task_failure, failed task: extract, logical date 2025-03-01T00:00:00+00:00)")
        # nothing downstream ran, and each report was sent once
        assert runs(XID, statuses=["success"], created_max=to_epoch_ms("2025-03-02T00:00:00Z")) == []
        assert len(sandbox.requests(method="POST", path=CREATE)) == 3
        assert COGNITE_CLIENT_SECRET not in output

    def test_successful_run_reports_its_interval_and_the_sensor_defers(
        self, sandbox: Any, dags_test: Any, dag_file: Path
    ) -> None:
        started = now_ms()
        downstream = threading.Thread(target=report_once_polled, args=(sandbox,), daemon=True)
        downstream.start()
        proc = dags_test(dag_file, "c5_extpipes", logical_date="2025-03-01")
        downstream.join(timeout=5)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-4000:]
        assert "running trigger in line" in output  # the sensor really deferred
        # the operator's report carries the run's own data interval end (2025-03-01 for @daily)
        interval_end = to_epoch_ms(pendulum.datetime(2025, 3, 1, tz="UTC"))
        reported = runs(XID, statuses=["success"], created_max=interval_end + 86_400_000)
        assert [(r["createdTime"], r["message"]) for r in reported] == [
            (interval_end, "12 rows for 2025-03-01")]
        # the task's callbacks: seen at its start, success at its end
        task_runs = runs(XID, statuses=["seen", "success"], created_min=started)
        assert sorted(r["status"] for r in task_runs) == ["seen", "success"]
        # the sensor returned the downstream report, then the DAG's success callback reported
        context_runs = runs(EXTPIPE_CONTEXT_XID, statuses=["success"], created_min=started)
        assert [r["message"].split(" (")[0] for r in context_runs] == [
            "Airflow DAG c5_extpipes succeeded", "contextualization done"]
        assert COGNITE_CLIENT_SECRET not in output
