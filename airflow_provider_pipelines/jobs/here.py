"""HERE job kinds: a pipeline version operation, then the job a run produces.

Both phases of :class:`~airflow_provider_pipelines.operators.here.HereSchedulePipelineVersionOperator`
use the one job-watching mechanism (:mod:`airflow_provider_pipelines.jobs.base`); these kinds only
say how to read an ``Operation`` and a ``Job`` and what their states mean (here.md B.3).
"""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_pipelines.jobs.base import (
    JobKind,
    JobSnapshot,
    JobTimeoutError,
    Outcome,
    PollPolicy,
    awatch_job,
    wait_for_job,
)

if TYPE_CHECKING:
    from airflow_provider_pipelines.hooks._base import PipelinesHook
    from airflow_provider_pipelines.hooks.here import HerePipelineHook

log = logging.getLogger(__name__)

#: ``Operation.state`` (here.md B.3). States are compared in lower case: the spec uses lower
#: case, HERE's guides write them in capitals, the wire casing is unconfirmed.
OPERATION_STATES = {
    "accepted": Outcome.RUNNING,
    "being_processed": Outcome.RUNNING,
    "succeeded": Outcome.SUCCESS,
    "failed": Outcome.FAILED,
}
#: ``Job.state`` (here.md B.3): ``canceled`` with one "l"; there is no SUBMITTED/CANCELLED.
JOB_STATES = {
    "starting": Outcome.RUNNING,
    "running": Outcome.RUNNING,
    "completed": Outcome.SUCCESS,
    "failed": Outcome.FAILED,
    "canceled": Outcome.FAILED,
}
#: ``PipelineVersion.state`` values in which the version is active (anything but ``ready``).
ACTIVE_VERSION_STATES = frozenset({"scheduled", "running", "paused"})

#: A job carries no link to the operation that started it (inferred from the schemas). The job
#: of a run is therefore identified by time: created at or after the activate operation's
#: ``created`` (server clock), less this tolerance for clock differences between HERE services
#: (or between our clock and HERE's when the operation has no ``created``), and never the
#: version's latest job from before the activation. See :func:`job_of_run`.
JOB_CREATED_TOLERANCE_SECONDS = 120.0
#: How long ``on_kill`` waits for an operation in progress before it can request ``cancel``
#: (HERE refuses a new operation while one is being processed).
STOP_WAIT_SECONDS = 20.0  # below Airflow's default [triggerer] on_kill_timeout of 30 s


def state_of(document: Any) -> str:
    """The lower-case ``state`` of a HERE object (``""`` when absent)."""
    if not isinstance(document, dict):
        return ""
    return str(document.get("state") or "").strip().lower()


def parse_time(value: Any) -> float | None:
    """Epoch seconds from a HERE ISO-8601 date-time (``...+01:00`` or ``...Z``), else ``None``."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Python 3.10 accepts only 3 or 6 fractional digits: normalise to 6
    text = re.sub(r"\.(\d+)", lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def operation_in_progress(version: dict[str, Any]) -> dict[str, Any] | None:
    """The version's ``latestOperation`` while it is accepted or being processed."""
    op = version.get("latestOperation")
    if isinstance(op, dict) and OPERATION_STATES.get(state_of(op)) is Outcome.RUNNING:
        return op
    return None


def job_of_run(jobs: list[Any], ref: dict[str, Any]) -> dict[str, Any] | None:
    """THE rule that picks the job a watch is about, from jobs of one version (any order).

    * ``ref["job_id"]`` set: that job.
    * ``ref["created_after"]`` set (a run this provider started): the *first* job created at or
      after it (less :data:`JOB_CREATED_TOLERANCE_SECONDS`) other than ``ref["previous_job_id"]``.
    * neither (a sensor without a job id): the version's *latest* job.

    The list order of ``GET .../jobs`` is unconfirmed, so jobs are ordered by ``created``.
    """
    valid = [j for j in jobs if isinstance(j, dict) and j.get("id")]
    if ref.get("job_id"):
        return next((j for j in valid if str(j["id"]) == str(ref["job_id"])), None)
    after = parse_time(ref.get("created_after"))
    if after is None:
        return max(valid, key=lambda j: parse_time(j.get("created")) or 0.0, default=None)
    previous = ref.get("previous_job_id")
    candidates = [
        j for j in valid
        if str(j["id"]) != str(previous)
        and (parse_time(j.get("created")) or float("inf")) >= after - JOB_CREATED_TOLERANCE_SECONDS
    ]
    return min(candidates, key=lambda j: parse_time(j.get("created")) or float("inf"), default=None)


