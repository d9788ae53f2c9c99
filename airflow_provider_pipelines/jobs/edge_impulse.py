"""Edge Impulse job kind: a run of an organizational pipeline.

Edge Impulse has no endpoint for a single pipeline run (edge-impulse.md A.2): progress and outcome
are read from the pipeline's ``currentRun`` / ``lastRun`` / ``lastRunStartError``. No document
states how to read them; the rules this provider applies are **inferred** and live in one function,
:func:`inferred_run_outcome`, so they can be corrected in one place.

``ref`` of this kind: ``{"organization_id": int, "pipeline_id": int, "run_id": int,
"fail_on_import_errors": bool, "started_at": epoch seconds | None}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_pipelines.hooks._http import Redactor
from airflow_provider_pipelines.jobs.base import JobKind, JobSnapshot, Outcome

if TYPE_CHECKING:
    from airflow_provider_pipelines.hooks._base import PipelinesHook
    from airflow_provider_pipelines.hooks.edge_impulse import EdgeImpulseHook

log = logging.getLogger(__name__)

#: TransformationJobStatusEnum (edge-impulse.md A.1).
JOB_STATUSES = frozenset({"waiting", "created", "started", "finished", "failed"})
#: The transformation-job fields that carry a TransformationJobStatusEnum value.
STEP_STATUS_FIELDS = ("status", "transformJobStatus", "uploadJobStatus")
#: After starting (or adopting) a run, how long it may be missing from both ``currentRun`` and
#: ``lastRun`` before the provider stops waiting for it to appear (**inferred** safety margin:
#: no document says whether a new run shows up in the pipeline at once).
RUN_VISIBILITY_GRACE_SECONDS = 60.0
#: Item counts copied into the summary (OrganizationPipelineItemCount).
_ITEM_COUNT_FIELDS = ("itemCount", "itemCountChecklistOK", "itemCountChecklistFailed")
#: Vendor free text is cut to this length in messages.
_MAX_TEXT = 1000

_redact = Redactor()  # token-shaped fragments, e.g. "projectApiKey: ..." in vendor prose


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = _redact(str(value))
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "…"


def _run(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _run_id(run: Mapping[str, Any] | None) -> int | None:
    return _count(run.get("id")) if run is not None else None


def _steps(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    steps = run.get("steps")
    return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []


def _job(step: Mapping[str, Any]) -> dict[str, Any] | None:
    job = step.get("transformationJob")
    return job if isinstance(job, dict) else None


def _step_name(index: int, step: Mapping[str, Any]) -> str:
    return f"step {index + 1} {_text(step.get('name')) or '(unnamed)'!r}"


# --------------------------------------------------------------------------------------------
# Summary (what goes to XCom and trigger events): built from an allow-list, so the step fields
# ``projectApiKey`` / ``projectHmacKey`` can never reach it, whatever the API returns.
# --------------------------------------------------------------------------------------------


def _item_counts(value: Any) -> dict[str, int | None] | None:
    if not isinstance(value, dict):
        return None
    return {key: _count(value.get(key)) for key in _ITEM_COUNT_FIELDS}


def summarize_step(index: int, step: Mapping[str, Any]) -> dict[str, Any]:
    job: dict[str, Any] = _job(step) or {}
    summary = job.get("transformationSummary")
    files: dict[str, Any] = summary if isinstance(summary, dict) else {}
    return {
        "index": index + 1,
        "name": _text(step.get("name")),
        "upload_type": _text(step.get("uploadType")),
        "category": _text(step.get("category")),
        "transformation_job_id": _count(job.get("id")),
        "status": _text(job.get("status")),
        "transform_job_status": _text(job.get("transformJobStatus")),
        "upload_job_status": _text(job.get("uploadJobStatus")),
        "in_progress": job.get("inProgress") if isinstance(job.get("inProgress"), bool) else None,
        "files_started": _count(files.get("startedCount")),
        "files_succeeded": _count(files.get("succeededCount")),
        "files_finished": _count(files.get("finishedCount")),
        "files_total": _count(files.get("totalFileCount")),
    }


def summarize_run(
    run: Mapping[str, Any] | None,
    ref: Mapping[str, Any],
    state: str,
    failures: list[str] | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """A small, JSON-safe, secret-free summary of a pipeline run."""
    run = run or {}
    return {
        "organization_id": ref.get("organization_id"),
        "pipeline_id": ref.get("pipeline_id"),
        "run_id": ref.get("run_id"),
        "state": state,
        "created": _text(run.get("created")),
        "finished": _text(run.get("finished")),
        "steps": [summarize_step(i, s) for i, s in enumerate(_steps(run))],
        "item_count_before": _item_counts(run.get("itemCountBefore")),
        "item_count_after": _item_counts(run.get("itemCountAfter")),
        "item_count_import_into_project_failed": _count(run.get("itemCountImportIntoProjectFailed")),
        "failures": list(failures or []),
        "warnings": list(warnings or []),
    }


def _progress(run: Mapping[str, Any]) -> str:
    """``running: step 2/3 'name' transform started, upload waiting`` (changes are logged)."""
    steps = _steps(run)
    active = [(i, s, j) for i, s in enumerate(steps) if (j := _job(s)) is not None]
    if not active:
        return "running: no step started yet" if steps else "running"
    index, step, job = active[-1]
    parts = [f"{label} {job.get(field)}" for field, label in (("transformJobStatus", "transform"),
                                                              ("uploadJobStatus", "upload"))
             if job.get(field) is not None]
    if not parts and job.get("status") is not None:
        parts.append(f"status {job.get('status')}")
    detail = f" ({', '.join(parts)})" if parts else ""
    return f"running: {_step_name(index, step)} of {len(steps)}{detail}"


# --------------------------------------------------------------------------------------------
# The inferred outcome rules (edge-impulse.md A.2, "Reading the outcome is inferred")
# --------------------------------------------------------------------------------------------


def inferred_run_outcome(
    pipeline: Mapping[str, Any], ref: Mapping[str, Any], now: float | None = None
) -> JobSnapshot:
    """Read one run's state from its pipeline. **Every rule here is inferred**, none is documented
    (edge-impulse.md A.2); this function is the only place that applies them.

    1. *Running*: ``currentRun.id`` is our run id. A current run that already says ``finished``
       is still treated as running until it becomes ``lastRun`` (state ``finishing``).
    2. *Done*: our run is ``lastRun`` (no longer current) and ``lastRun.finished`` is set
       (``lastRun`` without ``finished``: still ``finishing``). There is no success flag on a run,
       so a finished run **failed** when

       * a step's transformation job has ``status``, ``transformJobStatus`` or
         ``uploadJobStatus`` equal to ``failed``, or a value outside TransformationJobStatusEnum
         (an undocumented status is not taken as success);
       * imports failed: ``itemCountImportIntoProjectFailed > 0``, or a step's
         ``transformationSummary.succeededCount < finishedCount``. These fail the run when
         ``ref["fail_on_import_errors"]`` is true (the default), else they are warnings;

       otherwise it **succeeded**.
    3. *Could not start*: our run is neither current nor last and ``lastRunStartError`` is set.
    4. *Not visible yet*: neither current nor last, no start error, and ``ref["started_at"]`` is
       less than :data:`RUN_VISIBILITY_GRACE_SECONDS` ago: keep waiting (state ``pending``).
    5. Otherwise the run cannot be found (e.g. a later run replaced it as ``lastRun``): its outcome
       cannot be read, which is reported as a failure rather than assumed to be a success.
    """
    run_id = ref["run_id"]
    current, last = _run(pipeline.get("currentRun")), _run(pipeline.get("lastRun"))

    # rule 1
    if current is not None and _run_id(current) == run_id:
        state = "finishing" if current.get("finished") else _progress(current)
        return JobSnapshot(state, Outcome.RUNNING, None, summarize_run(current, ref, state))

    # rule 2
    if last is not None and _run_id(last) == run_id:
        if not last.get("finished"):
            return JobSnapshot("finishing", Outcome.RUNNING, None, summarize_run(last, ref, "finishing"))
        failures: list[str] = []
        import_errors: list[str] = []
        for index, step in enumerate(_steps(last)):
            job = _job(step)
            if job is None:
                continue
            name = _step_name(index, step)
            failed = [f"{f}=failed" for f in STEP_STATUS_FIELDS if job.get(f) == "failed"]
            unknown = [f"{f}={job.get(f)!r}" for f in STEP_STATUS_FIELDS
                       if job.get(f) is not None and job.get(f) not in JOB_STATUSES]
            if failed:
                failures.append(f"{name} failed ({', '.join(failed)})")
            if unknown:
                failures.append(f"{name} has an undocumented status ({', '.join(unknown)})")
            files = job.get("transformationSummary")
            if isinstance(files, dict):
                ok, done = _count(files.get("succeededCount")), _count(files.get("finishedCount"))
                if ok is not None and done is not None and ok < done:
                    import_errors.append(f"{name}: {done - ok} of {done} files failed "
                                         f"(succeededCount {ok} < finishedCount {done})")
        not_imported = _count(last.get("itemCountImportIntoProjectFailed"))
        if not_imported:
            import_errors.append(f"{not_imported} data item(s) failed to import into the project "
                                 "(itemCountImportIntoProjectFailed)")
        warnings: list[str] = []
        if bool(ref.get("fail_on_import_errors", True)):
            failures += import_errors
        else:
            warnings = import_errors
        if failures:
            return JobSnapshot("failed", Outcome.FAILED, "; ".join(failures),
                               summarize_run(last, ref, "failed", failures, warnings))
        message = ("finished with warnings: " + "; ".join(warnings)) if warnings else None
        return JobSnapshot("finished", Outcome.SUCCESS, message,
                           summarize_run(last, ref, "finished", [], warnings))

    # rule 3
    seen = f"current run {_run_id(current)}, last run {_run_id(last)}"
    start_error = pipeline.get("lastRunStartError")
    if isinstance(start_error, str) and start_error.strip():
        message = f"the run could not start: {_text(start_error.strip())} ({seen})"
        return JobSnapshot("start_failed", Outcome.FAILED, message,
                           summarize_run(None, ref, "start_failed", [message]))

    # rule 4
    started_at = ref.get("started_at")
    now = time.time() if now is None else now
    if isinstance(started_at, (int, float)) and now - float(started_at) < RUN_VISIBILITY_GRACE_SECONDS:
        return JobSnapshot("pending", Outcome.RUNNING, None, summarize_run(None, ref, "pending"))

    # rule 5
    message = (f"run {run_id} is neither the current nor the last run of the pipeline ({seen}) and no start "
               "error is reported, so its outcome cannot be read (another run may have replaced it)")
    return JobSnapshot("not_found", Outcome.FAILED, message, summarize_run(None, ref, "not_found", [message]))


def current_run_id(pipeline: Mapping[str, Any]) -> int | None:
    """The id of the pipeline's run in progress, if any."""
    return _run_id(_run(pipeline.get("currentRun")))


