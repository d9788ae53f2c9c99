"""Cognite job kinds: entity matching pipeline runs, estimate-quality jobs, extraction run reports."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_pipelines.jobs.base import JobKind, JobSnapshot, Outcome

if TYPE_CHECKING:
    from airflow_provider_pipelines.hooks._base import PipelinesHook
    from airflow_provider_pipelines.hooks.cognite import CogniteHook

#: CDF contextualization job statuses (cognite.md §1, §2) and what they mean.
CDF_JOB_STATES = {
    "Queued": Outcome.RUNNING,
    "Running": Outcome.RUNNING,
    "Completed": Outcome.SUCCESS,
    "Failed": Outcome.FAILED,
}

#: Result keys whose lists are summarised as counts.
_RESULT_LISTS = ("matches", "suggestedRules", "generatedRules", "errors")
#: How many error strings of a run are kept in the summary.
_MAX_ERRORS_IN_SUMMARY = 5


def _cdf_outcome(payload: Any, what: Callable[[], str]) -> tuple[str, Outcome, str | None]:
    """Map a CDF job document to an outcome (``what()`` names the job in messages).

    An unknown status (or a document without one) fails the wait at once with a clear message
    rather than waiting for a state that may never come: CDF documents exactly the four
    statuses of :data:`CDF_JOB_STATES`.
    """
    if not isinstance(payload, dict):
        kind = type(payload).__name__
        return "unknown", Outcome.FAILED, f"CDF answered for {what()} with a {kind}, not a job document."
    state = str(payload.get("status"))
    outcome = CDF_JOB_STATES.get(state)
    if outcome is None:
        return state, Outcome.FAILED, f"CDF returned an unknown status {state!r} for {what()}."
    message = payload.get("errorMessage") if outcome is Outcome.FAILED else None
    return state, outcome, message or (None if outcome is not Outcome.FAILED else "no errorMessage from CDF")


def _cognite(hook: PipelinesHook) -> CogniteHook:
    return cast("CogniteHook", hook)


def summarize_pipeline_run(
    payload: dict[str, Any], pipeline_id: int, include_matches: bool = False
) -> dict[str, Any]:
    """A small, JSON-safe summary of a pipeline run (matches only on request)."""
    if not isinstance(payload, dict):
        payload = {}
    summary: dict[str, Any] = {
        "pipeline_id": pipeline_id,
        "job_id": payload.get("jobId"),
        "status": payload.get("status"),
        "created_time": payload.get("createdTime"),
        "start_time": payload.get("startTime"),
        "status_time": payload.get("statusTime"),
        "error_message": payload.get("errorMessage"),
    }
    for key in _RESULT_LISTS:
        value = payload.get(key)
        summary[f"{key}_count"] = len(value) if isinstance(value, list) else 0
    errors = payload.get("errors")
    if isinstance(errors, list) and errors:
        summary["errors"] = [str(e)[:500] for e in errors[:_MAX_ERRORS_IN_SUMMARY]]
    if include_matches:
        summary["matches"] = list(payload.get("matches") or [])
    return summary


class EntityMatchingPipelineRunKind(JobKind):
    name = "cognite.entity_matching_pipeline_run"
    label = "entity matching pipeline run"
    sensor_name = "CogniteEntityMatchingPipelineRunSensor"

    def describe(self, ref: dict[str, Any]) -> str:
        return f"(pipeline {ref['pipeline_id']}, job {ref['job_id']})"

    def fetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        return _cognite(hook).get_pipeline_run(ref["pipeline_id"], ref["job_id"])

    async def afetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        return await _cognite(hook).aget_pipeline_run(ref["pipeline_id"], ref["job_id"])

    def interpret(self, payload: Any, ref: dict[str, Any]) -> JobSnapshot:
        state, outcome, message = _cdf_outcome(payload, lambda: self.describe(ref))
        result = summarize_pipeline_run(payload, ref["pipeline_id"], bool(ref.get("include_matches")))
        return JobSnapshot(state, outcome, message, result)

    def resume_hint(self, ref: dict[str, Any]) -> str:
        return (f" To keep waiting for it, use CogniteEntityMatchingPipelineRunSensor("
                f"pipeline_id={ref['pipeline_id']}, job_id={ref['job_id']}).")


QUALITY_METRICS = ("qualityScorePercent", "confidencePercent", "contextualizationScorePercent")


def summarize_estimate(payload: dict[str, Any]) -> dict[str, Any]:
    """The job id, status, times and the three percentages of an estimate-quality job."""
    if not isinstance(payload, dict):
        payload = {}
    return {
        "job_id": payload.get("jobId"),
        "status": payload.get("status"),
        "advanced_join_external_id": payload.get("advancedJoinExternalId"),
        "created_time": payload.get("createdTime"),
        "start_time": payload.get("startTime"),
        "status_time": payload.get("statusTime"),
        "error_message": payload.get("errorMessage"),
        **{metric: payload.get(metric) for metric in QUALITY_METRICS},
    }


class EstimateQualityKind(JobKind):
    name = "cognite.advanced_join_estimate_quality"
    label = "advanced-join estimate-quality job"
    sensor_name = "CogniteAdvancedJoinQualitySensor"

    def describe(self, ref: dict[str, Any]) -> str:
        return str(ref["job_id"])

    def fetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        return _cognite(hook).get_estimate_quality(ref["job_id"])

    async def afetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        return await _cognite(hook).aget_estimate_quality(ref["job_id"])

    def interpret(self, payload: Any, ref: dict[str, Any]) -> JobSnapshot:
        state, outcome, message = _cdf_outcome(payload, lambda: f"job {ref['job_id']}")
        return JobSnapshot(state, outcome, message, summarize_estimate(payload))


def extraction_report_ref(
    external_id: Any, statuses: Any, failure_statuses: Any, created_after: Any
) -> dict[str, Any]:
    """The validated, JSON-only ``ref`` of an :class:`ExtractionPipelineReportKind` wait."""
    from airflow_provider_pipelines.hooks.cognite import (
        to_epoch_ms,
        validate_extpipe_external_id,
        validate_extpipe_statuses,
    )

    wanted = validate_extpipe_statuses("statuses", statuses)
    if not wanted:
        raise ValueError("statuses must name at least one run status to wait for, e.g. ('success',).")
    failing = validate_extpipe_statuses("failure_statuses", failure_statuses or [])
    overlap = sorted(set(wanted) & set(failing))
    if overlap:
        raise ValueError(f"statuses and failure_statuses must not share a status; both contain {overlap}.")
    return {
        "external_id": validate_extpipe_external_id(external_id),
        "statuses": wanted,
        "failure_statuses": failing,
        "created_after": to_epoch_ms(created_after, "created_after"),
    }


def ms_to_iso(millis: Any) -> str:
    """Epoch milliseconds as an ISO-8601 UTC time (for messages), or the raw value if it is not one."""
    try:
        moment = datetime.fromtimestamp(int(millis) / 1000, tz=timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return repr(millis)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _run_order(run: dict[str, Any], failing: set[str], created_after: int) -> tuple[int, int, int]:
    """Oldest first; on the same millisecond a failure comes first (the conservative reading)."""
    created = run.get("createdTime")
    created = created if isinstance(created, int) and not isinstance(created, bool) else created_after
    run_id = run.get("id")
    run_id = run_id if isinstance(run_id, int) and not isinstance(run_id, bool) else 0
    return created, 0 if run.get("status") in failing else 1, run_id


class _OldestRuns:
    """Keeps the oldest run of each status while pages stream by (constant memory)."""

    def __init__(self, ref: dict[str, Any]) -> None:
        self.failing = set(ref.get("failure_statuses") or [])
        self.created_after = int(ref["created_after"])
        self.oldest: dict[str, dict[str, Any]] = {}

    def add(self, page: list[dict[str, Any]]) -> None:
        for run in page:
            status = str(run.get("status"))
            kept = self.oldest.get(status)
            key = _run_order(run, self.failing, self.created_after)
            if kept is None or key < _run_order(kept, self.failing, self.created_after):
                self.oldest[status] = run

    def runs(self) -> list[dict[str, Any]]:
        return list(self.oldest.values())


class ExtractionPipelineReportKind(JobKind):
    """Waits for an extraction pipeline to report a run with given statuses after a time.

    ``ref`` (see :func:`extraction_report_ref`): ``external_id``, ``statuses``,
    ``failure_statuses``, ``created_after`` (epoch ms, inclusive). Each read lists the runs with
    any of those statuses created since ``created_after`` (every page, keeping only the oldest
    run per status). The oldest of them decides: one of ``statuses`` -> success, one of
    ``failure_statuses`` -> failed, with the run's message. A failure and a success reported in
    the same millisecond count as the failure first.
    """

    name = "cognite.extraction_pipeline_report"
    label = "extraction pipeline report"
    sensor_name = "CogniteExtractionPipelineRunSensor"

    def describe(self, ref: dict[str, Any]) -> str:
        return f"{ref['external_id']!r} ({'/'.join(ref['statuses'])} since {ms_to_iso(ref['created_after'])})"

    def _filter(self, ref: dict[str, Any]) -> dict[str, Any]:
        from airflow_provider_pipelines.hooks.cognite import CogniteHook

        statuses = list(dict.fromkeys([*ref["statuses"], *(ref.get("failure_statuses") or [])]))
        return CogniteHook.extpipe_runs_filter(ref["external_id"], statuses, created_min=ref["created_after"])

    def fetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        oldest = _OldestRuns(ref)
        for page in _cognite(hook).iter_extpipe_run_pages(self._filter(ref)):
            oldest.add(page)
        return oldest.runs()

    async def afetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        oldest = _OldestRuns(ref)
        await _cognite(hook).avisit_extpipe_run_pages(self._filter(ref), oldest.add)
        return oldest.runs()

    def interpret(self, payload: Any, ref: dict[str, Any]) -> JobSnapshot:
        wanted, failing = set(ref["statuses"]), set(ref.get("failure_statuses") or [])
        created_after = int(ref["created_after"])
        runs = [r for r in (payload or []) if isinstance(r, dict) and r.get("status") in wanted | failing]
        if not runs:
            return JobSnapshot("waiting", Outcome.RUNNING, None, {"external_id": ref["external_id"]})
        first = min(runs, key=lambda r: _run_order(r, failing, created_after))
        status = str(first.get("status"))
        summary = {"external_id": ref["external_id"], "run": {"externalId": ref["external_id"], **first}}
        if status in failing:
            message = first.get("message") or "the run has no message"
            return JobSnapshot(status, Outcome.FAILED, message, summary)
        return JobSnapshot(status, Outcome.SUCCESS, first.get("message"), summary)

    def timeout_message(self, ref: dict[str, Any], last: JobSnapshot | None, waited: float | None) -> str:
        waited_text = f" after {waited:.0f} s" if waited is not None else ""
        return (
            f"Timed out{waited_text} waiting for extraction pipeline {ref['external_id']!r} to report a run "
            f"with status {' or '.join(ref['statuses'])} created at or after "
            f"{ms_to_iso(ref['created_after'])}; none was reported."
        )


ENTITY_MATCHING_RUN = EntityMatchingPipelineRunKind()
ESTIMATE_QUALITY = EstimateQualityKind()
EXTRACTION_REPORT = ExtractionPipelineReportKind()
