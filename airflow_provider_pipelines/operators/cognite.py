"""Operators for Cognite Data Fusion: entity matching runs, advanced-join quality gates, run reports."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_pipelines._compat import AirflowException, BaseOperator, redact_secrets
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.cognite import (
    CogniteHook,
    _int_id,
    to_epoch_ms,
    validate_external_id,
    validate_extpipe_external_id,
    validate_extpipe_status,
    validate_matcher,
)
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

try:  # XComArg and friends (values resolved at run time)
    from airflow.sdk.definitions._internal.mixins import ResolveMixin as _ResolveMixin
except ImportError:  # pragma: no cover - moved in a future Airflow
    _ResolveMixin = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from airflow.sdk import Context

#: After a start request with no clear answer (read timeout, 502-504), an active run created at
#: most this long before the request counts as the one it started (allows for clock skew).
AMBIGUOUS_START_WINDOW_MS = 60_000

#: the keyword arguments of the quality gate, and the CDF metric each one bounds
THRESHOLDS = {
    "min_quality_score_percent": "qualityScorePercent",
    "min_confidence_percent": "confidencePercent",
    "min_contextualization_score_percent": "contextualizationScorePercent",
}


def _templated(value: Any) -> bool:
    """Whether ``value`` is only known after rendering: a Jinja string or an ``XComArg``.

    Such values are checked again after rendering, before any remote call.
    """
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    return _ResolveMixin is not None and isinstance(value, _ResolveMixin)


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
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number):
            failures.append(f"{metric} is not a number ({value!r}; minimum {minimum:g})")
            continue
        if number < minimum:
            failures.append(f"{metric} {number:g} < minimum {minimum:g}")
    return failures


def is_retry(context: Context) -> bool:
    """Whether this is a later try of the task (an unknown try number counts as a retry)."""
    ti = context.get("ti") or context.get("task_instance")  # type: ignore[call-overload]
    try_number = getattr(ti, "try_number", None)
    return not isinstance(try_number, int) or try_number > 1


def _job_id_of(job: Any, what: str, kind: type) -> Any:
    """The ``jobId`` of a CDF job document, or a clear error when CDF sent none."""
    value = job.get("jobId") if isinstance(job, dict) else None
    if value in (None, "") or isinstance(value, bool):
        raise AirflowException(f"CDF answered for {what} without a jobId: {str(job)[:200]!r}.")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise AirflowException(f"CDF answered for {what} with an invalid jobId {value!r}.") from None


class CogniteEntityMatchingPipelineRunOperator(JobOperatorMixin, BaseOperator):
    """Run a CDF entity matching pipeline and wait for its result.

    Pushes ``job_id`` (and ``run_url``) to XCom before waiting; returns a summary (job id, status,
    times, counts of matches, suggested and generated rules, errors), plus the matches with
    ``include_matches=True``. A ``Failed`` run fails the task with CDF's ``errorMessage``.

    Reattach: a retry never starts a second run while the first is active. On Airflow 3.3+ the
    task state store remembers the run this task started; on a retry with nothing remembered
    (older Airflow 3 releases, or a worker lost right after starting the run) and
    ``reuse_active_run=True``, the pipeline's latest run is adopted while it is Queued or Running.
    A first try always starts a new run. CDF has no API to cancel a run, so a killed or timed-out
    task leaves it running.

    :param pipeline_id: the pipeline's id (templated).
    :param cognite_conn_id: connection id (conn type ``cognite``).
    :param wait_for_completion: wait for the run to finish (else return after starting it).
    :param deferrable: wait in the triggerer instead of the worker.
    :param poll_interval: seconds between status checks (grows up to ``max_poll_interval``).
    :param max_poll_interval: the poll interval grows up to this (default 6x ``poll_interval``, <= 300 s).
    :param timeout: give up waiting after this many seconds (the run is left running; a retry
        reattaches to it).
    :param include_matches: add the run's matches to the returned summary.
    :param reuse_active_run: on a retry, adopt the pipeline's active run instead of starting another.
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
        """The run this try watches: the earlier try's run, the pipeline's active run, or a new one.

        1. Airflow 3.3+: the task state store remembers the run an earlier try of this task
           started. While it is Queued or Running it is reattached; once Completed its result is
           returned without a new run (the worker died while waiting); once Failed a new run starts.
        2. On a retry with nothing remembered (Airflow < 3.3, or a worker that died between
           starting the run and remembering it) and ``reuse_active_run=True``, the pipeline's
           latest run is adopted while it is Queued or Running. A first try never adopts: it
           could pick up a run started elsewhere (e.g. CDF's own schedule) before this DAG's data
           was ready.
        3. Otherwise a new run starts. Starting is not retried after an ambiguous failure (read
           timeout, 502-504); the run it may have created is looked for and adopted instead.
        """
        hook = self.hook
        remembered = self.remembered_job(context, self.STATE_KEY)
        if remembered and remembered.get("pipeline_id") == pipeline_id and remembered.get("job_id"):
            run = self._remembered_run(pipeline_id, remembered["job_id"])
            if run is not None and CDF_JOB_STATES.get(str(run.get("status"))) is not Outcome.FAILED:
                self.log.info("Reattaching to run %s of pipeline %s that an earlier try started (status %s).",
                              run.get("jobId"), pipeline_id, run.get("status"))
                return run
        if self.reuse_active_run and is_retry(context):
            latest = hook.latest_pipeline_run(pipeline_id)
            if latest and CDF_JOB_STATES.get(str(latest.get("status"))) is Outcome.RUNNING:
                self.log.warning("Pipeline %s already has an active run %s (%s); adopting it instead of "
                                 "starting another. Set reuse_active_run=False to always start a new run.",
                                 pipeline_id, latest.get("jobId"), latest.get("status"))
                return latest
        asked_at_ms = time.time() * 1000
        try:
            run = hook.run_pipeline(pipeline_id)
        except ApiError as err:
            if not err.ambiguous:
                raise
            run = self._run_started_despite(err, pipeline_id, asked_at_ms)
        self.log.info("Started entity matching pipeline %s: job %s.", pipeline_id, run.get("jobId"))
        return run

    def _run_started_despite(self, err: ApiError, pipeline_id: int, asked_at_ms: float) -> dict[str, Any]:
        """After a start request without a clear answer, adopt the run it may have created.

        The pipeline's latest run is taken as ours when it is active and was created at most
        :data:`AMBIGUOUS_START_WINDOW_MS` before we asked (CDF's clock may differ from ours);
        otherwise the error is raised, and a retry decides again.
        """
        latest = self.hook.latest_pipeline_run(pipeline_id)
        created = latest.get("createdTime") if latest else None
        if (latest and CDF_JOB_STATES.get(str(latest.get("status"))) is Outcome.RUNNING
                and isinstance(created, (int, float)) and created >= asked_at_ms - AMBIGUOUS_START_WINDOW_MS):
            self.log.warning("Starting pipeline %s got no clear answer (%s), but run %s (%s) appeared: "
                             "adopting it.", pipeline_id, err, latest.get("jobId"), latest.get("status"))
            return latest
        raise err

    def _remembered_run(self, pipeline_id: int, job_id: Any) -> dict[str, Any] | None:
        try:
            return self.hook.get_pipeline_run(pipeline_id, job_id)
        except ApiError as err:
            if err.status != 404:
                raise
            self.log.warning("The run %s an earlier try started is gone (%s); starting a new one.",
                             job_id, err)
            return None

    def execute(self, context: Context) -> dict[str, Any]:
        pipeline_id = _int_id("pipeline_id", self.pipeline_id)
        run = self._start_or_adopt(context, pipeline_id)
        job_id = _job_id_of(run, f"pipeline {pipeline_id}", int)
        ref = {"pipeline_id": pipeline_id, "job_id": job_id, "include_matches": self.include_matches}
        if self.wait_for_completion:
            self.remember_job(context, self.STATE_KEY, ref)
        push_xcom(context, "job_id", job_id)
        run_url = self.hook.fusion_url(f"entity_matching/pipelines/{pipeline_id}/runs/{job_id}")
        push_xcom(context, "run_url", run_url)
        if not self.wait_for_completion:
            return summarize_pipeline_run(run, pipeline_id, self.include_matches)
        snap = self.wait_or_defer(
            kind=ENTITY_MATCHING_RUN, hook=self.hook, ref=ref, trigger_class=self._trigger_class(),
            conn_id=self.cognite_conn_id, deadline=self.compute_deadline(),
        )
        return self._finish(context, ref, snap)

    @staticmethod
    def _trigger_class() -> Any:
        from airflow_provider_pipelines.triggers.cognite import CogniteEntityMatchingPipelineRunTrigger

        return CogniteEntityMatchingPipelineRunTrigger

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        snap = self.snapshot_from_event(event, ENTITY_MATCHING_RUN)
        return self._finish(context, dict((event or {}).get("ref") or {}), snap)

    def _finish(self, context: Context, ref: dict[str, Any], snap: JobSnapshot) -> dict[str, Any]:
        # the run is over and handled: a later clear of this task starts a new run
        self.forget_job(context, self.STATE_KEY)
        if snap.outcome is Outcome.FAILED:
            raise JobFailedError(
                f"Entity matching pipeline {ref.get('pipeline_id')} run {ref.get('job_id')} "
                f"ended {snap.state}: {snap.message}"
            )
        result = snap.result
        self.log.info("Entity matching run %s completed: %s matches, %s suggested rules, %s generated rules.",
                      ref.get("job_id"), result.get("matches_count"), result.get("suggestedRules_count"),
                      result.get("generatedRules_count"))
        return snap.result


