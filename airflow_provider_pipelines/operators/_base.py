"""What every run-and-wait operator of this provider shares."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_pipelines._compat import BaseOperator, conf, task_state_store
from airflow_provider_pipelines.jobs.base import (
    JobKind,
    JobSnapshot,
    PollPolicy,
    read_once,
    snapshot_from_event,
    validate_positive,
    wait_for_job,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_pipelines.hooks._base import PipelinesHook
    from airflow_provider_pipelines.triggers.base import JobTrigger

log = logging.getLogger(__name__)

#: Default longest wait for a remote job (like the dbt Cloud provider).
DEFAULT_TIMEOUT = 7 * 24 * 3600.0


def default_deferrable() -> bool:
    return conf.getboolean("operators", "default_deferrable", fallback=False)


def as_seconds(name: str, value: float | timedelta | None, *, allow_none: bool = True) -> float | None:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    validate_positive(name, value, allow_none=allow_none)
    return None if value is None else float(value)


class JobOperatorMixin:
    """Wait for a remote job in the worker or defer to a trigger, with one deadline.

    Used as a mixin on :class:`~airflow.sdk.BaseOperator` subclasses. The constructor arguments
    are validated at DAG parse time: non-positive intervals fail there, not on the first poll.
    """

    deferrable: bool
    wait_for_completion: bool
    execution_timeout: timedelta | None

    def _init_wait(
        self,
        *,
        wait_for_completion: bool,
        deferrable: bool,
        poll_interval: float | timedelta,
        max_poll_interval: float | timedelta | None,
        timeout: float | timedelta | None,
    ) -> None:
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = as_seconds("poll_interval", poll_interval, allow_none=False)
        self.max_poll_interval = as_seconds("max_poll_interval", max_poll_interval)
        self.timeout = as_seconds("timeout", timeout)
        if deferrable and not wait_for_completion:
            log.warning("deferrable=True has no effect when wait_for_completion=False.")

    @property
    def poll_policy(self) -> PollPolicy:
        assert self.poll_interval is not None
        return PollPolicy(self.poll_interval, self.max_poll_interval)

    def compute_deadline(self) -> float | None:
        """An absolute wall-clock deadline: ``timeout`` and ``execution_timeout``, whichever is first."""
        now = time.time()
        candidates = []
        if self.timeout is not None:
            candidates.append(now + self.timeout)
        if self.execution_timeout is not None:
            # keep a margin so the trigger's timeout event arrives before Airflow kills the task
            candidates.append(now + max(1.0, self.execution_timeout.total_seconds() - 5))
        return min(candidates) if candidates else None

    def wait_or_defer(
        self,
        *,
        kind: JobKind,
        hook: PipelinesHook,
        ref: dict[str, Any],
        trigger_class: type[JobTrigger],
        conn_id: str,
        deadline: float | None,
        method_name: str = "execute_complete",
        resume_kwargs: Mapping[str, Any] | None = None,
        cancel_on_kill: bool = False,
        hook_params: dict[str, Any] | None = None,
    ) -> JobSnapshot:
        """Return the terminal snapshot (worker mode), or defer (raises ``TaskDeferred``).

        In deferrable mode the status is checked once first, so a job that is already over does
        not cost a deferral. ``defer(timeout=None)`` is deliberate: the trigger sends its own
        ``timeout`` event, so the operator can still explain (and act on) a timeout.
        """
        first, error = read_once(kind, hook, ref)
        if not self.deferrable or (first is not None and first.terminal):
            return wait_for_job(kind, hook, ref, self.poll_policy, deadline, first=first, first_error=error)
        if error is not None:
            log.warning("Reading %s %s failed (%s); deferring, the trigger will read it again.",
                        kind.label, kind.describe(ref), error)
        trigger = trigger_class(
            conn_id=conn_id,
            ref=ref,
            deadline=deadline,
            poll_interval=self.poll_policy.interval,
            max_poll_interval=self.poll_policy.max_interval,
            cancel_on_kill=cancel_on_kill,
            hook_params=hook_params,
        )
        defer = self.defer  # type: ignore[attr-defined]
        defer(trigger=trigger, method_name=method_name, kwargs=dict(resume_kwargs or {}), timeout=None)
        raise AssertionError("unreachable: defer() raises TaskDeferred")  # pragma: no cover

    @staticmethod
    def snapshot_from_event(event: dict[str, Any] | None, kind: JobKind) -> JobSnapshot:
        return snapshot_from_event(event, kind)

    # ---- reattach support -------------------------------------------------------------------

    def remembered_job(self, context: Context, key: str) -> dict[str, Any] | None:
        """The job an earlier try of this task started (Airflow 3.3+ task state store)."""
        store = task_state_store(context)
        if store is None:
            return None
        try:
            value = store.get(key)
        except Exception:
            log.warning("Could not read the task state store; continuing without it.", exc_info=True)
            return None
        return dict(value) if isinstance(value, dict) else None

    def remember_job(self, context: Context, key: str, ref: dict[str, Any]) -> None:
        store = task_state_store(context)
        if store is None:
            return
        try:
            store.set(key, ref, retention=timedelta(days=30))
        except Exception:
            log.warning("Could not write the task state store; a retry may not reattach.", exc_info=True)

    def forget_job(self, context: Context, key: str) -> None:
        store = task_state_store(context)
        if store is None:
            return
        try:
            delete = getattr(store, "delete", None)
            if delete is not None:
                delete(key)
        except Exception:
            log.debug("Could not clear the task state store", exc_info=True)


def push_xcom(context: Context, key: str, value: Any) -> None:
    """Push an XCom right away (before waiting), so it exists even if the task fails."""
    ti = context.get("ti") or context.get("task_instance")  # type: ignore[call-overload]
    if ti is not None:
        ti.xcom_push(key=key, value=value)


__all__ = [
    "DEFAULT_TIMEOUT",
    "BaseOperator",
    "JobOperatorMixin",
    "as_seconds",
    "default_deferrable",
    "push_xcom",
]
