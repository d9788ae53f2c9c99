"""The generic job trigger: each vendor trigger only names its job kind and hook."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_pipelines.hooks._base import PipelinesHook, ResolvedConnection
from airflow_provider_pipelines.hooks._http import ApiError, acquire_session, release_session
from airflow_provider_pipelines.jobs.base import JobKind, JobTimeoutError, PollPolicy, awatch_job

log = logging.getLogger(__name__)

#: Triggers of one event loop that start within this many seconds of each other share the
#: resolution of their connection (lookup, secret masking, parsing, auth object; each trigger
#: still has its own hook). A triggerer resuming thousands of triggers after a restart thus looks
#: each connection up once instead of once per trigger (measured: ~0.55 ms of loop time per
#: trigger, see ``docs/performance.md``). An edited connection reaches triggers that start after
#: at most this long; running triggers keep the connection they started with, as before.
CONNECTION_SHARE_SECONDS = 60.0


def _clock() -> float:
    """The share window's clock (an indirection, so tests can move it without waiting)."""
    return time.monotonic()


class _ConnectionShare:
    """Resolved connections shared by the triggers of one event loop, per hook class and conn id."""

    def __init__(self) -> None:
        self._entries: dict[tuple[type[PipelinesHook], str], tuple[float, ResolvedConnection]] = {}
        self._locks: dict[tuple[type[PipelinesHook], str], asyncio.Lock] = {}

    async def attach(self, hook: PipelinesHook) -> None:
        """Resolve ``hook``'s connection, reusing a fresh one another trigger resolved (single-flight)."""
        if hook._core is not None:
            return
        key = (type(hook), hook.conn_id)
        async with self._locks.setdefault(key, asyncio.Lock()):
            now = _clock()
            entry = self._entries.get(key)
            if entry is not None and now - entry[0] < CONNECTION_SHARE_SECONDS:
                hook._install(entry[1])
                return
            await hook.acore()  # a failed lookup is not shared: the next trigger tries again
            self._entries[key] = (now, hook.resolved)


_shares: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ConnectionShare] = weakref.WeakKeyDictionary()


def _connection_share() -> _ConnectionShare:
    loop = asyncio.get_running_loop()
    share = _shares.get(loop)
    if share is None:
        share = _shares[loop] = _ConnectionShare()
    return share


def _require_json(name: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"Trigger argument {name!r} must be JSON-serialisable: {err}") from None


class JobTrigger(BaseTrigger):
    """Watch one remote job from the triggerer and send exactly one terminal event.

    All arguments are JSON values, so the trigger survives serialisation and a triggerer
    restart: ``deadline`` is an absolute wall-clock time (epoch seconds) computed by the
    operator, never a duration. No secret is ever a trigger argument: the hook resolves the
    connection inside the triggerer.

    Events: ``{"status": "success" | "failed" | "timeout" | "error", "kind", "ref", "state",
    "message", "result"}``.

    :param conn_id: the Airflow connection id.
    :param ref: the job's identifiers (JSON object).
    :param deadline: absolute epoch seconds after which a ``timeout`` event is sent.
    :param poll_interval: seconds between polls (grows up to ``max_poll_interval``).
    :param cancel_on_kill: on a user kill (Airflow 3.3+ ``on_kill``), cancel the remote job when the
        vendor API allows it.
    :param hook_params: extra JSON keyword arguments for the hook (e.g. a correlation id).
    """

    kind: ClassVar[JobKind]
    hook_class: ClassVar[type[PipelinesHook]]

    def __init__(
        self,
        conn_id: str,
        ref: dict[str, Any],
        deadline: float | None,
        poll_interval: float,
        max_poll_interval: float | None = None,
        cancel_on_kill: bool = False,
        hook_params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        _require_json("ref", ref)
        _require_json("hook_params", hook_params)
        self.conn_id = conn_id
        self.ref = dict(ref)
        self.deadline = deadline
        self.policy = PollPolicy.shared(poll_interval, max_poll_interval)
        self.cancel_on_kill = cancel_on_kill
        self.hook_params = dict(hook_params or {})
        self._hook: PipelinesHook | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "ref": self.ref,
                "deadline": self.deadline,
                "poll_interval": self.policy.interval,
                "max_poll_interval": self.policy.max_interval,
                "cancel_on_kill": self.cancel_on_kill,
                "hook_params": self.hook_params,
            },
        )

    @property
    def hook(self) -> PipelinesHook:
        """One hook per trigger: its connection and token are looked up once, not per poll.

        Inside the triggerer the connection's resolution is shared with the other triggers of the
        loop for :data:`CONNECTION_SHARE_SECONDS`; the token cache is shared process-wide.
        """
        if self._hook is None:
            self._hook = self.hook_class(self.conn_id, **self.hook_params)
        return self._hook

    def _event(
        self, status: str, message: str | None, state: str | None = None, **extra: Any
    ) -> TriggerEvent:
        payload = {"status": status, "kind": self.kind.name, "ref": self.ref, "state": state,
                   "message": message, "result": {}}
        payload.update(extra)
        return TriggerEvent(payload)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            session = acquire_session()  # held for the whole wait: one session for the loop's triggers
            try:
                await _connection_share().attach(self.hook)
                snap = await awatch_job(self.kind, self.hook, self.ref, self.policy, self.deadline)
            finally:
                await release_session(session)
        except JobTimeoutError as err:
            yield self._event("timeout", str(err), err.last.state if err.last else None)
            return
        except ApiError as err:
            yield self._event("error", str(err))
            return
        except Exception as err:
            log.exception("Unexpected error while watching %s %s",
                          self.kind.label, self.kind.describe(self.ref))
            yield self._event("error", f"Unexpected error while watching {self.kind.label} "
                                       f"{self.kind.describe(self.ref)}: {type(err).__name__}: {err}")
            return
        yield TriggerEvent(snap.to_event(self.kind.name, self.ref))

    async def on_kill(self) -> None:
        """Airflow 3.3+: called only on a user kill (never on a triggerer restart)."""
        if not (self.cancel_on_kill and self.kind.cancellable):
            return
        session = acquire_session()
        try:
            await _connection_share().attach(self.hook)
            cancelled = await self.kind.acancel(self.hook, self.ref)
        finally:
            await release_session(session)
        if cancelled:
            log.info("Cancelled %s %s after a user kill.", self.kind.label, self.kind.describe(self.ref))
