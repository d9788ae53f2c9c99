"""Deferrable triggers for Cognite jobs (thin: the job kind does the reading)."""

from __future__ import annotations

from airflow_provider_pipelines.hooks.cognite import CogniteHook
from airflow_provider_pipelines.jobs.cognite import ENTITY_MATCHING_RUN, ESTIMATE_QUALITY, EXTRACTION_REPORT
from airflow_provider_pipelines.triggers.base import JobTrigger


class CogniteEntityMatchingPipelineRunTrigger(JobTrigger):
    """Wait for an entity matching pipeline run; ``ref = {"pipeline_id", "job_id", "include_matches"}``.

    CDF has no API to cancel a pipeline run, so ``on_kill`` leaves it running.
    """

    kind = ENTITY_MATCHING_RUN
    hook_class = CogniteHook


class CogniteAdvancedJoinQualityTrigger(JobTrigger):
    """Wait for an estimate-quality job; ``ref = {"job_id"}`` (nothing to cancel in CDF)."""

    kind = ESTIMATE_QUALITY
    hook_class = CogniteHook


class CogniteExtractionPipelineRunTrigger(JobTrigger):
    """Wait for an extraction pipeline to report a run with given statuses after a time."""

    kind = EXTRACTION_REPORT
    hook_class = CogniteHook