def summarize_operation(op: dict[str, Any], pipeline_id: str, version_id: str) -> dict[str, Any]:
    return {
        "pipeline_id": pipeline_id,
        "pipeline_version_id": version_id,
        "operation_id": op.get("id"),
        "request_type": op.get("requestType"),
        "state": op.get("state"),
        "message": op.get("message"),
        "created": op.get("created"),
    }


def summarize_job(job: dict[str, Any], pipeline_id: str, version_id: str) -> dict[str, Any]:
    """A small, secret-free summary of a ``Job`` (``loggingUrl``/``pipelineUIUrl`` in snake case)."""
    return {
        "pipeline_id": pipeline_id,
        "pipeline_version_id": version_id,
        "job_id": job.get("id"),
        "state": job.get("state"),
        "execution_mode": job.get("executionMode"),
        "created": job.get("created"),
        "updated": job.get("updated"),
        "catalog_versions": job.get("catalogVersions"),
        "actual_region_id": job.get("actualRegionId"),
        "logging_url": job.get("loggingUrl"),
        "pipeline_ui_url": job.get("pipelineUIUrl"),
    }


def _here(hook: PipelinesHook) -> HerePipelineHook:
    return cast("HerePipelineHook", hook)


# --------------------------------------------------------------------------------------------
# Stopping a run (on_kill, cancel_on_timeout)
# --------------------------------------------------------------------------------------------


def stop_action(version: dict[str, Any]) -> str | None:
    """Which operation stops what a run left active: ``cancel`` a running or paused version,
    ``deactivate`` a scheduled one, nothing for a ``ready`` version."""
    state = state_of(version)
    if state in ("running", "paused"):
        return "cancel"
    if state == "scheduled":
        return "deactivate"
    return None


def _stop_policy() -> PollPolicy:
    return PollPolicy(interval=2.0, max_interval=5.0, max_poll_errors=1)


def _log_busy(pending: dict[str, Any], pid: str, vid: str) -> None:
    log.warning("Operation %s on pipeline %s version %s is still being processed and HERE accepts no cancel "
                "until it ends: cancel the version in the HERE platform portal.", pending["id"], pid, vid)


def stop_run(hook: PipelinesHook, ref: dict[str, Any]) -> str | None:
    """Cancel (or deactivate) the version a run of this task made active; the operation requested."""
    here, pid, vid = _here(hook), ref["pipeline_id"], ref["version_id"]
    version = here.get_pipeline_version(pid, vid)
    pending = operation_in_progress(version)
    if pending is not None:
        op_ref = {"pipeline_id": pid, "version_id": vid, "operation_id": pending["id"]}
        try:
            wait_for_job(OPERATION, hook, op_ref, _stop_policy(), time.time() + STOP_WAIT_SECONDS)
        except JobTimeoutError:
            _log_busy(pending, pid, vid)
            return None
        version = here.get_pipeline_version(pid, vid)
    action = stop_action(version)
    if action is None:
        log.info("Pipeline %s version %s is %s: nothing to cancel.", pid, vid, state_of(version) or "unknown")
        return None
    op = here.version_operation(pid, vid, action)
    log.info("Requested %s of pipeline %s version %s (operation %s).", action, pid, vid, op.get("id"))
    return action


