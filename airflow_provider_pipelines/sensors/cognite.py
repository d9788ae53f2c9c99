"""Sensors for Cognite Data Fusion jobs (poke and deferrable)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_pipelines.hooks.cognite import EXTPIPE_RUN_STATUSES, CogniteHook, _int_id
from airflow_provider_pipelines.jobs.base import JobFailedError, JobSnapshot, Outcome
from airflow_provider_pipelines.jobs.cognite import ENTITY_MATCHING_RUN, ESTIMATE_QUALITY, EXTRACTION_REPORT
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
        return {"pipeline_id": _int_id("pipeline_id", self.pipeline_id), "job_id": _int_id("job_id", self.job_id),
                "include_matches": self.include_matches}

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
        self.job_id = validate_external_id("job_id", job_id)
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


def to_epoch_ms(value: Any, name: str = "created_time") -> int:
    """Epoch milliseconds from an int/float (ms), a datetime, or an ISO-8601 string."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be epoch milliseconds, a datetime or an ISO-8601 string, got {value!r}.")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value!r}.")
        return int(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware (e.g. UTC), got naive {value!r}.")
        return int(value.timestamp() * 1000)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{name} {value!r} is neither epoch milliseconds nor an ISO-8601 date-time.") from None
        return to_epoch_ms(parsed, name)
    raise ValueError(f"{name} must be epoch milliseconds, a datetime or an ISO-8601 string, got {value!r}.")


def _validate_statuses(name: str, statuses: Any) -> list[str]:
    if isinstance(statuses, str):
        statuses = [statuses]
    values = list(statuses or [])
    bad = [s for s in values if s not in EXTPIPE_RUN_STATUSES]
    if bad:
        raise ValueError(f"{name} has unknown status(es) {bad}; use {', '.join(EXTPIPE_RUN_STATUSES)}.")
    return values


class CogniteExtractionPipelineRunSensor(_CogniteSensor):
    """Wait until an extraction pipeline reports a run with one of ``statuses`` after a time.

    Fails fast when a run in ``failure_statuses`` arrives first (with its message). Returns the
    matching run. By default it only counts runs created since the start of the DAG run's data
    interval, so a backfill run waits for (and finds) reports of its own interval.

    :param external_id: the extraction pipeline's external id (templated).
    :param statuses: statuses that satisfy the sensor (default ``("success",)``).
    :param created_after: epoch ms, datetime or ISO string (templated); default: data interval start.
    :param failure_statuses: statuses that fail the sensor at once (default ``("failure",)``).
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
        self.external_id = external_id if _templated(external_id) else validate_external_id("external_id", external_id)
        self.statuses = _validate_statuses("statuses", statuses)
        if not self.statuses:
            raise ValueError("statuses must name at least one status to wait for.")
        self.failure_statuses = _validate_statuses("failure_statuses", failure_statuses)
        overlap = set(self.statuses) & set(self.failure_statuses)
        if overlap:
            raise ValueError(f"statuses and failure_statuses overlap on {sorted(overlap)}.")
        if created_after is not None and not _templated(created_after):
            to_epoch_ms(created_after, "created_after")
        self.created_after = created_after
        self.cognite_conn_id = cognite_conn_id

    def job_ref(self, context: Context) -> dict[str, Any]:
        created_after = self.created_after
        if created_after is None:
            created_after = context.get("data_interval_start") or context.get("logical_date")  # type: ignore[call-overload]
        return {
            "external_id": validate_external_id("external_id", self.external_id),
            "statuses": list(self.statuses),
            "failure_statuses": list(self.failure_statuses),
            "created_after": to_epoch_ms(created_after, "created_after") if created_after is not None else 0,
        }

    def trigger_class(self) -> type[JobTrigger]:
        from airflow_provider_pipelines.triggers.cognite import CogniteExtractionPipelineRunTrigger

        return CogniteExtractionPipelineRunTrigger

    def on_terminal(self, context: Context, ref: dict[str, Any], snap: JobSnapshot) -> Any:
        if snap.outcome is Outcome.FAILED:
            raise JobFailedError(f"Extraction pipeline {ref.get('external_id')!r} reported {snap.state!r} "
                                 f"first: {snap.message}")
        return snap.result.get("run", snap.result)
