"""Sensors for Cognite Data Fusion jobs (poke and deferrable)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_pipelines._compat import AirflowFailException
from airflow_provider_pipelines.hooks.cognite import (
    CogniteHook,
    _int_id,
    to_epoch_ms,
    validate_extpipe_external_id,
)
from airflow_provider_pipelines.jobs.base import JobFailedError, JobSnapshot, Outcome
from airflow_provider_pipelines.jobs.cognite import (
    ENTITY_MATCHING_RUN,
    ESTIMATE_QUALITY,
    EXTRACTION_REPORT,
    extraction_report_ref,
    ms_to_iso,
)
from airflow_provider_pipelines.operators.cognite import (
    THRESHOLDS,
    _templated,
    quality_gate_failures,
    validate_external_id,
    validate_pipeline_id,
    validate_threshold,
)
from airflow_provider_pipelines.sensors._base import JobSensor

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_pipelines.triggers.base import JobTrigger


class _CogniteSensor(JobSensor):
    conn_id_attr = "cognite_conn_id"
    cognite_conn_id: str

    @cached_property
    def hook(self) -> CogniteHook:
        return CogniteHook(self.cognite_conn_id)

    def make_hook(self) -> CogniteHook:
        return self.hook


class CogniteEntityMatchingPipelineRunSensor(_CogniteSensor):
    """Wait for a given entity matching pipeline run (job id) to finish; returns its summary.

    :param pipeline_id: the pipeline's id (templated).
    :param job_id: the run's job id, e.g. ``"{{ ti.xcom_pull('run', key='job_id') }}"`` (templated).
    :param include_matches: add the matches to the returned summary.
    """

    template_fields: Sequence[str] = ("pipeline_id", "job_id", "cognite_conn_id")
    kind = ENTITY_MATCHING_RUN

    def __init__(
        self,
        *,
        pipeline_id: int | str,
        job_id: int | str,
        cognite_conn_id: str = CogniteHook.default_conn_name,
        include_matches: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline_id = validate_pipeline_id(pipeline_id)
        self.job_id = job_id if _templated(job_id) else _int_id("job_id", job_id)
        self.cognite_conn_id = cognite_conn_id
        self.include_matches = include_matches

    def job_ref(self, context: Context) -> dict[str, Any]:
        return {"pipeline_id": _int_id("pipeline_id", self.pipeline_id),
                "job_id": _int_id("job_id", self.job_id), "include_matches": self.include_matches}

    def trigger_class(self) -> type[JobTrigger]:
        from airflow_provider_pipelines.triggers.cognite import CogniteEntityMatchingPipelineRunTrigger

        return CogniteEntityMatchingPipelineRunTrigger


class CogniteAdvancedJoinQualitySensor(_CogniteSensor):
    """Wait for an estimate-quality job; optionally gate on minimum scores like the operator.

    :param job_id: the estimate-quality job id (a UUID string, templated).
    """

    template_fields: Sequence[str] = ("job_id", "cognite_conn_id", *THRESHOLDS)
    kind = ESTIMATE_QUALITY

    def __init__(
        self,
        *,
        job_id: str,
        cognite_conn_id: str = CogniteHook.default_conn_name,
        min_quality_score_percent: float | str | None = None,
        min_confidence_percent: float | str | None = None,
        min_contextualization_score_percent: float | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id if _templated(job_id) else validate_external_id("job_id", job_id)
        self.cognite_conn_id = cognite_conn_id
        self.min_quality_score_percent = min_quality_score_percent
        self.min_confidence_percent = min_confidence_percent
        self.min_contextualization_score_percent = min_contextualization_score_percent
        self._thresholds(rendered=False)

    def _thresholds(self, *, rendered: bool) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for arg in THRESHOLDS:
            value = getattr(self, arg)
            out[arg] = None if (not rendered and _templated(value)) else validate_threshold(arg, value)
        return out

    def job_ref(self, context: Context) -> dict[str, Any]:
        return {"job_id": validate_external_id("job_id", self.job_id)}

    def trigger_class(self) -> type[JobTrigger]:
        from airflow_provider_pipelines.triggers.cognite import CogniteAdvancedJoinQualityTrigger

        return CogniteAdvancedJoinQualityTrigger

    def on_terminal(self, context: Context, ref: dict[str, Any], snap: JobSnapshot) -> Any:
        result = super().on_terminal(context, ref, snap)
        failures = quality_gate_failures(result, self._thresholds(rendered=True))
        if failures:
            raise JobFailedError(f"Quality gate not met for estimate-quality job {ref.get('job_id')}: "
                                 + "; ".join(failures))
        return result


class ExtractionRunFailedError(JobFailedError, AirflowFailException):
    """The pipeline reported a failure before the awaited status.

    Also an ``AirflowFailException``: a retry of the sensor would find the same report again,
    so the task fails without retrying (``soft_fail=True`` turns it into a skip).
    """


def default_created_after(context: Context) -> Any:
    """Where an extraction-run wait starts when ``created_after`` is not given.

    The DAG run's data interval start, so a backfill run counts the reports of its own
    interval; else its logical date; else (a run without logical date, Airflow 3) the time the
    run was due (``dag_run.run_after``) or started. Never the beginning of time.
    """
    for key in ("data_interval_start", "logical_date"):
        value = context.get(key)  # type: ignore[call-overload]
        if value is not None:
            return value
    dag_run = context.get("dag_run")  # type: ignore[call-overload]
    for attr in ("run_after", "start_date"):
        value = getattr(dag_run, attr, None)
        if value is not None:
            return value
    raise ValueError("This DAG run has no data interval, logical date or run time to wait from: set "
                     "created_after (epoch ms, a datetime or an ISO-8601 string).")


class CogniteExtractionPipelineRunSensor(_CogniteSensor):
    """Wait until an extraction pipeline reports a run with one of ``statuses`` after a time.

    Each check lists the pipeline's runs with one of ``statuses`` or ``failure_statuses``
    created at or after ``created_after`` (following every page). The oldest of them decides:
    one of ``statuses`` -> done, returning that run (``id``, ``externalId``, ``status``,
    ``message``, ``createdTime``); one of ``failure_statuses`` -> the task fails at once with the
    run's message and is not retried (see :class:`ExtractionRunFailedError`). Poke and
    reschedule modes read once per poke; ``deferrable=True`` waits in the triggerer with the
    same job-watching mechanism.

    By default only runs created since the start of the DAG run's data interval count, so a
    backfill run waits for (and finds) the reports of its own interval.

    :param external_id: the extraction pipeline's external id (templated).
    :param statuses: statuses that satisfy the sensor (default ``("success",)``).
    :param created_after: epoch ms, a timezone-aware datetime or an ISO-8601 string, inclusive
        (templated); default :func:`default_created_after` (data interval start).
    :param failure_statuses: statuses that fail the sensor at once (default ``("failure",)``;
        ``()`` to ignore failures and keep waiting).
    :param cognite_conn_id: connection id (conn type ``cognite``).
    """

    template_fields: Sequence[str] = ("external_id", "created_after", "cognite_conn_id")
    kind = EXTRACTION_REPORT

    def __init__(
        self,
        *,
        external_id: str,
        statuses: Sequence[str] = ("success",),
        created_after: int | datetime | str | None = None,
        failure_statuses: Sequence[str] = ("failure",),
        cognite_conn_id: str = CogniteHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not _templated(external_id):
            validate_extpipe_external_id(external_id)
        # statuses are not templated: check them (and their overlap) now, with a stand-in time
        ref = extraction_report_ref("-", statuses, failure_statuses, 0)
        if created_after is not None and not _templated(created_after):
            to_epoch_ms(created_after, "created_after")
        self.external_id = external_id
        self.statuses = ref["statuses"]
        self.failure_statuses = ref["failure_statuses"]
        self.created_after = created_after
        self.cognite_conn_id = cognite_conn_id

    def job_ref(self, context: Context) -> dict[str, Any]:
        created_after = self.created_after
        if created_after is None:
            created_after = default_created_after(context)
        return extraction_report_ref(self.external_id, self.statuses, self.failure_statuses, created_after)

    def trigger_class(self) -> type[JobTrigger]:
        from airflow_provider_pipelines.triggers.cognite import CogniteExtractionPipelineRunTrigger

        return CogniteExtractionPipelineRunTrigger

    def on_terminal(self, context: Context, ref: dict[str, Any], snap: JobSnapshot) -> Any:
        run = dict(snap.result.get("run") or {})
        if snap.outcome is Outcome.FAILED:
            awaited = " or ".join(ref.get("statuses", []))
            raise ExtractionRunFailedError(
                f"Extraction pipeline {ref.get('external_id')!r} reported {snap.state!r} "
                f"(run {run.get('id')}, created {ms_to_iso(run.get('createdTime'))}) before any {awaited} "
                f"run: {snap.message or 'the run has no message'}"
            )
        self.log.info("Extraction pipeline %r reported %r (run %s, created %s).", ref.get("external_id"),
                      snap.state, run.get("id"), ms_to_iso(run.get("createdTime")))
        return run
