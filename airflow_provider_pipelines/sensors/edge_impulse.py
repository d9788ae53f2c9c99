"""Sensor for Edge Impulse organizational pipeline runs (poke and deferrable)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_pipelines.hooks.edge_impulse import EdgeImpulseHook, validate_int_id
from airflow_provider_pipelines.jobs.edge_impulse import EI_PIPELINE_RUN
from airflow_provider_pipelines.operators.edge_impulse import _id_or_template, _require_bool
from airflow_provider_pipelines.sensors._base import JobSensor

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_pipelines.triggers.base import JobTrigger


class EdgeImpulsePipelineRunSensor(JobSensor):
    """Wait for a given run of an Edge Impulse organizational pipeline; returns its summary.

    The run is read from the pipeline's ``currentRun`` / ``lastRun`` with the same **inferred**
    rules as :class:`~airflow_provider_pipelines.operators.edge_impulse.EdgeImpulseRunPipelineOperator`.
    A failed run fails the sensor with the reasons; a run that is neither the current nor the last
    run of the pipeline (e.g. replaced by a later run) fails it too, since its outcome cannot be
    read. The sensor never stops a run.

    :param organization_id: the organization's id (integer, templated).
    :param pipeline_id: the pipeline's id (integer, templated).
    :param run_id: the run's id, e.g. ``"{{ ti.xcom_pull('run', key='run_id') }}"`` (templated).
    :param edge_impulse_conn_id: connection id (conn type ``edge_impulse``).
    :param fail_on_import_errors: count import errors as a failed run (``False``: warn only).
    """

    template_fields: Sequence[str] = ("organization_id", "pipeline_id", "run_id", "edge_impulse_conn_id")
    kind = EI_PIPELINE_RUN
    conn_id_attr = "edge_impulse_conn_id"
    ui_color = "#e0f0d9"

    def __init__(
        self,
        *,
        organization_id: int | str,
        pipeline_id: int | str,
        run_id: int | str,
        edge_impulse_conn_id: str = EdgeImpulseHook.default_conn_name,
        fail_on_import_errors: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.organization_id = _id_or_template("organization_id", organization_id)
        self.pipeline_id = _id_or_template("pipeline_id", pipeline_id)
        self.run_id = _id_or_template("run_id", run_id)
        self.edge_impulse_conn_id = edge_impulse_conn_id
        self.fail_on_import_errors = _require_bool("fail_on_import_errors", fail_on_import_errors)

    @cached_property
    def hook(self) -> EdgeImpulseHook:
        return EdgeImpulseHook(self.edge_impulse_conn_id)

    def make_hook(self) -> EdgeImpulseHook:
        return self.hook

    def job_ref(self, context: Context) -> dict[str, Any]:
        return {
            "organization_id": validate_int_id("organization_id", self.organization_id),
            "pipeline_id": validate_int_id("pipeline_id", self.pipeline_id),
            "run_id": validate_int_id("run_id", self.run_id),
            "fail_on_import_errors": self.fail_on_import_errors,
            "started_at": None,
        }

    def trigger_class(self) -> type[JobTrigger]:
        from airflow_provider_pipelines.triggers.edge_impulse import EdgeImpulsePipelineRunTrigger

        return EdgeImpulsePipelineRunTrigger


__all__ = ["EdgeImpulsePipelineRunSensor"]