class CogniteAdvancedJoinQualityOperator(JobOperatorMixin, BaseOperator):
    """Estimate the quality of a CDF advanced join and gate the DAG on it.

    Starts ``POST /advancedjoins/estimatequality``, pushes ``job_id`` to XCom, waits (worker or
    deferred) and returns the job id and the three percentages. Fails, naming every metric under
    its minimum with both numbers, when the gate is not met; a failed job fails the task with
    CDF's message. Estimating quality changes nothing in CDF, so a retry may safely start a new
    estimate; on Airflow 3.3+ a retry after a timeout or a lost worker reattaches to the earlier
    try's job instead (there is no API to list estimate jobs, so older releases start a new one).
    CDF has no API to cancel an estimate.

    :param advanced_join_external_id: the join's external id (<= 255 characters, templated).
    :param matcher: a Raw matcher ``{"type": "raw", "dbName", "tableName", "fromColumnKey",
        "toColumnKey"}`` (templated).
    :param min_quality_score_percent: minimum ``qualityScorePercent`` (0..100, templated).
    :param min_confidence_percent: minimum ``confidencePercent`` (0..100, templated).
    :param min_contextualization_score_percent: minimum ``contextualizationScorePercent``.
    :param cognite_conn_id: connection id (conn type ``cognite``).
    :param wait_for_completion: wait for the estimate (else return its job id and skip the gate).
    :param deferrable: wait in the triggerer instead of the worker.
    :param poll_interval: seconds between status checks (grows up to ``max_poll_interval``).
    :param timeout: give up waiting after this many seconds.
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
        if not wait_for_completion and any(getattr(self, arg) not in (None, "") for arg in THRESHOLDS):
            raise ValueError("Minimum scores need wait_for_completion=True: the gate is judged when the "
                             "estimate completes. To gate later, use CogniteAdvancedJoinQualitySensor "
                             "with the same minimums.")

    def _validate(self, *, rendered: bool) -> tuple[str, dict[str, Any], dict[str, float | None]]:
        """Validate at construction (skipping templates) and again after rendering."""
        external_id = self.advanced_join_external_id
        if rendered or not _templated(external_id):
            validate_external_id("advanced_join_external_id", external_id)
        matcher: Any = self.matcher
        if rendered:
            matcher = validate_matcher(matcher)
        elif isinstance(matcher, dict):  # templated values are checked again after rendering
            validate_matcher({k: (("raw" if k == "type" else "templated") if _templated(v) else v)
                              for k, v in matcher.items()})
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
        job = self._remembered_job(context, external_id, matcher)
        if job is None:
            job = self.hook.start_estimate_quality(external_id, matcher)
            self.log.info("Started estimate-quality job %s for advanced join %r.", job.get("jobId"),
                          external_id)
        ref = {"job_id": _job_id_of(job, f"advanced join {external_id!r}", str)}
        if self.wait_for_completion:
            self.remember_job(context, self.STATE_KEY,
                              {**ref, "advanced_join_external_id": external_id, "matcher": matcher})
        push_xcom(context, "job_id", ref["job_id"])
        if not self.wait_for_completion:
            return summarize_estimate(job)
        snap = self.wait_or_defer(
            kind=ESTIMATE_QUALITY, hook=self.hook, ref=ref, trigger_class=self._trigger_class(),
            conn_id=self.cognite_conn_id, deadline=self.compute_deadline(),
        )
        return self._finish(context, ref, snap, thresholds)

    def _remembered_job(
        self, context: Context, external_id: str, matcher: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Airflow 3.3+: the estimate an earlier try started for the same join and matcher.

        Reattached while Queued or Running, its result reused once Completed; a Failed (or
        vanished) job is replaced by a new estimate. There is no API to list estimate-quality
        jobs, so without the task state store a retry starts a new estimate (which changes
        nothing in CDF).
        """
        remembered = self.remembered_job(context, self.STATE_KEY)
        if not (remembered and remembered.get("job_id")
                and remembered.get("advanced_join_external_id") == external_id
                and remembered.get("matcher", matcher) == matcher):
            return None
        try:
            job = self.hook.get_estimate_quality(str(remembered["job_id"]))
        except ApiError as err:
            if err.status != 404:
                raise
            self.log.warning("The estimate-quality job %s an earlier try started is gone (%s).",
                             remembered["job_id"], err)
            return None
        if CDF_JOB_STATES.get(str(job.get("status"))) is Outcome.FAILED:
            return None
        self.log.info("Reattaching to estimate-quality job %s from an earlier try (status %s).",
                      job.get("jobId"), job.get("status"))
        return job

    @staticmethod
    def _trigger_class() -> Any:
        from airflow_provider_pipelines.triggers.cognite import CogniteAdvancedJoinQualityTrigger

        return CogniteAdvancedJoinQualityTrigger

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        snap = self.snapshot_from_event(event, ESTIMATE_QUALITY)
        _, _, thresholds = self._validate(rendered=True)
        return self._finish(context, dict((event or {}).get("ref") or {}), snap, thresholds)

    def _finish(
        self, context: Context, ref: dict[str, Any], snap: JobSnapshot, thresholds: dict[str, float | None]
    ) -> dict[str, Any]:
        # the estimate is over and judged: a retry or a later clear starts a new estimate
        self.forget_job(context, self.STATE_KEY)
        join = self.advanced_join_external_id
        if snap.outcome is Outcome.FAILED:
            raise JobFailedError(f"Estimate-quality job {ref.get('job_id')} for advanced join {join!r} "
                                 f"ended {snap.state}: {snap.message}")
        scores = ", ".join(f"{m}={snap.result.get(m)}" for m in QUALITY_METRICS)
        self.log.info("Advanced join %r quality: %s.", join, scores)
        failures = quality_gate_failures(snap.result, thresholds)
        if failures:
            raise JobFailedError(f"Quality gate not met for advanced join {join!r} "
                                 f"(job {ref.get('job_id')}): " + "; ".join(failures))
        return snap.result


