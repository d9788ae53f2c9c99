"""Cognite job kinds: entity matching pipeline runs, estimate-quality jobs, extraction run reports."""

from __future__ import annotations

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


def _cdf_outcome(payload: dict[str, Any], what: str) -> tuple[str, Outcome, str | None]:
    state = str(payload.get("status"))
    outcome = CDF_JOB_STATES.get(state)
    if outcome is None:
        return state, Outcome.FAILED, f"CDF returned an unknown status {state!r} for {what}."
    message = payload.get("errorMessage") if outcome is Outcome.FAILED else None
    return state, outcome, message or (None if outcome is not Outcome.FAILED else "no errorMessage from CDF")


def _cognite(hook: PipelinesHook) -> CogniteHook:
    return cast("CogniteHook", hook)


def summarize_pipeline_run(payload: dict[str, Any], pipeline_id: int, include_matches: bool = False) -> dict[str, Any]:
    """A small, JSON-safe summary of a pipeline run (matches only on request)."""
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
        state, outcome, message = _cdf_outcome(payload, self.describe(ref))
        result = summarize_pipeline_run(payload, ref["pipeline_id"], bool(ref.get("include_matches")))
        return JobSnapshot(state, outcome, message, result)

    def resume_hint(self, ref: dict[str, Any]) -> str:
        return (f" To keep waiting for it, use CogniteEntityMatchingPipelineRunSensor("
                f"pipeline_id={ref['pipeline_id']}, job_id={ref['job_id']}).")


QUALITY_METRICS = ("qualityScorePercent", "confidencePercent", "contextualizationScorePercent")


def summarize_estimate(payload: dict[str, Any]) -> dict[str, Any]:
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
        state, outcome, message = _cdf_outcome(payload, f"job {ref['job_id']}")
        return JobSnapshot(state, outcome, message, summarize_estimate(payload))


class ExtractionPipelineReportKind(JobKind):
    """Waits for an extraction pipeline to report a run with given statuses after a time.

    ``ref``: ``external_id``, ``statuses``, ``failure_statuses``, ``created_after`` (epoch ms).
    The first matching run (oldest first) decides: a success status -> success, a failure
    status -> failed (fail fast with the run's message).
    """

    name = "cognite.extraction_pipeline_report"
    label = "extraction pipeline report"
    sensor_name = "CogniteExtractionPipelineRunSensor"

    def describe(self, ref: dict[str, Any]) -> str:
        return f"{ref['external_id']!r} ({'/'.join(ref['statuses'])} after {ref['created_after']} ms)"

    def _filter(self, ref: dict[str, Any]) -> dict[str, Any]:
        from airflow_provider_pipelines.hooks.cognite import CogniteHook

        statuses = list(dict.fromkeys([*ref["statuses"], *ref.get("failure_statuses", [])]))
        return CogniteHook.extpipe_runs_filter(ref["external_id"], statuses, created_min=ref["created_after"], limit=100)

    def fetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        return _cognite(hook).list_extpipe_runs(self._filter(ref), max_items=1000)

    async def afetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        return await _cognite(hook).alist_extpipe_runs(self._filter(ref), max_items=1000)

    def interpret(self, payload: Any, ref: dict[str, Any]) -> JobSnapshot:
        runs = sorted(payload or [], key=lambda r: (r.get("createdTime") or 0, r.get("id") or 0))
        wanted, failing = set(ref["statuses"]), set(ref.get("failure_statuses", []))
        for run in runs:
            status = run.get("status")
            summary = {"external_id": ref["external_id"], "run": run}
            if status in failing:
                return JobSnapshot(str(status), Outcome.FAILED, run.get("message") or "no message", summary)
            if status in wanted:
                return JobSnapshot(str(status), Outcome.SUCCESS, run.get("message"), summary)
        return JobSnapshot("waiting", Outcome.RUNNING, None, {"external_id": ref["external_id"]})


ENTITY_MATCHING_RUN = EntityMatchingPipelineRunKind()
ESTIMATE_QUALITY = EstimateQualityKind()
EXTRACTION_REPORT = ExtractionPipelineReportKind()
