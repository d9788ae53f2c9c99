"""Entity matching runs and advanced-join quality gates against the running sandbox.

Every operator, sensor and trigger of the two job kinds, in worker and deferred mode, with the
sandbox's fault injection, and a small DAG through the real ``airflow dags test`` CLI.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_pipelines.jobs.base import JobFailedError, JobTimeoutError
from airflow_provider_pipelines.operators.cognite import (
    CogniteAdvancedJoinQualityOperator,
    CogniteEntityMatchingPipelineRunOperator,
)
from airflow_provider_pipelines.sandbox.config import (
    COGNITE_CLIENT_SECRET,
    EM_PIPELINE_ASSETS_ID,
    EM_PIPELINE_ASSETS_XID,
    EM_PIPELINE_FAILING_ID,
    JOIN_FAILING,
    JOIN_GOOD,
    JOIN_POOR,
)
from airflow_provider_pipelines.sensors.cognite import (
    CogniteAdvancedJoinQualitySensor,
    CogniteEntityMatchingPipelineRunSensor,
)
from tests.unit.test_cognite_entity_matching import FakeStateStore, FakeTI, make_context

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MATCHER = {"type": "raw", "dbName": "sandbox_db", "tableName": "known_matches",
           "fromColumnKey": "timeseries_external_id", "toColumnKey": "asset_external_id"}
FAST = {"poll_interval": 0.2, "max_poll_interval": 0.5}


@pytest.fixture(autouse=True)
def _quick_jobs(sandbox: Any) -> None:
    """Shorter simulated CDF jobs (Queued 0.3 s, Running 0.7 s) to keep the suite fast."""
    quick = {"default": {"queued": 0.3, "running": 0.7}}
    sandbox.configure(cognite={"entity_matching": quick, "estimate_quality": quick})


def run_trigger(trigger: Any) -> dict[str, Any]:
    """Run a trigger to its single event, as the triggerer would."""

    async def _collect() -> list[Any]:
        return [event async for event in trigger.run()]

    events = asyncio.run(_collect())
    assert len(events) == 1
    return dict(events[0].payload)


def resume(op: Any, context: dict[str, Any]) -> Any:
    """Execute; when the operator defers, run its trigger and resume it like Airflow does."""
    try:
        return op.execute(context)
    except TaskDeferred as deferred:
        _, kwargs = deferred.trigger.serialize()
        trigger = type(deferred.trigger)(**json.loads(json.dumps(kwargs)))  # through the trigger table
        event = run_trigger(trigger)
        return getattr(op, deferred.method_name)(context, event, **(deferred.kwargs or {}))


def runs_started(sandbox: Any) -> int:
    return len(sandbox.requests(method="POST", path="*/entitymatching/pipelines/*/runs"))


# --------------------------------------------------------------------------------------------
# Entity matching
# --------------------------------------------------------------------------------------------


class TestEntityMatching:
    @pytest.mark.parametrize("deferrable", [False, True])
    def test_completed_run_returns_the_summary(self, sandbox: Any, deferrable: bool) -> None:
        ti = FakeTI()
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=EM_PIPELINE_ASSETS_ID,
                                                      deferrable=deferrable, **FAST)
        result = resume(op, make_context(ti))
        assert result["status"] == "Completed" and result["job_id"] == ti.xcoms["job_id"]
        assert result["matches_count"] == 3 and result["suggestedRules_count"] == 1
        assert result["generatedRules_count"] == 1 and "matches" not in result
        assert runs_started(sandbox) == 1
        gets = sandbox.requests(method="GET", path=f"*/pipelines/{EM_PIPELINE_ASSETS_ID}/runs/*")
        assert gets and all(g["headers"]["cdf-version"] == "20230101-beta" for g in gets)

    def test_include_matches(self, sandbox: Any) -> None:
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=EM_PIPELINE_ASSETS_ID,
                                                      include_matches=True, deferrable=True, **FAST)
        result = resume(op, make_context())
        assert len(result["matches"]) == result["matches_count"] == 3

    @pytest.mark.parametrize("deferrable", [False, True])
    def test_failed_run_fails_with_cdfs_error_message(self, sandbox: Any, deferrable: bool) -> None:
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=EM_PIPELINE_FAILING_ID,
                                                      deferrable=deferrable, **FAST)
        with pytest.raises(JobFailedError, match="source data set 404 contains no time series"):
            resume(op, make_context())

    @pytest.mark.parametrize("deferrable", [False, True])
    def test_timeout_says_how_to_keep_waiting(self, sandbox: Any, deferrable: bool) -> None:
        sandbox.configure_resource("cognite", "entity_matching", EM_PIPELINE_ASSETS_XID, running=None)
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=EM_PIPELINE_ASSETS_ID,
                                                      deferrable=deferrable, timeout=1.5, **FAST)
        with pytest.raises(JobTimeoutError) as info:
            resume(op, make_context())
        assert "CogniteEntityMatchingPipelineRunSensor(pipeline_id=1, job_id=" in str(info.value)
        assert "'Running'" in str(info.value) or "'Queued'" in str(info.value)

    def test_unknown_pipeline_fails_with_cdfs_answer(self, sandbox: Any) -> None:
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=987654, **FAST)
        with pytest.raises(Exception, match=r"pipeline 987654.*HTTP 4\d\d"):
            op.execute(make_context())

    def test_throttling_and_expired_tokens_do_not_fail_the_wait(self, sandbox: Any) -> None:
        sandbox.configure_resource("cognite", "entity_matching", EM_PIPELINE_ASSETS_XID, running=2.0)
        sandbox.inject_fault(method="GET", path="*/runs/*", action="status", status=429, retry_after=0,
                             times=2)
        sandbox.inject_fault(method="GET", path="*/runs/*", action="status", status=503, times=1)
        op = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=EM_PIPELINE_ASSETS_ID,
                                                      deferrable=True, **FAST)
        with pytest.raises(TaskDeferred) as info:
            op.execute(make_context())
        sandbox.expire_tokens("cognite")
        event = run_trigger(info.value.trigger)
        assert event["status"] == "success"
        assert sandbox.requests(status=429) and sandbox.requests(status=401)

    def test_retry_reattaches_through_the_state_store(self, sandbox: Any) -> None:
        sandbox.configure_resource("cognite", "entity_matching", EM_PIPELINE_ASSETS_XID, running=1.5)
        store = FakeStateStore()
        first = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=EM_PIPELINE_ASSETS_ID,
                                                         timeout=0.5, **FAST)
        with pytest.raises(JobTimeoutError):
            first.execute(make_context(FakeTI(1), store))
        second = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=EM_PIPELINE_ASSETS_ID,
                                                          **FAST)
        assert second.execute(make_context(FakeTI(2), store))["status"] == "Completed"
        assert runs_started(sandbox) == 1

    def test_retry_without_state_store_adopts_the_active_run(self, sandbox: Any) -> None:
        sandbox.configure_resource("cognite", "entity_matching", EM_PIPELINE_ASSETS_XID, running=1.5)
        first = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=EM_PIPELINE_ASSETS_ID,
                                                         timeout=0.5, **FAST)
        with pytest.raises(JobTimeoutError):
            first.execute(make_context(FakeTI(1)))
        ti = FakeTI(2)
        second = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=EM_PIPELINE_ASSETS_ID,
                                                          **FAST)
        result = second.execute(make_context(ti))
        assert result["status"] == "Completed" and runs_started(sandbox) == 1
        third = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=EM_PIPELINE_ASSETS_ID,
                                                         reuse_active_run=False, wait_for_completion=False)
        assert third.execute(make_context(FakeTI(3)))["job_id"] != result["job_id"]
        assert runs_started(sandbox) == 2

    @pytest.mark.parametrize("deferrable", [False, True])
    def test_sensor_waits_for_a_given_run(self, sandbox: Any, deferrable: bool) -> None:
        start = CogniteEntityMatchingPipelineRunOperator(task_id="em", pipeline_id=EM_PIPELINE_ASSETS_ID,
                                                         wait_for_completion=False)
        job_id = start.execute(make_context())["job_id"]
        sensor = CogniteEntityMatchingPipelineRunSensor(task_id="watch", pipeline_id=EM_PIPELINE_ASSETS_ID,
                                                        job_id=str(job_id), deferrable=deferrable,
                                                        poke_interval=0.2, timeout=60)
        if deferrable:
            result = resume(sensor, make_context())
        else:
            while not (done := sensor.poke(make_context())):
                pass
            result = done.xcom_value
        assert result["job_id"] == job_id and result["status"] == "Completed"
        assert runs_started(sandbox) == 1


# --------------------------------------------------------------------------------------------
# Advanced-join quality gate
# --------------------------------------------------------------------------------------------


class TestQualityGate:
    @pytest.mark.parametrize("deferrable", [False, True])
    def test_good_join_passes_the_gate(self, sandbox: Any, deferrable: bool) -> None:
        ti = FakeTI()
        op = CogniteAdvancedJoinQualityOperator(
            task_id="gate", advanced_join_external_id=JOIN_GOOD, matcher=MATCHER, deferrable=deferrable,
            min_quality_score_percent=90, min_confidence_percent=80, min_contextualization_score_percent=75,
            **FAST)
        result = resume(op, make_context(ti))
        assert (result["qualityScorePercent"], result["confidencePercent"],
                result["contextualizationScorePercent"]) == (92.5, 88.0, 75.0)
        assert result["job_id"] == ti.xcoms["job_id"]
        (start,) = sandbox.requests(method="POST", path="*/advancedjoins/estimatequality")
        assert start["headers"]["cdf-version"] == "20230101-alpha"

    @pytest.mark.parametrize("deferrable", [False, True])
    def test_poor_join_fails_naming_every_metric_under_its_minimum(
        self, sandbox: Any, deferrable: bool
    ) -> None:
        op = CogniteAdvancedJoinQualityOperator(
            task_id="gate", advanced_join_external_id=JOIN_POOR, matcher=MATCHER, deferrable=deferrable,
            min_quality_score_percent=80, min_confidence_percent=50, min_contextualization_score_percent=70,
            **FAST)
        with pytest.raises(JobFailedError) as info:
            resume(op, make_context())
        text = str(info.value)
        assert "qualityScorePercent 41 < minimum 80" in text
        assert "contextualizationScorePercent 30 < minimum 70" in text
        assert "confidencePercent" not in text

    @pytest.mark.parametrize("deferrable", [False, True])
    def test_failed_estimate_fails_with_cdfs_message(self, sandbox: Any, deferrable: bool) -> None:
        op = CogniteAdvancedJoinQualityOperator(task_id="gate", advanced_join_external_id=JOIN_FAILING,
                                                matcher=MATCHER, deferrable=deferrable, **FAST)
        with pytest.raises(JobFailedError, match=r"RAW table 'sandbox_db\.known_matches' not found"):
            resume(op, make_context())

    def test_unknown_join_is_reported_with_cdfs_message(self, sandbox: Any) -> None:
        op = CogniteAdvancedJoinQualityOperator(task_id="gate", advanced_join_external_id="no.such.join",
                                                matcher=MATCHER, **FAST)
        with pytest.raises(Exception, match=r"advanced join 'no.such.join'.*HTTP 400"):
            op.execute(make_context())

    @pytest.mark.parametrize("deferrable", [False, True])
    def test_sensor_gates_a_given_job(self, sandbox: Any, deferrable: bool) -> None:
        start = CogniteAdvancedJoinQualityOperator(task_id="gate", advanced_join_external_id=JOIN_POOR,
                                                   matcher=MATCHER, wait_for_completion=False)
        job_id = start.execute(make_context())["job_id"]
        sensor = CogniteAdvancedJoinQualitySensor(task_id="s", job_id=job_id, deferrable=deferrable,
                                                  poke_interval=0.2, timeout=60, min_confidence_percent=61)
        with pytest.raises(JobFailedError, match="confidencePercent 60 < minimum 61"):
            if deferrable:
                resume(sensor, make_context())
            else:
                while not sensor.poke(make_context()):
                    pass


# --------------------------------------------------------------------------------------------
# A small DAG through the real ``airflow dags test`` CLI (deferred path, trigger run in line)
# --------------------------------------------------------------------------------------------

DAG_SOURCE = textwrap.dedent(
    '''
    from datetime import datetime, timezone

    from airflow.sdk import DAG

    from airflow_provider_pipelines.operators.cognite import (
        CogniteAdvancedJoinQualityOperator,
        CogniteEntityMatchingPipelineRunOperator,
    )
    from airflow_provider_pipelines.sensors.cognite import CogniteEntityMatchingPipelineRunSensor

    with DAG(
        dag_id="c4_em_aj_deferred",
        schedule=None,
        start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
        params={"pipeline_id": 1, "join": "sandbox.join.good", "min_quality": 80},
        default_args={"retries": 0},
    ):
        run = CogniteEntityMatchingPipelineRunOperator(
            task_id="run", pipeline_id="{{ params.pipeline_id }}", deferrable=True, poll_interval=0.5,
        )
        watch = CogniteEntityMatchingPipelineRunSensor(
            task_id="watch", pipeline_id="{{ params.pipeline_id }}",
            job_id="{{ ti.xcom_pull(task_ids='run', key='job_id') }}", deferrable=True, poke_interval=0.5,
        )
        gate = CogniteAdvancedJoinQualityOperator(
            task_id="gate", advanced_join_external_id="{{ params.join }}",
            matcher=%(matcher)r,
            min_quality_score_percent="{{ params.min_quality }}", deferrable=True, poll_interval=0.5,
        )
        run >> watch >> gate
    '''
)


@pytest.fixture
def dag_file() -> Iterator[Path]:
    """The DAG file, inside the isolated Airflow home's DAGs folder (``dags test`` requires it)."""
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "c4_em_aj_deferred.py"
    path.write_text(DAG_SOURCE % {"matcher": MATCHER})
    yield path
    path.unlink(missing_ok=True)