class CogniteExtractionPipelineRunOperator(JobOperatorMixin, BaseOperator):
    """Report a run of a CDF extraction pipeline: ``success``, ``failure`` or ``seen`` (a heartbeat).

    Sends exactly one ``POST /extpipes/runs`` item and returns the created run (``id``,
    ``externalId``, ``status``, ``message``, ``createdTime``). Every argument is checked when
    the DAG is parsed (templated ones again after rendering, before any request).

    A report is never lost and never doubled. The run always carries an explicit
    ``createdTime`` (``created_time``, else the time of the report), so when CDF's answer is lost
    (read timeout, dropped connection, 502/503/504) the hook can look the run up with
    ``POST /extpipes/runs/list`` before sending it again (at most
    :data:`~airflow_provider_pipelines.hooks.cognite.REPORT_MAX_SENDS` sends). On Airflow 3.3+
    the task state store also remembers a report whose outcome stayed unknown, so a task retry
    checks for it (same createdTime) before reporting again.

    :param external_id: the extraction pipeline's external id (templated).
    :param status: ``success``, ``failure`` or ``seen`` (templated; lower case).
    :param message: free text (templated); longer than 1,000 characters it is cut and ends in
        ``" …[truncated]"``. Secrets known to Airflow's masker are replaced by ``***``.
    :param created_time: when the run happened: epoch milliseconds, a timezone-aware datetime,
        an ISO-8601 string or a template such as ``"{{ data_interval_end }}"`` (so backfill runs
        report their own dates). Default: the time of the report.
    :param cognite_conn_id: connection id (conn type ``cognite``).
    """

    template_fields: Sequence[str] = ("external_id", "status", "message", "created_time", "cognite_conn_id")
    ui_color = "#d5e8f7"
    STATE_KEY = "cognite_extpipe_run_report"

    def __init__(
        self,
        *,
        external_id: str,
        status: str,
        message: str | None = None,
        created_time: int | datetime | str | None = None,
        cognite_conn_id: str = CogniteHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not _templated(external_id):
            validate_extpipe_external_id(external_id)
        if not _templated(status):
            validate_extpipe_status(status)
        if message is not None and not isinstance(message, str) and not _templated(message):
            raise ValueError(f"message must be a string (or a template), got {type(message).__name__}.")
        if created_time is not None and not _templated(created_time):
            to_epoch_ms(created_time, "created_time")
        self.external_id = external_id
        self.status = status
        self.message = message
        self.created_time = created_time
        self.cognite_conn_id = cognite_conn_id

    @cached_property
    def hook(self) -> CogniteHook:
        return CogniteHook(self.cognite_conn_id)

    def build_item(self) -> dict[str, Any]:
        """The run to report, from the rendered arguments (raises ``ValueError`` on bad values)."""
        message = self.message
        if message is not None and not isinstance(message, str):
            message = str(message)  # native rendering may produce a number or a list
        created = self.created_time
        if created is None:
            created = datetime.now(timezone.utc)
        return CogniteHook.extpipe_run_item(
            self.external_id, self.status, redact_secrets(message) if message else None, created
        )

    def execute(self, context: Context) -> dict[str, Any]:
        item = self.build_item()  # validation after rendering, before any request
        check_first = False
        pending = self.remembered_job(context, self.STATE_KEY)
        if pending and all(pending.get(k) == item.get(k) for k in ("externalId", "status", "message")):
            if self.created_time is None or pending.get("createdTime") == item.get("createdTime"):
                # an earlier try sent this report and never learnt whether CDF recorded it
                self.log.info("An earlier try sent this report (createdTime %s) without a reliable answer; "
                              "checking for it before reporting.", pending.get("createdTime"))
                item["createdTime"] = pending["createdTime"]
                check_first = True
        self.remember_job(context, self.STATE_KEY, item)
        try:
            run = self.hook.report_extpipe_run(item, check_first=check_first)
        except ApiError as err:
            if not err.ambiguous:  # CDF refused it: nothing was recorded, nothing to check on a retry
                self.forget_job(context, self.STATE_KEY)
            raise
        self.forget_job(context, self.STATE_KEY)
        return run
