"""What every sensor of this provider shares: one poke = one read of the job kind."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import PokeReturnValue

from airflow_provider_pipelines._compat import (
    AirflowException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
)
from airflow_provider_pipelines.jobs.base import (
    JobFailedError,
    JobKind,
    JobSnapshot,
    JobTimeoutError,
    Outcome,
    read_once,
    snapshot_from_event,
    validate_positive,
)
from airflow_provider_pipelines.operators._base import default_deferrable

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_pipelines.hooks._base import PipelinesHook
    from airflow_provider_pipelines.triggers.base import JobTrigger


class JobSensor(BaseSensorOperator):
    """Wait for a remote job: poke mode (one status read per poke) or deferrable.

    Subclasses set :attr:`kind`, implement :meth:`make_hook`, :meth:`job_ref`,
    :meth:`trigger_class` and may override :meth:`on_terminal` (quality gates, failure text).
    """

    kind: ClassVar[JobKind]
    conn_id_attr: ClassVar[str]

    def __init__(self, *, deferrable: bool | None = None, **kwargs: Any) -> None:
        # Before BaseSensorOperator's own check, which raises AirflowException on Airflow 3.0 and
        # ValueError later, with a vaguer text: the same clear ValueError on every release.
        for name in ("poke_interval", "timeout"):
            if name in kwargs:
                value = kwargs[name]
                validate_positive(name, value.total_seconds() if isinstance(value, timedelta) else value)
        super().__init__(**kwargs)
        validate_positive("poke_interval", self.poke_interval)
        validate_positive("timeout", self.timeout)
        self.deferrable = default_deferrable() if deferrable is None else deferrable

    # ---- subclass API ----------------------------------------------------------------------

    def make_hook(self) -> PipelinesHook:
        raise NotImplementedError

    def job_ref(self, context: Context) -> dict[str, Any]:
        raise NotImplementedError

    def trigger_class(self) -> type[JobTrigger]:
        raise NotImplementedError

    def trigger_hook_params(self, context: Context) -> dict[str, Any] | None:
        """JSON keyword arguments for the trigger's hook (never secrets); none by default."""
        return None

    def on_terminal(self, context: Context, ref: dict[str, Any], snap: JobSnapshot) -> Any:
        """Return the XCom value on success; raise on failure."""
        if snap.outcome is Outcome.FAILED:
            raise JobFailedError(
                f"{self.kind.title} {self.kind.describe(ref)} ended {snap.state}: "
                f"{snap.message or 'no message from the vendor'}"
            )
        return snap.result

    # ---- mechanics ---------------------------------------------------------------------------

    @property
    def conn_id(self) -> str:
        return str(getattr(self, self.conn_id_attr))

    def poke(self, context: Context) -> bool | PokeReturnValue:
        ref = self.job_ref(context)
        snap = self.kind.read(self.make_hook(), ref)
        if not snap.terminal:
            self.log.info("%s %s is %s.", self.kind.title, self.kind.describe(ref), snap.state)
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.on_terminal(context, ref, snap))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        ref = self.job_ref(context)
        hook = self.make_hook()
        snap, error = read_once(self.kind, hook, ref)
        if snap is not None and snap.terminal:
            return self._deferred_terminal(context, ref, snap)
        if error is not None:
            self.log.warning("Reading %s %s failed (%s); deferring, the trigger will read it again.",
                             self.kind.label, self.kind.describe(ref), error)
        trigger = self.trigger_class()(
            conn_id=self.conn_id,
            ref=ref,
            deadline=time.time() + float(self.timeout),
            poll_interval=float(self.poke_interval),
            hook_params=self.trigger_hook_params(context),
        )
        self.defer(trigger=trigger, method_name="execute_complete", timeout=None)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        try:
            snap = snapshot_from_event(event, self.kind)
        except JobTimeoutError as err:
            if self.soft_fail:
                raise AirflowSkipException(f"{err} (soft_fail=True: skipping)") from None
            raise AirflowSensorTimeout(str(err)) from None
        ref = dict((event or {}).get("ref") or {})
        return self._deferred_terminal(context, ref, snap)

    def _deferred_terminal(self, context: Context, ref: dict[str, Any], snap: JobSnapshot) -> Any:
        """:meth:`on_terminal` with ``soft_fail`` honoured, as poke mode does through the base class."""
        try:
            return self.on_terminal(context, ref, snap)
        except AirflowSkipException:
            raise
        except AirflowException as err:
            if self.soft_fail:
                raise AirflowSkipException(f"{err} (soft_fail=True: skipping)") from err
            raise
