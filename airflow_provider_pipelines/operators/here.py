"""Operator for the HERE platform: schedule (activate) a pipeline version, optionally run it now.

Two phases, two job kinds on the one watching mechanism: the ``activate`` operation
(:data:`~airflow_provider_pipelines.jobs.here.OPERATION`), then the job the run produces
(:data:`~airflow_provider_pipelines.jobs.here.JOB`). In deferrable mode the task defers twice
and keeps ONE absolute deadline, passed from phase to phase in the resume kwargs.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_pipelines._compat import AirflowException, BaseOperator
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.here import HerePipelineHook, here_id
from airflow_provider_pipelines.jobs.base import (
    JobFailedError,
    JobKind,
    JobSnapshot,
    JobTimeoutError,
    Outcome,
)
from airflow_provider_pipelines.jobs.here import (
    ACTIVE_VERSION_STATES,
    JOB,
    OPERATION,
    OPERATION_STATES,
    operation_in_progress,
    state_of,
    stop_run,
)
from airflow_provider_pipelines.links import HereLoggingLink, HerePipelineUILink
from airflow_provider_pipelines.operators._base import (
    DEFAULT_TIMEOUT,
    JobOperatorMixin,
    default_deferrable,
    push_xcom,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: ``InputCatalogVersion.processingType`` (here.md B.1).
PROCESSING_TYPES = ("changes", "reprocess", "no_changes")
#: ``runAsId`` pattern from the spec, matched against the whole value.
RUN_AS_ID_PATTERN = re.compile(
    r"hrn:(here|here-dev|here-cn|here-cn-dev):account:[a-zA-Z-]*:[a-zA-Z-]+:[a-zA-Z0-9/-]{3,63}"
)
#: Symbolic input catalog ids: "an alpha-numeric string (_- are also allowed)".
CATALOG_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
#: Catalog versions are int64; we accept 0..2**63-1 for ``version``, ``sinceVersion`` and
#: ``baseVersion`` (the spec gives no minimum; negative versions are refused before any call).
MIN_CATALOG_VERSION = 0
MAX_CATALOG_VERSION = 2**63 - 1
#: Key of the resume state inside a trigger's ``ref`` (see ``_wait_phase``).
RESUME_KEY = "resume"
#: Namespace of the per-try ``X-Correlation-ID`` (a UUIDv5 of dag/run/task/map index/try).
CORRELATION_NAMESPACE = uuid.UUID("6f1f3a52-2c1e-5b8e-9a53-5e3a4c0b7d21")


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def correlation_id_for(context: Context | None) -> str:
    """The ``X-Correlation-ID`` of one task try: the same in the worker and in the triggerer."""
    ti = (context or {}).get("ti") or (context or {}).get("task_instance")  # type: ignore[attr-defined]
    if ti is None:
        return str(uuid.uuid4())
    names = ("dag_id", "run_id", "task_id", "map_index", "try_number")
    parts = [str(getattr(ti, name, "")) for name in names]
    return str(uuid.uuid5(CORRELATION_NAMESPACE, "\x1f".join(parts)))


# --------------------------------------------------------------------------------------------
# Validation (at construction, skipping templates; again after rendering)
# --------------------------------------------------------------------------------------------


def catalog_version(name: str, value: Any) -> int:
    """An integer catalog version (an int, or a string of digits after rendering)."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        raise ValueError(f"{name} must be an integer catalog version, got {value!r}.")
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer catalog version, got {value!r}.") from None
    if not MIN_CATALOG_VERSION <= number <= MAX_CATALOG_VERSION:
        raise ValueError(
            f"{name} must be between {MIN_CATALOG_VERSION} and {MAX_CATALOG_VERSION}, got {value!r}."
        )
    return number


def _as_mapping(name: str, value: Any, example: str) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"{name} must be a dict (or a JSON object), got the string {value!r}.") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict like {example}, got {type(value).__name__}.")
    return value


