"""Deferrable trigger for Edge Impulse organizational pipeline runs (thin: the job kind reads)."""

from __future__ import annotations

from airflow_provider_pipelines.hooks.edge_impulse import EdgeImpulseHook
from airflow_provider_pipelines.jobs.edge_impulse import EI_PIPELINE_RUN
from airflow_provider_pipelines.triggers.base import JobTrigger


class EdgeImpulsePipelineRunTrigger(JobTrigger):
    """Wait for a pipeline run; ``ref = {"organization_id", "pipeline_id", "run_id",
    "fail_on_import_errors", "started_at"}``.

    Polls ``GET /api/organizations/{organizationId}/pipelines/{pipelineId}`` and reads the run from
    ``currentRun`` / ``lastRun`` (:func:`~airflow_provider_pipelines.jobs.edge_impulse.inferred_run_outcome`).
    On a user kill (Airflow 3.3+) with ``cancel_on_kill=True`` it stops the pipeline, but only
    while the pipeline's current run is still ``run_id`` (the stop endpoint takes no run id).
    """

    kind = EI_PIPELINE_RUN
    hook_class = EdgeImpulseHook
