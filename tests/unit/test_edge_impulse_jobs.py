"""The inferred outcome rules of an Edge Impulse pipeline run, the summary, and stop-only-our-run.

Every test here encodes an **inferred** reading of the Edge Impulse API (edge-impulse.md A.2):
no document says how a run's outcome shows in ``currentRun`` / ``lastRun``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_pipelines.hooks.edge_impulse import EdgeImpulseHook
from airflow_provider_pipelines.jobs.base import Outcome
from airflow_provider_pipelines.jobs.edge_impulse import (
    EI_PIPELINE_RUN,
    RUN_VISIBILITY_GRACE_SECONDS,
    inferred_run_outcome,
)

PROJECT_KEY = "ei_project_key_SECRET_a1b2c3d4e5"
NOW = 1_700_000_000.0
BASE = "https://studio.example.com/v1/api/organizations/1/pipelines/12"


def job(status: str = "finished", transform: str = "finished", upload: str = "finished",
        succeeded: int = 10, finished: int = 10, **extra: Any) -> dict[str, Any]:
    return {"id": 9876, "status": status, "transformJobStatus": transform, "uploadJobStatus": upload,
            "inProgress": status not in ("finished", "failed"),
            "transformationSummary": {"startedCount": 10, "succeededCount": succeeded,
                                      "finishedCount": finished, "totalFileCount": 10,
                                      "totalTimeSpentSeconds": 30}, **extra}


def step(name: str, **job_kw: Any) -> dict[str, Any]:
    return {"name": name, "uploadType": "project", "category": "split", "projectId": 501,
            "projectApiKey": PROJECT_KEY, "projectHmacKey": PROJECT_KEY + "-hmac",
            "transformationJob": job(**job_kw)}


def run(run_id: int = 1234, finished: str | None = "2025-02-21T19:00:00Z",
        steps: list[dict[str, Any]] | None = None, import_failed: int | None = 0) -> dict[str, Any]:
    return {
        "id": run_id, "created": "2025-02-21T18:21:53.755Z", "finished": finished,
        "steps": steps if steps is not None else [step("Import from bucket"), step("Import into project")],
        "itemCountBefore": {"itemCount": 100, "itemCountChecklistOK": 98, "itemCountChecklistFailed": 2},
        "itemCountAfter": {"itemCount": 110, "itemCountChecklistOK": 107, "itemCountChecklistFailed": 3},
        "itemCountImportIntoProjectFailed": import_failed,
    }


def ref(run_id: int = 1234, *, fail_on_import_errors: bool = True,
        started_at: float | None = None) -> dict[str, Any]:
    return {"organization_id": 1, "pipeline_id": 12, "run_id": run_id,
            "fail_on_import_errors": fail_on_import_errors, "started_at": started_at}


def read(pipeline: dict[str, Any], **ref_kw: Any):
    return inferred_run_outcome(pipeline, ref(**ref_kw), now=NOW)


# ---- rule 1: running -------------------------------------------------------------------------------


def test_current_run_is_ours_running():
    """Inferred rule 1: currentRun.id == our id and no finished -> running."""
    current = run(finished=None, steps=[step("Import from bucket", status="started", transform="started",
                                             upload="waiting")])
    snap = read({"currentRun": current, "lastRun": run(1233)})
    assert snap.outcome is Outcome.RUNNING
    assert snap.state == "running: step 1 'Import from bucket' of 1 (transform started, upload waiting)"
    assert snap.result["run_id"] == 1234


def test_current_run_with_finished_is_still_running_until_it_becomes_last():
    """Inferred rule 1/2: a run is only done once it is no longer current."""
    snap = read({"currentRun": run(), "lastRun": None})
    assert (snap.outcome, snap.state) == (Outcome.RUNNING, "finishing")


def test_stale_start_error_does_not_fail_a_running_run():
    """Inferred: lastRunStartError only counts when our run is neither current nor last."""
    snap = read({"currentRun": run(finished=None), "lastRunStartError": "old error from yesterday"})
    assert snap.outcome is Outcome.RUNNING


def test_current_run_with_a_failed_step_keeps_waiting_for_the_end():
    """Inferred: the outcome is decided when the run is over, not while a failing run is still current."""
    current = run(finished=None, steps=[step("A", status="failed", transform="failed", upload="waiting")])
    snap = read({"currentRun": current})
    assert snap.outcome is Outcome.RUNNING
    assert "transform failed" in snap.state


# ---- rule 2: done ----------------------------------------------------------------------------------


def test_last_run_finished_clean_is_success():
    """Inferred rule 2: our run is lastRun with finished set and no failure sign -> success."""
    snap = read({"currentRun": None, "lastRun": run()})
    assert (snap.outcome, snap.state, snap.message) == (Outcome.SUCCESS, "finished", None)
    result = snap.result
    assert result["created"] == "2025-02-21T18:21:53.755Z"
    assert result["finished"] == "2025-02-21T19:00:00Z"
    assert result["item_count_before"] == {"itemCount": 100, "itemCountChecklistOK": 98,
                                           "itemCountChecklistFailed": 2}
    assert result["item_count_after"]["itemCount"] == 110
    assert [s["name"] for s in result["steps"]] == ["Import from bucket", "Import into project"]
    assert result["steps"][1] == {
        "index": 2, "name": "Import into project", "upload_type": "project", "category": "split",
        "transformation_job_id": 9876, "status": "finished", "transform_job_status": "finished",
        "upload_job_status": "finished", "in_progress": False, "files_started": 10, "files_succeeded": 10,
        "files_finished": 10, "files_total": 10,
    }
    assert result["failures"] == [] and result["warnings"] == []


def test_another_run_current_and_ours_last_is_done():
    """Inferred rule 2: 'currentRun is null or holds another id' and lastRun is ours."""
    snap = read({"currentRun": run(1235, finished=None), "lastRun": run()})
    assert snap.outcome is Outcome.SUCCESS


def test_last_run_without_finished_is_still_finishing():
    snap = read({"currentRun": None, "lastRun": run(finished=None)})
    assert (snap.outcome, snap.state) == (Outcome.RUNNING, "finishing")


@pytest.mark.parametrize(
    ("job_kw", "reason"),
    [
        ({"status": "failed"}, "status=failed"),
        ({"transform": "failed"}, "transformJobStatus=failed"),
        ({"upload": "failed"}, "uploadJobStatus=failed"),
    ],
)
def test_failed_step_status_fails_the_run(job_kw, reason):
    """Inferred rule 3: any of the three status fields equal to 'failed' fails the run."""
    snap = read({"lastRun": run(steps=[step("A"), step("Import into project", **job_kw)])})
    assert (snap.outcome, snap.state) == (Outcome.FAILED, "failed")
    assert snap.message == f"step 2 'Import into project' failed ({reason})"
    assert snap.result["failures"] == [snap.message]


def test_undocumented_status_is_not_success():
    """Conservative reading: a status outside TransformationJobStatusEnum does not count as success."""
    snap = read({"lastRun": run(steps=[step("A", status="cancelled")])})
    assert snap.outcome is Outcome.FAILED
    assert "undocumented status (status='cancelled')" in snap.message


def test_import_into_project_failures_fail_the_run():
    """Inferred rule 3: itemCountImportIntoProjectFailed > 0 counts as failed (fail_on_import_errors=True)."""
    snap = read({"lastRun": run(import_failed=4)})
    assert snap.outcome is Outcome.FAILED
    assert snap.message == ("4 data item(s) failed to import into the project "
                            "(itemCountImportIntoProjectFailed)")


def test_fewer_succeeded_than_finished_files_fail_the_run():
    """Inferred rule 3: transformationSummary.succeededCount < finishedCount counts as failed."""
    snap = read({"lastRun": run(steps=[step("A", succeeded=7, finished=10)])})
    assert snap.outcome is Outcome.FAILED
    assert snap.message == "step 1 'A': 3 of 10 files failed (succeededCount 7 < finishedCount 10)"


def test_import_errors_only_warn_when_asked():
    snap = read({"lastRun": run(import_failed=2, steps=[step("A", succeeded=9)])},
                fail_on_import_errors=False)
    assert snap.outcome is Outcome.SUCCESS
    assert snap.result["warnings"] == [
        "step 1 'A': 1 of 10 files failed (succeededCount 9 < finishedCount 10)",
        "2 data item(s) failed to import into the project (itemCountImportIntoProjectFailed)",
    ]
    assert snap.message.startswith("finished with warnings: ")


def test_failed_status_fails_even_without_import_check():
    snap = read({"lastRun": run(steps=[step("A", upload="failed")])}, fail_on_import_errors=False)
    assert snap.outcome is Outcome.FAILED


def test_steps_without_a_transformation_job_are_ignored():
    """A step that never started (no transformationJob) has no status to judge."""
    snap = read({"lastRun": run(steps=[step("A"), {"name": "B"}])})
    assert snap.outcome is Outcome.SUCCESS
    assert snap.result["steps"][1]["status"] is None


# ---- rules 3-5: start errors, visibility -----------------------------------------------------------


def test_start_error_fails_when_run_is_not_visible():
    """Inferred rule 4: lastRunStartError set and our run is neither current nor last."""
    pipeline = {"currentRun": None, "lastRun": run(1200),
                "lastRunStartError": "Failed to start pipeline: transformation block 57 has been deleted"}
    snap = read(pipeline, started_at=NOW)
    assert (snap.outcome, snap.state) == (Outcome.FAILED, "start_failed")
    assert snap.message == ("the run could not start: Failed to start pipeline: transformation block 57 "
                            "has been deleted (current run None, last run 1200)")


def test_not_yet_visible_run_is_pending_within_the_grace_period():
    """Inferred: a run we just started may not show in the pipeline at once."""
    snap = read({"currentRun": None, "lastRun": None}, started_at=NOW - RUN_VISIBILITY_GRACE_SECONDS / 2)
    assert (snap.outcome, snap.state) == (Outcome.RUNNING, "pending")


def test_invisible_run_after_grace_cannot_be_read_and_fails():
    """Conservative: a run that is neither current nor last has an unreadable outcome: not a success."""
    snap = read({"currentRun": run(1240, finished=None), "lastRun": run(1239)},
                started_at=NOW - RUN_VISIBILITY_GRACE_SECONDS - 1)
    assert (snap.outcome, snap.state) == (Outcome.FAILED, "not_found")
    assert "run 1234 is neither the current nor the last run" in snap.message
    assert "(current run 1240, last run 1239)" in snap.message


def test_sensor_ref_without_start_time_has_no_grace():
    snap = read({"currentRun": None, "lastRun": None})
    assert snap.state == "not_found"


# ---- summary and secrets --------------------------------------------------------------------------


def test_summary_never_contains_step_secrets():
    cases = ({"currentRun": run(finished=None)}, {"lastRun": run()}, {"lastRun": run(import_failed=1)})
    for pipeline in cases:
        snap = read(pipeline)
        text = json.dumps(snap.to_event(EI_PIPELINE_RUN.name, ref()))
        assert PROJECT_KEY not in text
        assert "projectApiKey" not in text and "projectHmacKey" not in text


def test_vendor_text_is_redacted_and_bounded():
    pipeline = {"lastRunStartError": "projectApiKey: ei_leaked_value_123 " + "x" * 2000}
    snap = read(pipeline)
    assert "ei_leaked_value_123" not in snap.message
    assert len(snap.message) < 1200


def test_bools_are_not_counts():
    snap = read({"lastRun": run(import_failed=True)})  # type: ignore[arg-type]
    assert snap.outcome is Outcome.SUCCESS
    assert snap.result["item_count_import_into_project_failed"] is None


def test_timeout_message_points_at_the_sensor():
    message = EI_PIPELINE_RUN.timeout_message(ref(), None, 60)
    assert "The remote job was left running." in message
    assert "EdgeImpulsePipelineRunSensor(organization_id=1, pipeline_id=12, run_id=1234)" in message


def test_interpret_of_a_non_dict_payload():
    assert EI_PIPELINE_RUN.interpret(None, ref()).state == "not_found"


# ---- stop only our run ------------------------------------------------------------------------------


@pytest.fixture
def ei_conn(conn_env):
    conn_env("edge_impulse_default", conn_type="edge_impulse", host="https://studio.example.com",
             password="ei_unit_key_0123456789")


def test_cancel_stops_when_our_run_is_current(ei_conn, requests_mock):
    requests_mock.get(BASE, json={"success": True, "pipeline": {"id": 12, "currentRun": run(finished=None)}})
    stop = requests_mock.post(f"{BASE}/stop", json={"success": True})
    assert EI_PIPELINE_RUN.cancel(EdgeImpulseHook(), ref()) is True
    assert stop.call_count == 1


@pytest.mark.parametrize("current", [None, run(999, finished=None)])
def test_cancel_leaves_other_runs_alone(ei_conn, requests_mock, current):
    requests_mock.get(BASE, json={"success": True, "pipeline": {"id": 12, "currentRun": current,
                                                                 "lastRun": run()}})
    stop = requests_mock.post(f"{BASE}/stop", json={"success": True})
    assert EI_PIPELINE_RUN.cancel(EdgeImpulseHook(), ref()) is False
    assert stop.call_count == 0
