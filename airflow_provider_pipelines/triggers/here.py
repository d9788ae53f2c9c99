"""Deferrable triggers for HERE pipeline operations and jobs (thin: the job kinds do the reading).

``hook_params`` carries the task try's ``correlation_id`` (never a secret), so the triggerer's
requests are correlated with the worker's in HERE's logs.
"""

from __future__ import annotations

from airflow_provider_pipelines.hooks.here import HerePipelineHook
from airflow_provider_pipelines.jobs.here import JOB, OPERATION
from airflow_provider_pipelines.triggers.base import JobTrigger


class HerePipelineOperationTrigger(JobTrigger):
    """Wait for a version operation; ``ref = {"pipeline_id", "version_id", "operation_id"}``.

    With ``cancel_on_kill`` a user kill cancels (or deactivates) the version the run made active.
    """

    kind = OPERATION
    hook_class = HerePipelineHook


class HerePipelineJobTrigger(JobTrigger):
    """Wait for the job of a run, or a given/latest job of a version (see ``jobs.here.job_of_run``).

    With ``cancel_on_kill`` a user kill cancels the version's run (``operations/cancel``).
    """

    kind = JOB
    hook_class = HerePipelineHook
