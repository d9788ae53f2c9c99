"""Operators for Cognite Data Fusion: entity matching runs, advanced-join quality gates, run reports."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_pipelines._compat import BaseOperator
from airflow_provider_pipelines.hooks.cognite import CogniteHook, _int_id
from airflow_provider_pipelines.jobs.base import JobFailedError, JobSnapshot, Outcome
from airflow_provider_pipelines.jobs.cognite import (
    CDF_JOB_STATES,
    ENTITY_MATCHING_RUN,
    ESTIMATE_QUALITY,
    QUALITY_METRICS,
    summarize_estimate,
    summarize_pipeline_run,
)
from airflow_provider_pipelines.links import CogniteEntityMatchingRunLink
from airflow_provider_pipelines.operators._base import (
    DEFAULT_TIMEOUT,
    JobOperatorMixin,
    default_deferrable,
    push_xcom,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: the keyword arguments of the quality gate, and the CDF metric each one bounds
THRESHOLDS = {
    "min_quality_score_percent": "qualityScorePercent",
    "min_confidence_percent": "confidencePercent",
    "min_contextualization_score_percent": "contextualizationScorePercent",
}
MATCHER_FIELDS = ("dbName", "tableName", "fromColumnKey", "toColumnKey")
ADVANCED_JOIN_EXTERNAL_ID_MAX = 255


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def validate_pipeline_id(value: Any) -> int | str:
    """An int pipeline id, or a template to check after rendering."""
    return value if _templated(value) else _int_id("pipeline_id", value)


def validate_threshold(name: str, value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number between 0 and 100, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number between 0 and 100, got {value!r}.") from None
    if not 0 <= number <= 100:
        raise ValueError(f"{name} must be between 0 and 100, got {value!r}.")
    return number


def validate_matcher(matcher: Any) -> dict[str, Any]:
    """Check a Raw matcher: ``{"type": "raw", "dbName", "tableName", "fromColumnKey", "toColumnKey"}``."""
    if isinstance(matcher, str):
        try:
            matcher = json.loads(matcher)
        except ValueError:
            raise ValueError(f"matcher must be a dict (or JSON object), got the string {matcher!r}.") from None
    if not isinstance(matcher, dict):
        raise ValueError(f"matcher must be a dict like {{'type': 'raw', 'dbName': ..., 'tableName': ..., "
                         f"'fromColumnKey': ..., 'toColumnKey': ...}}, got {type(matcher).__name__}.")
    if matcher.get("type") != "raw":
        raise ValueError(f"matcher['type'] must be 'raw' (the only matcher CDF documents), got {matcher.get('type')!r}.")
    missing = [f for f in MATCHER_FIELDS if not isinstance(matcher.get(f), str) or not matcher[f].strip()]
    if missing:
        raise ValueError(f"matcher is missing non-empty string field(s) {', '.join(missing)}.")
    unknown = sorted(set(matcher) - {"type", *MATCHER_FIELDS})
    if unknown:
        raise ValueError(f"matcher has unknown field(s) {', '.join(unknown)}; allowed: type, {', '.join(MATCHER_FIELDS)}.")
    return dict(matcher)


def validate_external_id(name: str, value: Any, max_len: int = ADVANCED_JOIN_EXTERNAL_ID_MAX) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}.")
    if len(value) > max_len:
        raise ValueError(f"{name} must be at most {max_len} characters, got {len(value)}.")
    return value


def quality_gate_failures(result: dict[str, Any], thresholds: dict[str, float | None]) -> list[str]:
    """Every metric under its minimum, with both numbers."""
    failures = []
    for arg, metric in THRESHOLDS.items():
        minimum = thresholds.get(arg)
        if minimum is None:
            continue
        value = result.get(metric)
        if value is None:
            failures.append(f"{metric} is missing from the result (minimum {minimum:g})")
        elif float(value) < minimum:
            failures.append(f"{metric} {float(value):g} < minimum {minimum:g}")
    return failures


class CogniteEntityMatchingPipelineRunOperator(JobOperatorMixin, BaseOperator):
    """Run a CDF entity matching pipeline and wait for its result.

    Pushes ``job_id`` (and ``run_url``) to XCom before waiting; returns a summary (job id, status,
    times, counts of matches, suggested and generated rules, errors), plus the matches with
    ``include_matches=True``. A ``Failed`` run fails the task with CDF's ``errorMessage``.

    Reattach: a retry never starts a second run while the first is active. On Airflow 3.3+ the
    task state store remembers the run this task started; otherwise (and as a fallback) with
    ``reuse_active_run=True`` the pipeline's latest run is adopted while it is Queued or Running.

    :param pipeline_id: the pipeline's id (templated).
    :param cognite_conn_id: connection id (conn type ``cognite``).
    :param wait_for_completion: wait for the run to finish (else return after starting it).
    :param deferrable: wait in the triggerer instead of the worker.
    :param poll_interval: seconds between status checks (grows up to ``max_poll_interval``).
    :param timeout: give up waiting after this many seconds (the run is left running).
    :param include_matches: add the run's matches to the returned summary.
    :param reuse_active_run: adopt the pipeline's active run instead of starting another one.
    """

    template_fields: Sequence[str] = ("pipeline_id", "cognite_conn_id")
    operator_extra_links = (CogniteEntityMatchingRunLink(),)
    ui_color = "#d5e8f7"
    STATE_KEY = "cognite_entity_matching_run"

    def __init__(
        self,
        *,
        pipeline_id: int | str,
        cognite_conn_id: str = CogniteHook.default_conn_name,
        wait_for_completion: bool = True,
        deferrable: bool | None = None,
        poll_interval: float | timedelta = 10,
        max_poll_interval: float | timedelta | None = None,
        timeout: float | timedelta | None = DEFAULT_TIMEOUT,
        include_matches: bool = False,
        reuse_active_run: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline_id = validate_pipeline_id(pipeline_id)
        self.cognite_conn_id = cognite_conn_id
        self.include_matches = include_matches
        self.reuse_active_run = reuse_active_run
        self._init_wait(
            wait_for_completion=wait_for_completion,
            deferrable=default_deferrable() if deferrable is None else deferrable,
            poll_interval=poll_interval, max_poll_interval=max_poll_interval, timeout=timeout,
        )

    @cached_property
    def hook(self) -> CogniteHook:
        return CogniteHook(self.cognite_conn_id)

    def _start_or_adopt(self, context: Context, pipeline_id: int) -> dict[str, Any]:
        hook = self.hook
        remembered = self.remembered_job(context, self.STATE_KEY)
        if remembered and remembered.get("pipeline_id") == pipeline_id:
            run = hook.get_pipeline_run(pipeline_id, remembered["job_id"])
            if CDF_JOB_STATES.get(run.get("status")) is not Outcome.FAILED:
                self.log.info("Reattaching to run %s that an earlier try started (status %s).",
                              run.get("jobId"), run.get("status"))
                return run
        if self.reuse_active_run:
            latest = hook.latest_pipeline_run(pipeline_id)
            if latest and CDF_JOB_STATES.get(str(latest.get("status"))) is Outcome.RUNNING:
                self.log.warning("Pipeline %s already has an active run %s (%s); adopting it instead of "
                                 "starting another. Set reuse_active_run=False to always start a new run.",
                                 pipeline_id, latest.get("jobId"), latest.get("status"))
                return latest
        run = hook.run_pipeline(pipeline_id)
        self.log.info("Started entity matching pipeline %s: job %s.", pipeline_id, run.get("jobId"))
        return run

    def execute(self, context: Context) -> dict[str, Any]:
        pipeline_id = _int_id("pipeline_id", self.pipeline_id)
        run = self._start_or_adopt(context, pipeline_id)
        job_id = int(run["jobId"])
        ref = {"pipeline_id": pipeline_id, "job_id": job_id, "include_matches": self.include_matches}
        self.remember_job(context, self.STATE_KEY, ref)
        push_xcom(context, "job_id", job_id)
        push_xcom(context, "run_url", self.hook.fusion_url(f"entity_matching/pipelines/{pipeline_id}/runs/{job_id}"))
        if not self.wait_for_completion:
            return summarize_pipeline_run(run, pipeline_id, self.include_matches)
        snap = self.wait_or_defer(
            kind=ENTITY_MATCHING_RUN, hook=self.hook, ref=ref, trigger_class=self._trigger_class(),
            conn_id=self.cognite_conn_id, deadline=self.compute_deadline(),
        )
        return self._finish(ref, snap)

    @staticmethod
    def _trigger_class() -> Any:
        from airflow_provider_pipelines.triggers.cognite import CogniteEntityMatchingPipelineRunTrigger

        return CogniteEntityMatchingPipelineRunTrigger

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        snap = self.snapshot_from_event(event, ENTITY_MATCHING_RUN)
        return self._finish(dict((event or {}).get("ref") or {}), snap)

    def _finish(self, ref: dict[str, Any], snap: JobSnapshot) -> dict[str, Any]:
        if snap.outcome is Outcome.FAILED:
            raise JobFailedError(
                f"Entity matching pipeline {ref.get('pipeline_id')} run {ref.get('job_id')} ended {snap.state}: "
                f"{snap.message}"
            )
        self.log.info("Entity matching run %s completed: %s matches, %s suggested rules, %s generated rules.",
                      ref.get("job_id"), snap.result.get("matches_count"), snap.result.get("suggestedRules_count"),
                      snap.result.get("generatedRules_count"))
        return snap.result


class CogniteAdvancedJoinQualityOperator(JobOperatorMixin, BaseOperator):
    """Estimate the quality of a CDF advanced join and gate the DAG on it.

    Starts ``POST /advancedjoins/estimatequality``, pushes ``job_id`` to XCom, waits (worker or
    deferred) and returns the job id and the three percentages. Fails, naming every metric under
    its minimum with both numbers, when the gate is not met; a failed job fails the task with
    CDF's message. Estimating quality changes nothing in CDF, so a retry may safely start a new
    estimate; on Airflow 3.3+ it reattaches to the earlier try's job instead.

    :param advanced_join_external_id: the join's external id (<= 255 characters, templated).
    :param matcher: a Raw matcher ``{"type": "raw", "dbName", "tableName", "fromColumnKey",
        "toColumnKey"}`` (templated).
    :param min_quality_score_percent: minimum ``qualityScorePercent`` (0..100, templated).
    :param min_confidence_percent: minimum ``confidencePercent`` (0..100, templated).
    :param min_contextualization_score_percent: minimum ``contextualizationScorePercent``.
    """

    template_fields: Sequence[str] = (
        "advanced_join_external_id", "matcher", "min_quality_score_percent", "min_confidence_percent",
        "min_contextualization_score_percent", "cognite_conn_id",
    )
    ui_color = "#d5e8f7"
    STATE_KEY = "cognite_estimate_quality_job"

    def __init__(
        self,
        *,
        advanced_join_external_id: str,
        matcher: dict[str, Any] | str,
        min_quality_score_percent: float | str | None = None,
        min_confidence_percent: float | str | None = None,
        min_contextualization_score_percent: float | str | None = None,
        cognite_conn_id: str = CogniteHook.default_conn_name,
        wait_for_completion: bool = True,
        deferrable: bool | None = None,
        poll_interval: float | timedelta = 10,
        max_poll_interval: float | timedelta | None = None,
        timeout: float | timedelta | None = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.advanced_join_external_id = advanced_join_external_id
        self.matcher = matcher
        self.min_quality_score_percent = min_quality_score_percent
        self.min_confidence_percent = min_confidence_percent
        self.min_contextualization_score_percent = min_contextualization_score_percent
        self.cognite_conn_id = cognite_conn_id
        self._init_wait(
            wait_for_completion=wait_for_completion,
            deferrable=default_deferrable() if deferrable is None else deferrable,
            poll_interval=poll_interval, max_poll_interval=max_poll_interval, timeout=timeout,
        )
        self._validate(rendered=False)

    def _validate(self, *, rendered: bool) -> tuple[str, dict[str, Any], dict[str, float | None]]:
        """Validate at construction (skipping templates) and again after rendering."""
        external_id = self.advanced_join_external_id
        if rendered or not _templated(external_id):
            validate_external_id("advanced_join_external_id", external_id)
        matcher: Any = self.matcher
        if rendered:
            matcher = validate_matcher(matcher)
        elif isinstance(matcher, dict):  # templated values are checked again after rendering
            validate_matcher({k: ("templated" if _templated(v) else v) for k, v in matcher.items()})
        elif not _templated(matcher):
            validate_matcher(matcher)
        thresholds: dict[str, float | None] = {}
        for arg in THRESHOLDS:
            value = getattr(self, arg)
            thresholds[arg] = None if (not rendered and _templated(value)) else validate_threshold(arg, value)
        return external_id, matcher, thresholds

    @cached_property
    def hook(self) -> CogniteHook:
        return CogniteHook(self.cognite_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        external_id, matcher, thresholds = self._validate(rendered=True)
        remembered = self.remembered_job(context, self.STATE_KEY)
        job: dict[str, Any] | None = None
        if remembered and remembered.get("advanced_join_external_id") == external_id:
            job = self.hook.get_estimate_quality(remembered["job_id"])
            if CDF_JOB_STATES.get(str(job.get("status"))) is Outcome.FAILED:
                job = None
            else:
                self.log.info("Reattaching to estimate-quality job %s from an earlier try.", job.get("jobId"))
        if job is None:
            job = self.hook.start_estimate_quality(external_id, matcher)
            self.log.info("Started estimate-quality job %s for advanced join %r.", job.get("jobId"), external_id)
        ref = {"job_id": str(job["jobId"])}
        self.remember_job(context, self.STATE_KEY, {**ref, "advanced_join_external_id": external_id})
        push_xcom(context, "job_id", ref["job_id"])
        if not self.wait_for_completion:
            return summarize_estimate(job)
        snap = self.wait_or_defer(
            kind=ESTIMATE_QUALITY, hook=self.hook, ref=ref, trigger_class=self._trigger_class(),
            conn_id=self.cognite_conn_id, deadline=self.compute_deadline(),
        )
        return self._finish(ref, snap, thresholds)

    @staticmethod
    def _trigger_class() -> Any:
        from airflow_provider_pipelines.triggers.cognite import CogniteAdvancedJoinQualityTrigger

        return CogniteAdvancedJoinQualityTrigger

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        snap = self.snapshot_from_event(event, ESTIMATE_QUALITY)
        _, _, thresholds = self._validate(rendered=True)
        return self._finish(dict((event or {}).get("ref") or {}), snap, thresholds)

    def _finish(self, ref: dict[str, Any], snap: JobSnapshot, thresholds: dict[str, float | None]) -> dict[str, Any]:
        if snap.outcome is Outcome.FAILED:
            raise JobFailedError(f"Estimate-quality job {ref.get('job_id')} for advanced join "
                                 f"{self.advanced_join_external_id!r} ended {snap.state}: {snap.message}")
        scores = ", ".join(f"{m}={snap.result.get(m)}" for m in QUALITY_METRICS)
        self.log.info("Advanced join %r quality: %s.", self.advanced_join_external_id, scores)
        failures = quality_gate_failures(snap.result, thresholds)
        if failures:
            raise JobFailedError(f"Quality gate not met for advanced join {self.advanced_join_external_id!r} "
                                 f"(job {ref.get('job_id')}): " + "; ".join(failures))
        return snap.result