def validate_input_catalogs(value: Any, *, rendered: bool) -> dict[str, Any] | None:
    """``{catalog_id: {"processingType", "version", "sinceVersion"?}}`` -> the request's ``inputCatalogs``."""
    if value is None:
        return None
    if not rendered and _templated(value):
        return None
    example = "{'weather': {'processingType': 'changes', 'version': 75, 'sinceVersion': 70}}"
    catalogs = _as_mapping("input_catalogs", value, example)
    if not catalogs:
        raise ValueError("input_catalogs must name at least one catalog, or be None to schedule the version "
                         "without a one-time run.")
    out: dict[str, Any] = {}
    for cid, spec in catalogs.items():
        where = f"input_catalogs[{cid!r}]"
        if not isinstance(cid, str) or not CATALOG_ID_PATTERN.fullmatch(cid):
            raise ValueError(f"{where}: a catalog id is the template's symbolic id "
                             "(letters, digits, _ and -).")
        if not rendered and _templated(spec):
            continue
        spec = _as_mapping(where, spec, "{'processingType': 'changes', 'version': 75}")
        unknown = sorted(set(spec) - {"processingType", "version", "sinceVersion"})
        if unknown:
            raise ValueError(f"{where} has unknown key(s) {', '.join(unknown)}; "
                             "allowed: processingType, version, sinceVersion.")
        item: dict[str, Any] = {}
        ptype = spec.get("processingType")
        if rendered or not _templated(ptype):
            if ptype not in PROCESSING_TYPES:
                raise ValueError(f"{where}['processingType'] must be one of {', '.join(PROCESSING_TYPES)}, "
                                 f"got {ptype!r}.")
            item["processingType"] = ptype
        if "version" not in spec:
            raise ValueError(f"{where} needs an integer 'version' (the input catalog version to process).")
        for key in ("version", "sinceVersion"):
            if key in spec and (rendered or not _templated(spec[key])):
                item[key] = catalog_version(f"{where}[{key!r}]", spec[key])
        since, version = item.get("sinceVersion"), item.get("version")
        if isinstance(since, int) and isinstance(version, int) and since > version:
            raise ValueError(f"{where}: sinceVersion {since} is after version {version}.")
        out[cid] = item
    return out


def validate_output_catalog(value: Any, *, rendered: bool) -> dict[str, Any] | None:
    """``{"baseVersion": int}`` -> the request's ``outputCatalog``."""
    if value is None or (not rendered and _templated(value)):
        return None
    spec = _as_mapping("output_catalog", value, "{'baseVersion': 42}")
    if set(spec) != {"baseVersion"}:
        raise ValueError(f"output_catalog must be exactly {{'baseVersion': <int>}}, got keys {sorted(spec)}.")
    if not rendered and _templated(spec["baseVersion"]):
        return None
    return {"baseVersion": catalog_version("output_catalog['baseVersion']", spec["baseVersion"])}


def validate_run_as_id(value: Any, *, rendered: bool) -> str | None:
    if value is None or value == "" or (not rendered and _templated(value)):
        return None
    if not isinstance(value, str) or not RUN_AS_ID_PATTERN.fullmatch(value):
        raise ValueError(f"run_as_id must be an app HRN like 'hrn:here:account::myorg:app/my-app-id' "
                         f"(pattern {RUN_AS_ID_PATTERN.pattern}), got {value!r}.")
    return value


def version_state_message(pipeline_id: str, version_id: str, version: dict[str, Any]) -> str:
    """Why an active version cannot be activated again, and what to do about it."""
    state = state_of(version)
    where = f"HERE pipeline {pipeline_id} version {version_id}"
    job = _dict(version.get("latestJob"))
    sensor = f"HerePipelineJobSensor(pipeline_id={pipeline_id!r}, pipeline_version_id={version_id!r})"
    hint = {
        "scheduled": "it waits for its scheduler trigger. Deactivate it first (operations/deactivate, "
                     "or in the HERE platform portal) to run it from here, or wait for its next job with "
                     f"{sensor}.",
        "running": f"it has an active job {job.get('id') or ''} that this task did not start. Wait for it "
                   f"with {sensor}, or cancel it (operations/cancel) and clear this task.",
        "paused": "resume it (operations/resume) or cancel it (operations/cancel) first.",
    }.get(state, "only a version in state 'ready' can be activated.")
    return f"{where} is already {state or 'in an unknown state'} (not 'ready'): {hint}"