async def astop_run(hook: PipelinesHook, ref: dict[str, Any]) -> str | None:
    """Async twin of :func:`stop_run` (trigger ``on_kill``)."""
    here, pid, vid = _here(hook), ref["pipeline_id"], ref["version_id"]
    version = await here.aget_pipeline_version(pid, vid)
    pending = operation_in_progress(version)
    if pending is not None:
        op_ref = {"pipeline_id": pid, "version_id": vid, "operation_id": pending["id"]}
        try:
            await awatch_job(OPERATION, hook, op_ref, _stop_policy(), time.time() + STOP_WAIT_SECONDS,
                             jitter_first=False)
        except JobTimeoutError:
            _log_busy(pending, pid, vid)
            return None
        version = await here.aget_pipeline_version(pid, vid)
    action = stop_action(version)
    if action is None:
        log.info("Pipeline %s version %s is %s: nothing to cancel.", pid, vid, state_of(version) or "unknown")
        return None
    op = await here.aversion_operation(pid, vid, action)
    log.info("Requested %s of pipeline %s version %s (operation %s).", action, pid, vid, op.get("id"))
    return action


# --------------------------------------------------------------------------------------------
# Kinds
# --------------------------------------------------------------------------------------------


class PipelineOperationKind(JobKind):
    """A version operation; ``ref = {"pipeline_id", "version_id", "operation_id"}``.

    Cancelling it stops the run it belongs to (:func:`stop_run`).
    """

    name = "here.pipeline_operation"
    label = "HERE pipeline version operation"
    cancellable = True

    def describe(self, ref: dict[str, Any]) -> str:
        return f"{ref['operation_id']} (pipeline {ref['pipeline_id']}, version {ref['version_id']})"

    def fetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        return _here(hook).get_operation(ref["pipeline_id"], ref["version_id"], ref["operation_id"])

    async def afetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        return await _here(hook).aget_operation(ref["pipeline_id"], ref["version_id"], ref["operation_id"])

    def interpret(self, payload: Any, ref: dict[str, Any]) -> JobSnapshot:
        op = payload if isinstance(payload, dict) else {}
        state = state_of(op)
        outcome = OPERATION_STATES.get(state)
        result = summarize_operation(op, ref["pipeline_id"], ref["version_id"])
        if outcome is None:
            return JobSnapshot(state, Outcome.FAILED,
                               f"HERE returned an unknown operation state {op.get('state')!r}.", result)
        message = op.get("message")
        if outcome is Outcome.FAILED:
            message = message or "HERE gave no message"
        return JobSnapshot(state, outcome, message, result)

    def cancel(self, hook: PipelinesHook, ref: dict[str, Any]) -> bool:
        return stop_run(hook, ref) is not None

    async def acancel(self, hook: PipelinesHook, ref: dict[str, Any]) -> bool:
        return await astop_run(hook, ref) is not None


