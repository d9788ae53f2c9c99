"""Operator for Edge Impulse organizational pipelines: run one, wait for it, gate the DAG on it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_pipelines._compat import AirflowException, BaseOperator
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.edge_impulse import EdgeImpulseHook, validate_int_id
from airflow_provider_pipelines.jobs.base import JobFailedError, JobSnapshot, JobTimeoutError, Outcome
from airflow_provider_pipelines.jobs.edge_impulse import EI_PIPELINE_RUN, current_run_id, summarize_run
from airflow_provider_pipelines.links import EdgeImpulsePipelineLink
from airflow_provider_pipelines.operators._base import (
    DEFAULT_TIMEOUT,
    JobOperatorMixin,
    default_deferrable,
    push_xcom,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: What to do when the pipeline already has a run in progress when the task starts.
IF_RUNNING_MODES = ("wait", "fail", "start_new")
#: The sentence of the job kind's timeout message replaced when ``cancel_on_timeout`` stopped the run.
_LEFT_RUNNING = " The remote job was left running."


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _id_or_template(name: str, value: Any) -> int | str:
    """An int id, or a template that is checked again after rendering (before any request)."""
    return value if _templated(value) else validate_int_id(name, value)


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{name} must be True or False (or a template rendering 'true'/'false'), got {value!r}.")


def _require_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return value


class EdgeImpulseRunPipelineOperator(JobOperatorMixin, BaseOperator):
    """Run an Edge Impulse organizational pipeline and wait for the run to finish.

    Pushes ``run_id`` and ``pipeline_url`` (for the *Edge Impulse pipeline* extra link) to XCom
    before waiting, then waits in the worker or, with ``deferrable=True``, in the triggerer. Edge
    Impulse has no endpoint for one run: the run is read from the pipeline's ``currentRun`` /
    ``lastRun`` and its outcome decided by the **inferred** rules of
    :func:`~airflow_provider_pipelines.jobs.edge_impulse.inferred_run_outcome` (a failed step, a
    failed start, or import errors fail the task). Returns a summary: run id, created, finished,
    each step's name and statuses, item counts before and after, failures and warnings.

    Reattach: when the pipeline already has a run in progress as the task starts, ``if_running``
    decides: ``"wait"`` (default) adopts that run instead of starting a second one, ``"fail"``
    fails the task before starting anything, ``"start_new"`` asks Edge Impulse for a new run
    anyway. On Airflow 3.3+ the task state store remembers the run a try started, so a retry
    always reattaches to it while it is active (in every mode), and does not start another.

    Kill and timeout: ``on_kill`` (worker) and the trigger's ``on_kill`` (Airflow 3.3+) stop the
    pipeline only while its current run is the one this task started (adopted runs are never
    stopped). A timeout leaves the run running unless ``cancel_on_timeout=True``.

    :param organization_id: the organization's id (integer, templated).
    :param pipeline_id: the pipeline's id (integer, templated).
    :param ignore_last_successful_run: start with ``ignoreLastSuccessfulRun`` so the pipeline
        re-processes everything instead of continuing from its last successful run (templated).
    :param edge_impulse_conn_id: connection id (conn type ``edge_impulse``).
    :param wait_for_completion: wait for the run to finish (else return right after starting it).
    :param deferrable: wait in the triggerer instead of the worker.
    :param poll_interval: seconds between status reads (grows up to ``max_poll_interval``).
    :param timeout: stop waiting after this many seconds (the run is left running by default).
    :param if_running: ``"wait"``, ``"fail"`` or ``"start_new"`` (see above).
    :param fail_on_import_errors: count import errors (``itemCountImportIntoProjectFailed > 0`` or
        a step's ``succeededCount < finishedCount``) as a failed run; ``False`` only warns.
    :param cancel_on_kill: stop the run this task started when the task is killed.
    :param cancel_on_timeout: stop the run this task started when waiting times out.
    """

    template_fields: Sequence[str] = (
        "organization_id", "pipeline_id", "ignore_last_successful_run", "edge_impulse_conn_id",
    )
    operator_extra_links = (EdgeImpulsePipelineLink(),)
    ui_color = "#e0f0d9"
    STATE_KEY = "edge_impulse_pipeline_run"

    def __init__(
        self,
        *,
        organization_id: int | str,
        pipeline_id: int | str,
        ignore_last_successful_run: bool | str = False,
        edge_impulse_conn_id: str = EdgeImpulseHook.default_conn_name,
        wait_for_completion: bool = True,
        deferrable: bool | None = None,
        poll_interval: float | timedelta = 30,
        max_poll_interval: float | timedelta | None = None,
        timeout: float | timedelta | None = DEFAULT_TIMEOUT,
        if_running: str = "wait",
        fail_on_import_errors: bool = True,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.organization_id = _id_or_template("organization_id", organization_id)
        self.pipeline_id = _id_or_template("pipeline_id", pipeline_id)
        if not _templated(ignore_last_successful_run):
            _as_bool("ignore_last_successful_run", ignore_last_successful_run)
        self.ignore_last_successful_run = ignore_last_successful_run
        if if_running not in IF_RUNNING_MODES:
            raise ValueError(f"if_running must be one of {', '.join(map(repr, IF_RUNNING_MODES))}, "
                             f"got {if_running!r}.")
        self.if_running = if_running
        self.fail_on_import_errors = _require_bool("fail_on_import_errors", fail_on_import_errors)
        self.cancel_on_kill = _require_bool("cancel_on_kill", cancel_on_kill)
        self.cancel_on_timeout = _require_bool("cancel_on_timeout", cancel_on_timeout)
        self.edge_impulse_conn_id = edge_impulse_conn_id
        if deferrable is not None:
            _require_bool("deferrable", deferrable)
        self._init_wait(
            wait_for_completion=_require_bool("wait_for_completion", wait_for_completion),
            deferrable=default_deferrable() if deferrable is None else deferrable,
            poll_interval=poll_interval, max_poll_interval=max_poll_interval, timeout=timeout,
        )
        #: the run this try is waiting for, and whether this task started it (for on_kill)
        self._active_ref: dict[str, Any] | None = None
        self._started_by_us = False

    @cached_property
    def hook(self) -> EdgeImpulseHook:
        return EdgeImpulseHook(self.edge_impulse_conn_id)

    def _rendered(self) -> tuple[int, int, bool]:
        """The ids and flag after template rendering, validated before any request is sent."""
        return (
            validate_int_id("organization_id", self.organization_id),
            validate_int_id("pipeline_id", self.pipeline_id),
            _as_bool("ignore_last_successful_run", self.ignore_last_successful_run),
        )

    def _ref(self, org: int, pid: int, run_id: int, started_at: float | None) -> dict[str, Any]:
        return {"organization_id": org, "pipeline_id": pid, "run_id": run_id,
                "fail_on_import_errors": self.fail_on_import_errors, "started_at": started_at}

    # ---- start or reattach --------------------------------------------------------------------

    def _remember(self, context: Context, ref: dict[str, Any], started_by_us: bool) -> None:
        self.remember_job(context, self.STATE_KEY, {**ref, "started_by_us": started_by_us})

    def _reattach(
        self, context: Context, org: int, pid: int, pipeline: dict[str, Any]
    ) -> tuple[dict[str, Any], bool] | None:
        """The run an earlier try of this task started or adopted, while it is still worth waiting for."""
        remembered = self.remembered_job(context, self.STATE_KEY)
        if not remembered or remembered.get("organization_id") != org or remembered.get("pipeline_id") != pid:
            return None
        try:
            run_id = validate_int_id("run_id", remembered.get("run_id"))
        except ValueError:
            return None
        started_at = remembered.get("started_at")
        ref = self._ref(org, pid, run_id, started_at if isinstance(started_at, (int, float)) else None)
        snap = EI_PIPELINE_RUN.interpret(pipeline, ref)
        if snap.outcome is Outcome.FAILED:
            self.log.info("Run %s from an earlier try of this task ended %s; starting a new run.",
                          run_id, snap.state)
            self.forget_job(context, self.STATE_KEY)
            return None
        self.log.info("Reattaching to run %s of Edge Impulse pipeline %s that an earlier try of this task %s "
                      "(it is %s).", run_id, pid, "started" if remembered.get("started_by_us") else "adopted",
                      snap.state)
        return ref, bool(remembered.get("started_by_us"))

    def _start_or_adopt(
        self, context: Context, org: int, pid: int, ignore_last_successful_run: bool
    ) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
        """``(ref, run object or None, started_by_us)``; never starts a second run while ours is active."""
        hook = self.hook
        pipeline = hook.get_pipeline(org, pid)
        reattached = self._reattach(context, org, pid, pipeline)
        if reattached is not None:
            ref, ours = reattached
            return ref, None, ours

        current = pipeline.get("currentRun") if isinstance(pipeline.get("currentRun"), dict) else None
        current_id = current_run_id(pipeline)
        if current_id is not None:
            if self.if_running == "fail":
                raise AirflowException(
                    f"Edge Impulse pipeline {pid} (organization {org}) already has run {current_id} in "
                    "progress and if_running='fail'. Wait for it to finish, stop it in Studio, or use "
                    "if_running='wait' to adopt it."
                )
            if self.if_running == "wait":
                self.log.warning("Edge Impulse pipeline %s already has run %s in progress; adopting it "
                                 "instead of starting another (if_running='wait'). It will not be stopped "
                                 "on kill.", pid, current_id)
                ref = self._ref(org, pid, current_id, time.time())
                self._remember(context, ref, started_by_us=False)
                return ref, current, False
            self.log.warning("Edge Impulse pipeline %s has run %s in progress; asking for a new run anyway "
                             "(if_running='start_new').", pid, current_id)

        started_at = time.time()
        try:
            run = hook.run_pipeline(org, pid, ignore_last_successful_run)
        except ApiError as err:
            adopted = self._adopt_after_failed_start(context, err, org, pid, current_id)
            if adopted is None:
                raise
            return adopted
        ref = self._ref(org, pid, int(run["id"]), started_at)
        self._remember(context, ref, started_by_us=True)
        self.log.info("Started Edge Impulse pipeline %s (organization %s): run %s%s.", pid, org,
                      ref["run_id"], " with ignoreLastSuccessfulRun" if ignore_last_successful_run else "")
        return ref, run, True

    def _adopt_after_failed_start(
        self, context: Context, err: ApiError, org: int, pid: int, previous_id: int | None
    ) -> tuple[dict[str, Any], dict[str, Any] | None, bool] | None:
        """After an unclear or refused start, adopt a run that appeared meanwhile (no duplicate)."""
        refused = err.status is not None and 200 <= err.status < 300  # success: false
        if not (err.ambiguous or (refused and self.if_running == "wait")):
            return None
        try:
            pipeline = self.hook.get_pipeline(org, pid)
        except ApiError:
            self.log.warning("Could not re-read Edge Impulse pipeline %s after the failed start.", pid,
                             exc_info=True)
            return None
        current_id = current_run_id(pipeline)
        if current_id is None or current_id == previous_id:
            return None
        if err.ambiguous:
            self.log.warning("Starting Edge Impulse pipeline %s got no clear answer (%s) and run %s is now "
                             "in progress: adopting it rather than risking a second run. As it cannot be "
                             "proven to be this task's run, it will not be stopped on kill.",
                             pid, err, current_id)
        else:
            self.log.warning("Edge Impulse refused to start pipeline %s (%s) while run %s is in progress; "
                             "adopting that run (if_running='wait').", pid, err.vendor_message, current_id)
        ref = self._ref(org, pid, current_id, time.time())
        self._remember(context, ref, started_by_us=False)
        current = pipeline.get("currentRun")
        return ref, current if isinstance(current, dict) else None, False

    # ---- execute ------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        org, pid, ignore_last_successful_run = self._rendered()
        ref, run, started_by_us = self._start_or_adopt(context, org, pid, ignore_last_successful_run)
        self._active_ref, self._started_by_us = ref, started_by_us
        push_xcom(context, "run_id", ref["run_id"])
        push_xcom(context, "pipeline_url", self.hook.studio_pipeline_url(org, pid))
        if not self.wait_for_completion:
            return summarize_run(run, ref, "started" if started_by_us else "adopted")
        try:
            snap = self.wait_or_defer(
                kind=EI_PIPELINE_RUN, hook=self.hook, ref=ref, trigger_class=self._trigger_class(),
                conn_id=self.edge_impulse_conn_id, deadline=self.compute_deadline(),
                resume_kwargs={"started_by_us": started_by_us},
                cancel_on_kill=self.cancel_on_kill and started_by_us,
            )
        except JobTimeoutError as err:
            self._timed_out(str(err), ref, started_by_us)
        return self._finish(context, ref, snap)

    @staticmethod
    def _trigger_class() -> Any:
        from airflow_provider_pipelines.triggers.edge_impulse import EdgeImpulsePipelineRunTrigger

        return EdgeImpulsePipelineRunTrigger

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, started_by_us: bool = False
    ) -> dict[str, Any]:
        ref = dict((event or {}).get("ref") or {}) if isinstance(event, dict) else {}
        try:
            snap = self.snapshot_from_event(event, EI_PIPELINE_RUN)
        except JobTimeoutError as err:
            self._timed_out(str(err), ref, started_by_us)
        return self._finish(context, ref, snap)

    def _timed_out(self, message: str, ref: dict[str, Any], started_by_us: bool) -> NoReturn:
        if self.cancel_on_timeout and ref.get("run_id") is not None:
            if not started_by_us:
                self.log.warning("Not stopping run %s after the timeout: this task adopted it, it did not "
                                 "start it.", ref["run_id"])
            elif self._stop(ref, "the timeout"):
                note = " The run was stopped (cancel_on_timeout=True)."
                message = message.replace(_LEFT_RUNNING, note) if _LEFT_RUNNING in message else message + note
        raise JobTimeoutError(message)

    def _finish(self, context: Context, ref: dict[str, Any], snap: JobSnapshot) -> dict[str, Any]:
        self.forget_job(context, self.STATE_KEY)
        if snap.outcome is not Outcome.SUCCESS:
            raise JobFailedError(f"Edge Impulse pipeline {ref.get('pipeline_id')} run {ref.get('run_id')} "
                                 f"(organization {ref.get('organization_id')}) {snap.state}: {snap.message}")
        result = snap.result
        for step in result.get("steps", []):
            self.log.info("Step %s %r: status %s, transform %s, upload %s, files %s/%s succeeded.",
                          step.get("index"), step.get("name"), step.get("status"),
                          step.get("transform_job_status"), step.get("upload_job_status"),
                          step.get("files_succeeded"), step.get("files_finished"))
        self.log.info("Edge Impulse pipeline %s run %s finished; items before %s, after %s.",
                      ref.get("pipeline_id"), ref.get("run_id"), result.get("item_count_before"),
                      result.get("item_count_after"))
        for warning in result.get("warnings", []):
            self.log.warning("Run %s: %s", ref.get("run_id"), warning)
        return result

    # ---- kill ---------------------------------------------------------------------------------

    def _stop(self, ref: dict[str, Any], why: str) -> bool:
        try:
            stopped = EI_PIPELINE_RUN.cancel(self.hook, ref)
        except Exception as err:
            self.log.warning("Could not stop Edge Impulse pipeline %s run %s after %s: %s",
                             ref.get("pipeline_id"), ref.get("run_id"), why, err)
            return False
        if stopped:
            self.log.info("Stopped Edge Impulse pipeline %s run %s after %s.", ref.get("pipeline_id"),
                          ref.get("run_id"), why)
        return stopped

    def on_kill(self) -> None:
        """Stop the run this task started (only while it is still the pipeline's current run)."""
        ref = self._active_ref
        if ref is None:
            return
        if not self.cancel_on_kill:
            self.log.info("cancel_on_kill=False: leaving run %s running.", ref["run_id"])
            return
        if not self._started_by_us:
            self.log.info("Not stopping run %s: this task adopted it, it did not start it.", ref["run_id"])
            return
        self._stop(ref, "the task was killed")


__all__ = ["IF_RUNNING_MODES", "EdgeImpulseRunPipelineOperator"]