class HereSchedulePipelineVersionOperator(JobOperatorMixin, BaseOperator):
    """Schedule (activate) a HERE pipeline version; with catalog versions, run it once now and wait.

    ``POST .../versions/{id}/operations/activate``, then:

    * the operation is watched until ``succeeded`` (``failed`` fails the task with its message);
    * with ``input_catalogs`` (a one-time "run now"; HERE deactivates the version after the
      attempt) the job the run produces is watched until ``completed`` (``failed``/``canceled``
      fail the task, pointing at the job's logs);
    * without them the task succeeds once the version is scheduled, or, with
      ``wait_for_job=True``, waits for the version's next job.

    Pushes ``operation_id`` at once, ``pipeline_ui_url``/``logging_url`` (extra links) and
    ``job_id`` as soon as known. Returns ``{"pipeline_id", "pipeline_version_id", "run_now",
    "operation": {...}, "job": {...} | None, "version_state", "logging_url", "pipeline_ui_url"}``.

    Reattach: before activating, the version is read. An operation or job that an earlier try of
    this task started (Airflow 3.3+ task state store) is adopted; any other active version fails
    the task with its state and what to do. A timeout leaves the run running unless
    ``cancel_on_timeout=True``; a kill cancels it (``cancel_on_kill=True``).

    :param pipeline_id: the pipeline's UUID (templated).
    :param pipeline_version_id: the version's UUID (templated).
    :param input_catalogs: ``{catalog_id: {"processingType": "changes"|"reprocess"|"no_changes",
        "version": int, "sinceVersion": int}}`` for a one-time run (templated).
    :param output_catalog: ``{"baseVersion": int}`` (templated; only with ``input_catalogs``).
    :param run_as_id: app HRN to run the pipeline as (templated).
    :param high_availability: run with a standby master.
    :param here_conn_id: connection id (conn type ``here_platform``).
    :param wait_for_completion: wait for the operation (and the job); else return once requested.
    :param deferrable: wait in the triggerer instead of the worker.
    :param poll_interval: seconds between status checks (grows up to ``max_poll_interval``).
    :param timeout: overall limit for both phases, in seconds.
    :param wait_for_job: without catalog versions, also wait for the scheduled version's next job.
    :param cancel_on_kill: cancel the run this task started when the task is killed.
    :param cancel_on_timeout: cancel the run when ``timeout`` passes (default: leave it running).
    """

    template_fields: Sequence[str] = (
        "pipeline_id", "pipeline_version_id", "input_catalogs", "output_catalog", "run_as_id", "here_conn_id",
    )
    operator_extra_links = (HerePipelineUILink(), HereLoggingLink())
    ui_color = "#c9f2ef"
    STATE_KEY = "here_pipeline_run"

    def __init__(
        self,
        *,
        pipeline_id: str,
        pipeline_version_id: str,
        input_catalogs: dict[str, Any] | str | None = None,
        output_catalog: dict[str, Any] | str | None = None,
        run_as_id: str | None = None,
        high_availability: bool | None = None,
        here_conn_id: str = HerePipelineHook.default_conn_name,
        wait_for_completion: bool = True,
        deferrable: bool | None = None,
        poll_interval: float | timedelta = 15,
        max_poll_interval: float | timedelta | None = None,
        timeout: float | timedelta | None = DEFAULT_TIMEOUT,
        wait_for_job: bool = False,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline_id = pipeline_id
        self.pipeline_version_id = pipeline_version_id
        self.input_catalogs = input_catalogs
        self.output_catalog = output_catalog
        self.run_as_id = run_as_id
        if high_availability is not None and not isinstance(high_availability, bool):
            raise ValueError(f"high_availability must be True, False or None, got {high_availability!r}.")
        self.high_availability = high_availability
        self.here_conn_id = here_conn_id
        if wait_for_job and not wait_for_completion:
            raise ValueError("wait_for_job=True needs wait_for_completion=True.")
        self.wait_for_job = wait_for_job
        self.cancel_on_kill = cancel_on_kill
        self.cancel_on_timeout = cancel_on_timeout
        self._init_wait(
            wait_for_completion=wait_for_completion,
            deferrable=default_deferrable() if deferrable is None else deferrable,
            poll_interval=poll_interval, max_poll_interval=max_poll_interval, timeout=timeout,
        )
        self._hook: HerePipelineHook | None = None
        self._active_run: dict[str, Any] | None = None
        self._validate(rendered=False)

    # ---- validation -----------------------------------------------------------------------------

    def _validate(self, *, rendered: bool) -> tuple[str, str, dict[str, Any] | None]:
        """``(pipeline_id, version_id, activate body)``; construction skips templated values."""
        ids = []
        for name in ("pipeline_id", "pipeline_version_id"):
            value = getattr(self, name)
            ids.append(value if not rendered and _templated(value) else here_id(name, value))
        inputs = validate_input_catalogs(self.input_catalogs, rendered=rendered)
        output = validate_output_catalog(self.output_catalog, rendered=rendered)
        if self.output_catalog is not None and self.input_catalogs is None:
            raise ValueError("output_catalog only applies to a one-time run: give input_catalogs too.")
        run_as_id = validate_run_as_id(self.run_as_id, rendered=rendered)
        body: dict[str, Any] = {}
        if inputs:
            body["inputCatalogs"] = inputs
        if output:
            body["outputCatalog"] = output
        if run_as_id:
            body["runAsId"] = run_as_id
        if self.high_availability is not None:
            body["highAvailability"] = self.high_availability
        return ids[0], ids[1], body or None

    # ---- hook ---------------------------------------------------------------------------------------

    def _make_hook(self, context: Context) -> HerePipelineHook:
        if self._hook is None:
            self._hook = HerePipelineHook(self.here_conn_id, correlation_id=correlation_id_for(context))
            self.log.info("HERE requests of this task try carry X-Correlation-ID %s.",
                          self._hook.correlation_id)
        return self._hook

    @staticmethod
    def _op_ref(run: dict[str, Any]) -> dict[str, Any]:
        return {"pipeline_id": run["pipeline_id"], "version_id": run["version_id"],
                "operation_id": run["operation_id"]}

    @staticmethod
    def _job_ref(run: dict[str, Any]) -> dict[str, Any]:
        return {"pipeline_id": run["pipeline_id"], "version_id": run["version_id"], "job_id": None,
                "created_after": run["created_after"], "previous_job_id": run.get("previous_job_id"),
                "single_job": bool(run["run_now"]), "operation_id": run["operation_id"]}

    # ---- start or adopt -----------------------------------------------------------------------

    def _adoptable(self, hook: HerePipelineHook, run: dict[str, Any], version: dict[str, Any]) -> bool:
        """Whether the run an earlier try started is still worth following (else start anew)."""
        try:
            op = hook.get_operation(run["pipeline_id"], run["version_id"], run["operation_id"])
        except ApiError as err:
            if err.status == 404:
                return False
            raise
        outcome = OPERATION_STATES.get(state_of(op))
        if outcome is Outcome.RUNNING:
            return True
        if outcome is not Outcome.SUCCESS:
            self.log.info("The operation %s of an earlier try ended %s (%s); starting a new run.",
                          run["operation_id"], state_of(op), op.get("message"))
            return False
        if not run["needs_job"]:
            return state_of(version) in ACTIVE_VERSION_STATES
        snap = JOB.read(hook, self._job_ref(run))
        if snap.outcome is Outcome.FAILED:
            self.log.info("The run of an earlier try ended %s (%s); starting a new run.",
                          snap.state, snap.message)
            return False
        return True

    def _recover_ambiguous(
        self, hook: HerePipelineHook, pid: str, vid: str, previous_op_id: str | None, err: ApiError
    ) -> dict[str, Any]:
        """The activate request may have reached HERE without an answer: look before failing."""
        version = hook.get_pipeline_version(pid, vid)
        op = version.get("latestOperation")
        if isinstance(op, dict) and op.get("id") and op.get("id") != previous_op_id \
                and str(op.get("requestType", "")).lower() == "activate":
            self.log.warning("The activate request got no clear answer (%s), but HERE shows a new activate "
                             "operation %s: following it.", err, op["id"])
            return op
        raise err

    def _start_or_adopt(
        self, context: Context, hook: HerePipelineHook, pid: str, vid: str, body: dict[str, Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(run, version)``: the run this try follows, and the version as read before it."""
        run_now = bool(body and body.get("inputCatalogs"))
        needs_job = run_now or self.wait_for_job
        version = hook.get_pipeline_version(pid, vid)
        remembered = self.remembered_job(context, self.STATE_KEY)
        if remembered and remembered.get("pipeline_id") == pid and remembered.get("version_id") == vid \
                and remembered.get("operation_id") and self._adoptable(hook, remembered, version):
            self.log.info("Reattaching to the run an earlier try started (operation %s).",
                          remembered["operation_id"])
            return remembered, version
        pending = operation_in_progress(version)
        if pending is not None:
            raise AirflowException(
                f"HERE pipeline {pid} version {vid} has operation {pending.get('id')} "
                f"({pending.get('requestType')}, {state_of(pending)}) in progress that this task did not "
                "start; HERE accepts one operation at a time. Wait for it to end, then clear this task.")
        if state_of(version) not in ("ready", ""):
            raise AirflowException(version_state_message(pid, vid, version))
        previous_job, previous_op = _dict(version.get("latestJob")), _dict(version.get("latestOperation"))
        requested_at = datetime.now(timezone.utc).isoformat()
        try:
            op = hook.schedule_pipeline_version(pid, vid, body)
        except ApiError as err:
            if not err.ambiguous:
                raise
            op = self._recover_ambiguous(hook, pid, vid, previous_op.get("id"), err)
        if not op.get("id"):
            raise AirflowException(f"HERE accepted the activation of pipeline {pid} version {vid} but "
                                   "returned no operation id.")
        run = {
            "pipeline_id": pid, "version_id": vid, "operation_id": str(op["id"]),
            "created_after": op.get("created") or requested_at, "previous_job_id": previous_job.get("id"),
            "run_now": run_now, "needs_job": needs_job,
        }
        self.remember_job(context, self.STATE_KEY, run)
        self.log.info("Requested activation of HERE pipeline %s version %s%s: operation %s.", pid, vid,
                      " with catalog versions (one-time run)" if run_now else "", run["operation_id"])
        return run, version

    # ---- execution ------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        pid, vid, body = self._validate(rendered=True)
        hook = self._make_hook(context)
        deadline = self.compute_deadline()
        run, version = self._start_or_adopt(context, hook, pid, vid, body)
        self._active_run = run
        push_xcom(context, "operation_id", run["operation_id"])
        self._push_urls(context, version)
        if not self.wait_for_completion:
            self._active_run = None
            self.forget_job(context, self.STATE_KEY)  # nothing to reattach to: the task ends here
            op = hook.get_operation(pid, vid, run["operation_id"])
            return self._result(run, OPERATION.interpret(op, self._op_ref(run)).result, None, version)
        with self._timeouts(hook, run):
            snap = self._wait_phase(hook, OPERATION, self._op_ref(run), "execute_operation_complete",
                                    {"run": run, "deadline": deadline})
        return self._after_operation(context, hook, run, deadline, snap)

    def execute_operation_complete(
        self, context: Context, event: dict[str, Any] | None = None, run: dict[str, Any] | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """Resume after the operation trigger; then wait for the job (maybe deferring again)."""
        state = self._resumed(event, run=run, deadline=deadline)
        run, deadline = state["run"], state.get("deadline")
        hook = self._make_hook(context)
        self._active_run = run
        with self._timeouts(hook, run):
            snap = self._event_snapshot(event, OPERATION)
        return self._after_operation(context, hook, run, deadline, snap)

    def _after_operation(
        self, context: Context, hook: HerePipelineHook, run: dict[str, Any], deadline: float | None,
        snap: JobSnapshot,
    ) -> dict[str, Any]:
        pid, vid = run["pipeline_id"], run["version_id"]
        if snap.outcome is Outcome.FAILED:
            self._active_run = None
            self.forget_job(context, self.STATE_KEY)
            raise JobFailedError(f"HERE {snap.result.get('request_type') or 'activate'} operation "
                                 f"{run['operation_id']} on pipeline {pid} version {vid} ended {snap.state}: "
                                 f"{snap.message}")
        self.log.info("Operation %s succeeded: pipeline %s version %s is activated%s.", run["operation_id"],
                      pid, vid, " for a one-time run" if run["run_now"] else "")
        if not run["needs_job"]:
            self._active_run = None
            self.forget_job(context, self.STATE_KEY)
            version = hook.get_pipeline_version(pid, vid)
            self._push_urls(context, version)
            return self._result(run, snap.result, None, version)
        with self._timeouts(hook, run):
            job = self._wait_phase(hook, JOB, self._job_ref(run), "execute_complete",
                                   {"run": run, "deadline": deadline, "operation": snap.result})
        return self._finish(context, run, snap.result, job)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, run: dict[str, Any] | None = None,
        deadline: float | None = None, operation: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Resume after the job trigger."""
        state = self._resumed(event, run=run, deadline=deadline, operation=operation)
        run = state["run"]
        hook = self._make_hook(context)
        self._active_run = run
        with self._timeouts(hook, run):
            snap = self._event_snapshot(event, JOB)
        return self._finish(context, run, dict(state.get("operation") or {}), snap)

    def _finish(
        self, context: Context, run: dict[str, Any], operation: dict[str, Any], snap: JobSnapshot
    ) -> dict[str, Any]:
        self._active_run = None
        self.forget_job(context, self.STATE_KEY)  # a cleared task starts a new run
        job = snap.result
        if job.get("job_id"):
            push_xcom(context, "job_id", job["job_id"])
        self._push_urls(context, job)
        if snap.outcome is Outcome.FAILED:
            raise JobFailedError(
                f"HERE pipeline {run['pipeline_id']} version {run['version_id']}: {snap.message}"
            )
        self.log.info("HERE job %s completed.", job.get("job_id"))
        return self._result(run, operation, job, None)

    # ---- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _trigger_classes() -> tuple[Any, Any]:
        from airflow_provider_pipelines.triggers import here

        return here.HerePipelineOperationTrigger, here.HerePipelineJobTrigger

    def _wait_phase(
        self, hook: HerePipelineHook, kind: JobKind, ref: dict[str, Any], method_name: str,
        resume: dict[str, Any],
    ) -> JobSnapshot:
        """Wait for one phase in the worker, or defer with ``resume`` (the run and the ONE deadline).

        ``resume`` travels twice: as the defer kwargs, and inside the trigger's ``ref`` (hence in
        its event), because ``airflow dags test`` on Airflow 3.3.2 resumes with the event alone
        (``airflow.sdk.definitions.dag``: ``next_kwargs = {"event": ...}``) where the triggerer
        merges the two.
        """
        trigger_class = self._trigger_classes()[0 if kind is OPERATION else 1]
        return self.wait_or_defer(
            kind=kind, hook=hook, ref={**ref, RESUME_KEY: resume}, trigger_class=trigger_class,
            conn_id=self.here_conn_id, deadline=resume["deadline"], method_name=method_name,
            resume_kwargs=resume, cancel_on_kill=self.cancel_on_kill,
            hook_params={"correlation_id": hook.correlation_id},
        )

    @staticmethod
    def _resumed(event: dict[str, Any] | None, **given: Any) -> dict[str, Any]:
        """The resume state: the defer kwargs, else the copy carried in the event's ``ref``."""
        ref = event.get("ref") if isinstance(event, dict) else None
        saved = ref.get(RESUME_KEY) if isinstance(ref, dict) else None
        state = dict(saved) if isinstance(saved, dict) else {}
        state.update({k: v for k, v in given.items() if v is not None})
        run = state.get("run")
        if not isinstance(run, dict) or not run.get("operation_id"):
            raise AirflowException(f"Resumed without the run it was waiting for (event {event!r}).")
        return state

    @staticmethod
    def _event_snapshot(event: dict[str, Any] | None, kind: JobKind) -> JobSnapshot:
        if isinstance(event, dict) and event.get("kind") not in (None, kind.name):
            raise AirflowException(
                f"Expected an event for a {kind.label}, got one for {event.get('kind')!r}."
            )
        return JobOperatorMixin.snapshot_from_event(event, kind)

    def _timeouts(self, hook: HerePipelineHook, run: dict[str, Any]) -> _TimeoutGuard:
        return _TimeoutGuard(self, hook, run)

    def _push_urls(self, context: Context, source: dict[str, Any]) -> None:
        for key, camel in (("pipeline_ui_url", "pipelineUIUrl"), ("logging_url", "loggingUrl")):
            value = source.get(key) or source.get(camel)
            if value:
                push_xcom(context, key, value)

    @staticmethod
    def _result(
        run: dict[str, Any], operation: dict[str, Any], job: dict[str, Any] | None,
        version: dict[str, Any] | None,
    ) -> dict[str, Any]:
        source = job or version or {}
        return {
            "pipeline_id": run["pipeline_id"],
            "pipeline_version_id": run["version_id"],
            "run_now": run["run_now"],
            "operation": operation,
            "job": job,
            "version_state": state_of(version) if version else None,
            "logging_url": source.get("logging_url") or source.get("loggingUrl"),
            "pipeline_ui_url": source.get("pipeline_ui_url") or source.get("pipelineUIUrl"),
        }

    def on_kill(self) -> None:
        """Worker-side kill: cancel the run this task started (deferred tasks: the trigger does it)."""
        run, hook = self._active_run, self._hook
        if not (self.cancel_on_kill and run and hook):
            return
        try:
            action = stop_run(hook, self._job_ref(run))
            if action:
                self.log.info("Requested %s of HERE pipeline %s version %s after a kill.", action,
                              run["pipeline_id"], run["version_id"])
        except Exception:
            self.log.warning("Could not cancel the HERE run of pipeline %s version %s.", run["pipeline_id"],
                             run["version_id"], exc_info=True)


class _TimeoutGuard:
    """On a :class:`JobTimeoutError`: cancel the run when ``cancel_on_timeout``, say so, re-raise."""

    def __init__(
        self, op: HereSchedulePipelineVersionOperator, hook: HerePipelineHook, run: dict[str, Any]
    ) -> None:
        self.op, self.hook, self.run = op, hook, run

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if not isinstance(exc, JobTimeoutError) or not self.op.cancel_on_timeout:
            return
        pid, vid = self.run["pipeline_id"], self.run["version_id"]
        try:
            action = stop_run(self.hook, self.op._job_ref(self.run))
            outcome = f"requested {action} of the version" if action else "found nothing left to cancel"
        except Exception as err:  # the timeout is the error to report; the cancel is best effort
            self.op.log.warning("Could not cancel the HERE run after the timeout: %s", err)
            outcome = f"could not cancel it ({err})"
        self.op._active_run = None
        raise JobTimeoutError(
            f"Timed out waiting for HERE pipeline {pid} version {vid} (operation {self.run['operation_id']}, "
            f"last state {exc.last.state if exc.last else 'unknown'}); cancel_on_timeout=True, so this task "
            f"{outcome}.", exc.last,
        ) from None


__all__ = [
    "CATALOG_ID_PATTERN",
    "PROCESSING_TYPES",
    "RUN_AS_ID_PATTERN",
    "HereSchedulePipelineVersionOperator",
    "correlation_id_for",
    "validate_input_catalogs",
    "validate_output_catalog",
    "validate_run_as_id",
]