class PipelineJobKind(JobKind):
    """The job of a run, or a given/latest job of a version.

    ``ref = {"pipeline_id", "version_id", "job_id", "created_after", "previous_job_id",
    "single_job", "operation_id"}`` (all but the first two optional; see :func:`job_of_run`).
    There is no single-job GET in v2: a known job is read from the verbose version's ``latestJob``
    or, failing that, from the job list. ``single_job`` (a run-now, which makes exactly one job)
    lets the latest job stand for the first one, saving the job list on every poll.
    """

    name = "here.pipeline_job"
    label = "HERE pipeline job"
    sensor_name = "HerePipelineJobSensor"
    cancellable = True

    def describe(self, ref: dict[str, Any]) -> str:
        which = ref.get("job_id") or ("of the run" if ref.get("created_after") else "latest")
        return f"{which} (pipeline {ref['pipeline_id']}, version {ref['version_id']})"

    @staticmethod
    def _uses_version(ref: dict[str, Any]) -> bool:
        return bool(ref.get("job_id") or ref.get("single_job") or not ref.get("created_after"))

    def _from_latest(self, version: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any] | None:
        latest = version.get("latestJob")
        if not self._uses_version(ref) or not isinstance(latest, dict):
            return None
        return job_of_run([latest], ref)

    @staticmethod
    def _needs_list(version: dict[str, Any], ref: dict[str, Any], job: dict[str, Any] | None) -> bool:
        # the given job is not the latest, the server left latestJob out (verbose filling it is
        # inferred), or the version is back to ready: check the full list before concluding
        if job is not None:
            return False
        return bool(ref.get("job_id")) or not isinstance(version.get("latestJob"), dict) \
            or state_of(version) == "ready"

    def fetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        here, pid, vid = _here(hook), ref["pipeline_id"], ref["version_id"]
        if not self._uses_version(ref):
            job = job_of_run(here.list_jobs(pid, vid), ref)
            if job is not None:
                return {"version": None, "job": job}
        version = here.get_pipeline_version(pid, vid)
        job = self._from_latest(version, ref)
        if self._needs_list(version, ref, job):
            job = job_of_run(here.list_jobs(pid, vid), ref)
        return {"version": version, "job": job}

    async def afetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        here, pid, vid = _here(hook), ref["pipeline_id"], ref["version_id"]
        if not self._uses_version(ref):
            job = job_of_run(await here.alist_jobs(pid, vid), ref)
            if job is not None:
                return {"version": None, "job": job}
        version = await here.aget_pipeline_version(pid, vid)
        job = self._from_latest(version, ref)
        if self._needs_list(version, ref, job):
            job = job_of_run(await here.alist_jobs(pid, vid), ref)
        return {"version": version, "job": job}

    def interpret(self, payload: Any, ref: dict[str, Any]) -> JobSnapshot:
        pid, vid = ref["pipeline_id"], ref["version_id"]
        version = payload.get("version") if isinstance(payload, dict) else None
        job = payload.get("job") if isinstance(payload, dict) else None
        if isinstance(job, dict):
            state = state_of(job)
            outcome = JOB_STATES.get(state)
            result = summarize_job(job, pid, vid)
            if outcome is None:
                unknown = f"HERE returned an unknown job state {job.get('state')!r} for job {job.get('id')}."
                return JobSnapshot(state, Outcome.FAILED, unknown, result)
            message = None
            if outcome is Outcome.FAILED:
                message = (f"job {job.get('id')} ended {state}; HERE jobs carry no error message, see the "
                           f"logs at {job.get('loggingUrl') or '(no loggingUrl)'}")
            return JobSnapshot(state, outcome, message, result)
        version = version if isinstance(version, dict) else {}
        result = {"pipeline_id": pid, "pipeline_version_id": vid, "job_id": ref.get("job_id"),
                  "state": None, "version_state": state_of(version) or None,
                  "logging_url": version.get("loggingUrl"), "pipeline_ui_url": version.get("pipelineUIUrl")}
        if state_of(version) == "ready" and operation_in_progress(version) is None:
            if ref.get("job_id"):
                why = f"job {ref['job_id']} is not among the version's jobs"
            elif ref.get("created_after"):
                why = "the version went back to ready without a job for this run (deactivated or cancelled?)"
            else:
                why = "the version has no job and is not active"
            return JobSnapshot("no_job", Outcome.FAILED, why, result)
        return JobSnapshot("waiting_for_job", Outcome.RUNNING, None, result)

    def cancel(self, hook: PipelinesHook, ref: dict[str, Any]) -> bool:
        return stop_run(hook, ref) is not None

    async def acancel(self, hook: PipelinesHook, ref: dict[str, Any]) -> bool:
        return await astop_run(hook, ref) is not None

    def timeout_message(self, ref: dict[str, Any], last: JobSnapshot | None, waited: float | None) -> str:
        job_id = ref.get("job_id") or (last.result.get("job_id") if last else None)
        return super().timeout_message({**ref, "job_id": job_id} if job_id else ref, last, waited)

    def resume_hint(self, ref: dict[str, Any]) -> str:
        job = f", job_id={ref['job_id']!r}" if ref.get("job_id") else ""
        return (f" To keep waiting for it, use HerePipelineJobSensor(pipeline_id={ref['pipeline_id']!r}, "
                f"pipeline_version_id={ref['version_id']!r}{job}).")


OPERATION = PipelineOperationKind()
JOB = PipelineJobKind()

__all__ = [
    "ACTIVE_VERSION_STATES",
    "JOB",
    "JOB_CREATED_TOLERANCE_SECONDS",
    "JOB_STATES",
    "OPERATION",
    "OPERATION_STATES",
    "job_of_run",
    "operation_in_progress",
    "parse_time",
    "state_of",
    "stop_action",
    "stop_run",
    "summarize_job",
    "summarize_operation",
]
