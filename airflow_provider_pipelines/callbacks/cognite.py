"""Report a task's or a DAG run's outcome as a CDF extraction pipeline run, from Airflow callbacks.

``CogniteExtractionPipelineRunCallback`` is an Airflow notifier: pass the same object as
``on_success_callback`` and ``on_failure_callback`` (and, for a ``seen`` heartbeat when a task
starts, ``on_execute_callback``) of a task or a DAG. It works where Airflow 3 runs callbacks:
task callbacks in the worker, DAG callbacks in the DAG processor (and both in-process under
``airflow dags test``). It calls CDF synchronously and never raises: a failed report is logged.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_pipelines._compat import BaseNotifier, redact_secrets
from airflow_provider_pipelines.hooks._http import Redactor
from airflow_provider_pipelines.hooks.cognite import (
    CogniteHook,
    to_epoch_ms,
    validate_extpipe_external_id,
    validate_extpipe_status,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Task instance states reported as ``failure``.
FAILURE_STATES = frozenset({"failed", "up_for_retry", "upstream_failed"})
#: Task instance states reported as ``seen``: the task has started (``on_execute_callback``) or
#: was skipped (``on_skipped_callback``): the pipeline is alive but produced no result.
SEEN_STATES = frozenset({"running", "skipped"})
#: What the task instance in a DAG failure callback's context is, per failure reason.
DAG_FAILURE_TASK_ROLES = {
    "task_failure": "failed task",
    "timed_out": "unfinished task",
    "all_tasks_deadlocked": "blocked task",
}
#: Default longest exception text in a failure message (the whole message is cut at 1,000).
EXCEPTION_CHARS = 500


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _template_dag(context: Mapping[str, Any]) -> Any:
    """The context's DAG if it can give a Jinja environment.

    Under ``airflow dags test`` a DAG callback's context holds the scheduler's serialized DAG,
    which cannot; rendering then uses Airflow's default environment.
    """
    dag = context.get("dag")
    return dag if callable(getattr(dag, "get_template_env", None)) else None


def _state(obj: Any) -> str | None:
    state = getattr(obj, "state", None)
    if state is None:
        return None
    return str(getattr(state, "value", state)).lower()


def _from_dag_processor(context: Mapping[str, Any]) -> bool:
    """Whether this is a task callback run by the DAG processor rather than the worker.

    Airflow 3 runs a task's callbacks there only for failures its worker could not report (a
    heartbeat timeout, a killed process); that context has no ``exception`` key and a task
    instance without state, unlike every callback run in the worker.
    """
    ti = context.get("ti") or context.get("task_instance")
    return (ti is not None and "reason" not in context and "exception" not in context
            and _state(ti) is None)


def decide_status(context: Mapping[str, Any]) -> str | None:
    """``success``, ``failure`` or ``seen`` for the callback context, or ``None`` if it cannot tell.

    In order: a DAG callback's ``reason`` (``"success"`` -> success, anything else such as
    ``task_failure``, ``timed_out`` or ``all_tasks_deadlocked`` -> failure); an ``exception`` ->
    failure; a task callback run by the DAG processor (always a failure); the task instance's
    state (failed / up for retry / upstream failed -> failure, success -> success, running /
    skipped -> seen); the DAG run's state.
    """
    reason = context.get("reason")
    if reason is not None:
        return "success" if str(reason) == "success" else "failure"
    if context.get("exception") is not None or _from_dag_processor(context):
        return "failure"
    state = _state(context.get("ti") or context.get("task_instance"))
    if state in FAILURE_STATES:
        return "failure"
    if state == "success":
        return "success"
    if state in SEEN_STATES:
        return "seen"
    run_state = _state(context.get("dag_run"))
    if run_state == "failed":
        return "failure"
    if run_state == "success":
        return "success"
    return None


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return None if value is None else str(value)


def describe_context(context: Mapping[str, Any], status: str, exception_chars: int = EXCEPTION_CHARS) -> str:
    """A one-line report: DAG, run id, task, try number, logical date, and for failures the reason.

    DAG callbacks (the context has a ``reason``) describe the DAG run; task callbacks the task.
    """
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None)
    run_id = context.get("run_id") or getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None)
    logical_date = context.get("logical_date") or getattr(dag_run, "logical_date", None)
    reason = context.get("reason")
    details = [f"run {run_id}"] if run_id else []
    if reason is not None:  # a DAG callback
        subject = f"Airflow DAG {dag_id}"
        verb = "succeeded" if status == "success" else ("failed" if status == "failure" else "is running")
        if status == "failure":
            details.append(f"reason: {reason}")
            # Airflow hands a DAG failure callback the task instance behind the reason
            task_id = getattr(ti, "task_id", None)
            role = DAG_FAILURE_TASK_ROLES.get(str(reason))
            if task_id and role:
                details.append(f"{role}: {task_id}")
    else:
        task_id = getattr(ti, "task_id", None) or getattr(context.get("task"), "task_id", None)
        subject = f"Airflow task {dag_id}.{task_id}" if task_id else f"Airflow DAG {dag_id}"
        state = _state(ti)
        if status == "failure":
            verb = "failed (will retry)" if state == "up_for_retry" else "failed"
        elif status == "success":
            verb = "succeeded"
        else:
            verb = "was skipped" if state == "skipped" else "started"
        try_number = getattr(ti, "try_number", None)
        if try_number:
            details.append(f"try {try_number}")
    details.append(f"logical date {_iso(logical_date)}" if logical_date is not None else "no logical date")
    text = f"{subject} {verb} ({', '.join(details)})"
    exception = context.get("exception")
    if status == "failure" and reason is None and _from_dag_processor(context):
        text += ": the task ended without reporting an outcome (e.g. killed, or it stopped heartbeating)"
    if status == "failure" and exception is not None:
        cause = str(exception)
        if isinstance(exception, BaseException):
            cause = f"{type(exception).__name__}: {cause}"
        text += f": {_shorten(cause, exception_chars)}"
    return text


class CogniteExtractionPipelineRunCallback(BaseNotifier):
    """Report the outcome of a task or DAG run to a CDF extraction pipeline (a callback / notifier).

    Usable as ``on_success_callback``, ``on_failure_callback``, ``on_retry_callback``,
    ``on_skipped_callback`` and ``on_execute_callback`` of tasks, and as ``on_success_callback`` /
    ``on_failure_callback`` of DAGs. The status comes from :func:`decide_status` unless forced
    with ``status``: success / failure from the outcome, ``seen`` (a heartbeat) when a task
    starts (``on_execute_callback``) or is skipped. The message (built by
    :func:`describe_context` unless given) names the DAG, run id, task, try number and logical
    date, and for failures the shortened exception or the DAG's failure reason. Secrets known
    to Airflow's masker or to the connection are replaced by ``***`` before anything is sent.

    Reporting goes through :meth:`CogniteHook.report_extpipe_run`, so a lost answer from CDF
    neither loses nor doubles the report. The callback never raises: any failure (bad
    connection, CDF refusing the run, a template that does not render) is logged.

    :param external_id: the extraction pipeline's external id (templated with the callback's
        context).
    :param cognite_conn_id: connection id (conn type ``cognite``).
    :param status: force ``success``, ``failure`` or ``seen`` instead of deciding from the context.
    :param message: a message template rendered with the callback's context (``{{ ti }}``,
        ``{{ exception }}``, ``{{ reason }}``...) instead of the default description.
    :param created_time: when the run happened (epoch ms, datetime, ISO string or a template such
        as ``"{{ data_interval_end }}"``); default: the time of the report.
    :param exception_chars: longest exception text in the default failure message.
    """

    template_fields: Sequence[str] = ("external_id", "message", "created_time", "cognite_conn_id")

    def __init__(
        self,
        external_id: str,
        cognite_conn_id: str = CogniteHook.default_conn_name,
        *,
        status: str | None = None,
        message: str | None = None,
        created_time: int | datetime | str | None = None,
        exception_chars: int = EXCEPTION_CHARS,
    ) -> None:
        super().__init__()
        if not _is_template(external_id):
            validate_extpipe_external_id(external_id)
        if status is not None:
            validate_extpipe_status(status)
        if message is not None and not isinstance(message, str):
            raise ValueError(f"message must be a string (or a template), got {type(message).__name__}.")
        if created_time is not None and not _is_template(created_time):
            to_epoch_ms(created_time, "created_time")
        if isinstance(exception_chars, bool) or not isinstance(exception_chars, int) or exception_chars < 1:
            raise ValueError(f"exception_chars must be a positive integer, got {exception_chars!r}.")
        if not isinstance(cognite_conn_id, str) or not cognite_conn_id:
            raise ValueError(f"cognite_conn_id must be a connection id, got {cognite_conn_id!r}.")
        self.external_id = external_id
        self.cognite_conn_id = cognite_conn_id
        self.status = status
        self.message = message
        self.created_time = created_time
        self.exception_chars = exception_chars

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render the templated attributes in place (call it on a copy: :meth:`__call__` does)."""
        if jinja_env is None:
            jinja_env = self.get_template_env(dag=_template_dag(context))
        self._do_render_template_fields(self, self.template_fields, context, jinja_env, set())

    def _render(self, template: Any, context: Any, dag: Any = None) -> Any:
        # skip BaseNotifier._render, which would fall back to a DAG that cannot render
        return super(BaseNotifier, self)._render(template, context, dag or _template_dag(context))

    def __call__(self, *args: Any) -> None:
        """Run as an Airflow callback: ``callback(context)``. Never raises."""
        try:
            if len(args) != 1 or not isinstance(args[0], Mapping):
                self.log.error("%s expects to be called with the Airflow context; got %d argument(s). "
                               "Nothing reported.", type(self).__name__, len(args))
                return
            context: Any = args[0]
            # render a copy: the same object serves many tasks and runs (dag.test runs them in one process)
            rendered = copy.copy(self)
            rendered.render_template_fields(context)
            rendered.notify(context)
        except Exception as err:
            target = self.external_id if not _is_template(self.external_id) else "(templated)"
            self.log.error("Could not report the run to CDF extraction pipeline %s: %s",
                           target, redact_secrets(f"{type(err).__name__}: {err}"))

    def notify(self, context: Context) -> None:
        """Report one run for ``context`` (raises on failure; :meth:`__call__` logs instead)."""
        status = self.status or decide_status(context)
        if status is None:
            self.log.warning("Cannot tell from the callback context whether this is a success or a "
                             "failure; nothing reported to extraction pipeline %r. Pass status='success', "
                             "'failure' or 'seen' to force one.", self.external_id)
            return
        hook = CogniteHook(self.cognite_conn_id)
        if self.message is not None:
            message = str(self.message)
        else:
            message = describe_context(context, status, self.exception_chars)
        # Airflow's masker knows the secrets read so far; the connection's own are added here
        message = Redactor(hook.resolved.secrets)(redact_secrets(message))
        created = self.created_time if self.created_time not in (None, "") else datetime.now(timezone.utc)
        item = CogniteHook.extpipe_run_item(self.external_id, status, message, created)
        run = hook.report_extpipe_run(item)
        self.log.info("Reported %r to CDF extraction pipeline %r (run id %s).", status, self.external_id,
                      run.get("id"))


__all__ = ["CogniteExtractionPipelineRunCallback", "decide_status", "describe_context"]