class TestDagsTest:
    def test_deferred_dag_succeeds(self, sandbox: Any, dags_test: Any, dag_file: Path) -> None:
        proc = dags_test(dag_file, "c4_em_aj_deferred")
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-4000:]
        assert output.count("running trigger in line") >= 2  # "run" and "gate" really deferred
        assert re.search(r"Marking run <DagRun c4_em_aj_deferred .*> successful", output)
        assert runs_started(sandbox) == 1  # neither the trigger nor the sensor started a run
        assert len(sandbox.requests(method="POST", path="*/advancedjoins/estimatequality")) == 1
        assert COGNITE_CLIENT_SECRET not in output

    def test_quality_gate_failure_fails_the_dag_run(
        self, sandbox: Any, dags_test: Any, dag_file: Path
    ) -> None:
        proc = dags_test(dag_file, "c4_em_aj_deferred", conf={"join": "sandbox.join.poor"})
        output = proc.stdout + proc.stderr
        assert "Quality gate not met for advanced join 'sandbox.join.poor'" in output, output[-4000:]
        assert "qualityScorePercent 41 < minimum 80" in output
        assert proc.returncode == 1  # what ``airflow dags test`` exits with when the run fails
        assert re.search(r"Marking run <DagRun c4_em_aj_deferred .*> failed", output)
        assert COGNITE_CLIENT_SECRET not in output