# --------------------------------------------------------------------------------------------
# The job kind
# --------------------------------------------------------------------------------------------


def _ei(hook: PipelinesHook) -> EdgeImpulseHook:
    return cast("EdgeImpulseHook", hook)


class EdgeImpulsePipelineRunKind(JobKind):
    """A run of an Edge Impulse organizational pipeline, read through its pipeline."""

    name = "edge_impulse.pipeline_run"
    label = "organizational pipeline run"
    sensor_name = "EdgeImpulsePipelineRunSensor"
    cancellable = True

    def describe(self, ref: dict[str, Any]) -> str:
        return (f"(Edge Impulse organization {ref['organization_id']}, pipeline {ref['pipeline_id']}, "
                f"run {ref['run_id']})")

    def fetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        return _ei(hook).get_pipeline(ref["organization_id"], ref["pipeline_id"])

    async def afetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        return await _ei(hook).aget_pipeline(ref["organization_id"], ref["pipeline_id"])

    def interpret(self, payload: Any, ref: dict[str, Any]) -> JobSnapshot:
        return inferred_run_outcome(payload if isinstance(payload, dict) else {}, ref)

    def _should_stop(self, pipeline: Mapping[str, Any], ref: dict[str, Any]) -> bool:
        current = current_run_id(pipeline)
        if current != ref["run_id"]:
            log.info("Not stopping Edge Impulse pipeline %s: its current run is %s, not run %s.",
                     ref["pipeline_id"], current, ref["run_id"])
            return False
        return True

    def cancel(self, hook: PipelinesHook, ref: dict[str, Any]) -> bool:
        """Stop the pipeline, only while its current run is ``ref['run_id']``.

        ``POST .../stop`` takes no run id, so the pipeline is re-read first. A run that replaces
        ours between the read and the stop request would be stopped: the API offers no way to
        close that (short) window.
        """
        ei = _ei(hook)
        if not self._should_stop(ei.get_pipeline(ref["organization_id"], ref["pipeline_id"]), ref):
            return False
        ei.stop_pipeline(ref["organization_id"], ref["pipeline_id"])
        log.info("Stopped Edge Impulse pipeline %s run %s.", ref["pipeline_id"], ref["run_id"])
        return True

    async def acancel(self, hook: PipelinesHook, ref: dict[str, Any]) -> bool:
        ei = _ei(hook)
        if not self._should_stop(await ei.aget_pipeline(ref["organization_id"], ref["pipeline_id"]), ref):
            return False
        await ei.astop_pipeline(ref["organization_id"], ref["pipeline_id"])
        log.info("Stopped Edge Impulse pipeline %s run %s.", ref["pipeline_id"], ref["run_id"])
        return True

    def resume_hint(self, ref: dict[str, Any]) -> str:
        extra = "" if ref.get("fail_on_import_errors", True) else ", fail_on_import_errors=False"
        return (" To keep waiting for it, use EdgeImpulsePipelineRunSensor("
                f"organization_id={ref['organization_id']}, pipeline_id={ref['pipeline_id']}, "
                f"run_id={ref['run_id']}{extra}).")


EI_PIPELINE_RUN = EdgeImpulsePipelineRunKind()

__all__ = [
    "EI_PIPELINE_RUN",
    "JOB_STATUSES",
    "RUN_VISIBILITY_GRACE_SECONDS",
    "EdgeImpulsePipelineRunKind",
    "current_run_id",
    "inferred_run_outcome",
    "summarize_run",
]
