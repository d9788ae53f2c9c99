"""HERE job kinds: state mapping, the job-of-the-run rule, summaries."""

from __future__ import annotations

import pytest

from airflow_provider_pipelines.jobs.base import Outcome
from airflow_provider_pipelines.jobs.here import (
    JOB,
    JOB_CREATED_TOLERANCE_SECONDS,
    OPERATION,
    job_of_run,
    parse_time,
    stop_action,
)

PID = "5f2b5b1e-0000-4000-8000-000000000001"
VID = "5f2b5b1e-0000-4000-8000-0000000000a1"
OP_REF = {"pipeline_id": PID, "version_id": VID, "operation_id": "op-1"}


def job(job_id: str, created: str | None, state: str = "running", **extra: object) -> dict[str, object]:
    out: dict[str, object] = {"id": job_id, "state": state, **extra}
    if created is not None:
        out["created"] = created
    return out


@pytest.mark.parametrize(
    ("state", "outcome"),
    [("accepted", Outcome.RUNNING), ("BEING_PROCESSED", Outcome.RUNNING), ("succeeded", Outcome.SUCCESS),
     ("Failed", Outcome.FAILED)],
)
def test_operation_states_are_read_case_insensitively(state, outcome):
    snap = OPERATION.interpret({"id": "op-1", "requestType": "activate", "state": state}, OP_REF)
    assert snap.outcome is outcome and snap.state == state.lower()
    assert snap.result["operation_id"] == "op-1" and snap.result["request_type"] == "activate"


def test_failed_operation_carries_its_message():
    snap = OPERATION.interpret({"id": "op-1", "state": "failed",
                                "message": "Operation failed with error - Main class not found"}, OP_REF)
    assert snap.outcome is Outcome.FAILED
    assert snap.message == "Operation failed with error - Main class not found"
    assert OPERATION.interpret({"state": "failed"}, OP_REF).message == "HERE gave no message"


def test_unknown_operation_state_fails_with_the_state():
    snap = OPERATION.interpret({"id": "op-1", "state": "exploded"}, OP_REF)
    assert snap.outcome is Outcome.FAILED and "'exploded'" in str(snap.message)


@pytest.mark.parametrize(
    ("state", "outcome"),
    [("starting", Outcome.RUNNING), ("running", Outcome.RUNNING), ("completed", Outcome.SUCCESS),
     ("failed", Outcome.FAILED), ("canceled", Outcome.FAILED), ("CANCELLED", Outcome.FAILED),
     ("submitted", Outcome.FAILED)],
)
def test_job_states(state, outcome):
    payload = {"version": {"state": "running"}, "job": job("j1", "2026-01-01T00:00:00Z", state,
                                                           loggingUrl="https://logs/j1", pipelineUIUrl="https://ui/j1")}
    snap = JOB.interpret(payload, {"pipeline_id": PID, "version_id": VID, "job_id": "j1"})
    assert snap.outcome is outcome
    assert snap.result["logging_url"] == "https://logs/j1" and snap.result["pipeline_ui_url"] == "https://ui/j1"
    if state in ("failed", "canceled"):
        assert f"ended {state}" in str(snap.message) and "https://logs/j1" in str(snap.message)


def test_no_job_yet_waits_unless_the_version_is_back_to_ready():
    ref = {"pipeline_id": PID, "version_id": VID, "created_after": "2026-01-01T00:00:00Z"}
    running = {"state": "running", "loggingUrl": "https://v/logs"}
    waiting = JOB.interpret({"version": running, "job": None}, ref)
    assert waiting.outcome is Outcome.RUNNING and waiting.state == "waiting_for_job"
    assert waiting.result["logging_url"] == "https://v/logs"
    gone = JOB.interpret({"version": {"state": "ready"}, "job": None}, ref)
    assert gone.outcome is Outcome.FAILED and "back to ready without a job" in str(gone.message)
    busy_version = {"state": "ready", "latestOperation": {"state": "accepted"}}
    busy = JOB.interpret({"version": busy_version, "job": None}, ref)
    assert busy.outcome is Outcome.RUNNING
    sensor_ref = {"pipeline_id": PID, "version_id": VID}
    none = JOB.interpret({"version": {"state": "ready"}, "job": None}, sensor_ref)
    assert none.outcome is Outcome.FAILED and "has no job" in str(none.message)


def test_parse_time():
    assert parse_time("2026-01-01T00:00:00Z") == parse_time("2026-01-01T01:00:00+01:00") == 1767225600.0
    assert parse_time("2026-01-01T00:00:00.5+00:00") == 1767225600.5
    assert parse_time("2026-01-01T00:00:00.123456789Z") == pytest.approx(1767225600.123456)
    assert parse_time("yesterday") is None and parse_time(None) is None


def test_job_of_run_picks_the_first_job_after_the_operation_whatever_the_order():
    jobs = [
        job("later", "2026-01-01T10:30:00Z"),
        job("previous", "2026-01-01T09:59:30Z"),  # within the tolerance, but the version's job from before
        job("old", "2026-01-01T08:00:00Z"),
        job("ours", "2026-01-01T10:00:05+00:00"),
        {"state": "running"},  # no id: ignored
    ]
    ref = {"created_after": "2026-01-01T10:00:00Z", "previous_job_id": "previous"}
    assert job_of_run(jobs, ref)["id"] == "ours"
    later_ref = {"created_after": "2026-01-01T11:00:00Z", "previous_job_id": "previous"}
    assert job_of_run(jobs[:3], later_ref) is None


def test_job_of_run_tolerates_clock_differences():
    assert JOB_CREATED_TOLERANCE_SECONDS == 120
    ref = {"created_after": "2026-01-01T10:00:00Z"}
    assert job_of_run([job("ours", "2026-01-01T09:58:01Z")], ref)["id"] == "ours"  # 119 s "before"
    assert job_of_run([job("too-old", "2026-01-01T09:50:00Z")], ref) is None


def test_job_of_run_by_id_and_latest():
    jobs = [job("a", "2026-01-01T10:00:00Z"), job("c", "2026-01-03T10:00:00Z"),
            job("b", "2026-01-02T10:00:00Z")]
    assert job_of_run(jobs, {"job_id": "b"})["id"] == "b"
    assert job_of_run(jobs, {"job_id": "zzz"}) is None
    assert job_of_run(jobs, {})["id"] == "c"
    assert job_of_run([], {}) is None


@pytest.mark.parametrize(
    ("state", "action"), [("running", "cancel"), ("PAUSED", "cancel"), ("scheduled", "deactivate"),
                          ("ready", None), ("", None)],
)
def test_stop_action(state, action):
    assert stop_action({"state": state}) == action


def test_timeout_message_names_the_job_and_the_sensor():
    from airflow_provider_pipelines.jobs.base import JobSnapshot

    ref = {"pipeline_id": PID, "version_id": VID, "created_after": "2026-01-01T10:00:00Z"}
    last = JobSnapshot("running", Outcome.RUNNING, None, {"job_id": "j-9"})
    text = JOB.timeout_message(ref, last, 42)
    assert "j-9" in text and "'running'" in text and "left running" in text
    assert f"HerePipelineJobSensor(pipeline_id={PID!r}, pipeline_version_id={VID!r}, job_id='j-9')" in text
