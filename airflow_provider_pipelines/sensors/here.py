"""Sensor for HERE pipeline jobs (poke and deferrable)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_pipelines.hooks.here import HerePipelineHook, here_id
from airflow_provider_pipelines.jobs.base import JobSnapshot
from airflow_provider_pipelines.jobs.here import JOB
from airflow_provider_pipelines.links import HereLoggingLink, HerePipelineUILink
from airflow_provider_pipelines.operators._base import push_xcom
from airflow_provider_pipelines.operators.here import _templated, correlation_id_for
from airflow_provider_pipelines.sensors._base import JobSensor

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_pipelines.triggers.base import JobTrigger


def _id_or_template(name: str, value: Any) -> str:
    return value if _templated(value) else here_id(name, value)


class HerePipelineJobSensor(JobSensor):
    """Wait for a HERE pipeline job to finish: the given job, or the version's latest job.

    Succeeds when the job is ``completed`` (returns the job summary, pushes ``logging_url`` and
    ``pipeline_ui_url``); ``failed``/``canceled`` fail it, pointing at the job's logs. Without
    ``job_id`` the version's latest job is read at every check (so a job started later is
    followed once it shows up); a version with no job that is not active fails the sensor. The
    sensor never cancels anything.

    :param pipeline_id: the pipeline's UUID (templated).
    :param pipeline_version_id: the version's UUID (templated).
    :param job_id: the job's UUID, e.g. ``"{{ ti.xcom_pull('run', key='job_id') }}"`` (templated);
        ``None`` for the version's latest job.
    :param here_conn_id: connection id (conn type ``here_platform``).
    """

    template_fields: Sequence[str] = ("pipeline_id", "pipeline_version_id", "job_id", "here_conn_id")
    operator_extra_links = (HerePipelineUILink(), HereLoggingLink())
    kind = JOB
    conn_id_attr = "here_conn_id"
    ui_color = "#c9f2ef"

    def __init__(
        self,
        *,
        pipeline_id: str,
        pipeline_version_id: str,
        job_id: str | None = None,
        here_conn_id: str = HerePipelineHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline_id = _id_or_template("pipeline_id", pipeline_id)
        self.pipeline_version_id = _id_or_template("pipeline_version_id", pipeline_version_id)
        self.job_id = None if job_id in (None, "") else _id_or_template("job_id", job_id)
        self.here_conn_id = here_conn_id
        self._correlation_id: str | None = None
        self._hook: HerePipelineHook | None = None

    def execute(self, context: Context) -> Any:
        self._correlation_id = correlation_id_for(context)
        return super().execute(context)

    def make_hook(self) -> HerePipelineHook:
        if self._hook is None:
            self._hook = HerePipelineHook(self.here_conn_id, correlation_id=self._correlation_id)
        return self._hook

    def job_ref(self, context: Context) -> dict[str, Any]:
        return {
            "pipeline_id": here_id("pipeline_id", self.pipeline_id),
            "version_id": here_id("pipeline_version_id", self.pipeline_version_id),
            "job_id": None if self.job_id in (None, "") else here_id("job_id", self.job_id),
        }

    def trigger_class(self) -> type[JobTrigger]:
        from airflow_provider_pipelines.triggers.here import HerePipelineJobTrigger

        return HerePipelineJobTrigger

    def trigger_hook_params(self, context: Context) -> dict[str, Any] | None:
        return {"correlation_id": self._correlation_id or correlation_id_for(context)}

    def on_terminal(self, context: Context, ref: dict[str, Any], snap: JobSnapshot) -> Any:
        for key in ("pipeline_ui_url", "logging_url"):
            if snap.result.get(key):
                push_xcom(context, key, snap.result[key])
        return super().on_terminal(context, ref, snap)
