"""The one job-watching mechanism.

Every remote job this provider waits for (entity matching runs, estimate-quality jobs,
extraction pipeline reports, Edge Impulse pipeline runs, HERE operations and jobs) has the
same life: start, poll a status until it is terminal, map the terminal state to success or
failure, return a result. This module writes that loop once; a :class:`JobKind` contributes
only *how to read my status* (``fetch``/``afetch``) and *what terminal means* (``interpret``).

The same loop serves the operators' in-worker wait (:func:`wait_for_job`), the sensors
(:meth:`JobKind.read` once per poke) and the triggers (:func:`awatch_job`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_pipelines._compat import AirflowException
from airflow_provider_pipelines.hooks._http import ApiError

if TYPE_CHECKING:
    from airflow_provider_pipelines.hooks._base import PipelinesHook

log = logging.getLogger(__name__)

#: Event statuses a trigger may send; anything else is rejected by the operator.
EVENT_STATUSES = frozenset({"success", "failed", "timeout", "error"})


class Outcome(str, enum.Enum):
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


@dataclass
class JobSnapshot:
    """One reading of a remote job: the vendor's state and what it means."""

    state: str
    outcome: Outcome
    message: str | None = None
    #: JSON-serialisable, secret-free summary of the job (goes to XCom / trigger events)
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.outcome is not Outcome.RUNNING

    def to_event(self, kind: str, ref: dict[str, Any]) -> dict[str, Any]:
        return {
            "status": "success" if self.outcome is Outcome.SUCCESS else "failed",
            "kind": kind,
            "ref": ref,
            "state": self.state,
            "message": self.message,
            "result": self.result,
        }


class JobTimeoutError(AirflowException):
    """The deadline passed while the remote job was still running."""

    def __init__(self, message: str, last: JobSnapshot | None = None) -> None:
        super().__init__(message)
        self.last = last


class JobFailedError(AirflowException):
    """The remote job ended in a failure state (the message carries the vendor's reason)."""


class JobKind(ABC):
    """How to read one kind of remote job. Stateless: one instance per kind is enough."""

    #: stable identifier, also used in trigger events
    name: ClassVar[str]
    #: human name, e.g. "entity matching pipeline run"
    label: ClassVar[str]
    #: how a user keeps waiting after a timeout, e.g. the sensor to use
    sensor_name: ClassVar[str] = ""
    #: whether the vendor API can cancel this job
    cancellable: ClassVar[bool] = False

    @property
    def title(self) -> str:
        """:attr:`label` for the start of a sentence (``str.capitalize`` would turn "HERE" into "Here")."""
        return self.label[:1].upper() + self.label[1:]

    @abstractmethod
    def describe(self, ref: dict[str, Any]) -> str:
        """Human description of the job, e.g. ``"pipeline 7 run 42"``."""

    @abstractmethod
    def fetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        """Read the job's raw status document (sync)."""

    @abstractmethod
    async def afetch(self, hook: PipelinesHook, ref: dict[str, Any]) -> Any:
        """Read the job's raw status document (async twin of :meth:`fetch`)."""

    @abstractmethod
    def interpret(self, payload: Any, ref: dict[str, Any]) -> JobSnapshot:
        """Map the raw status to a :class:`JobSnapshot` (pure, shared by both paths)."""

    def read(self, hook: PipelinesHook, ref: dict[str, Any]) -> JobSnapshot:
        return self.interpret(self.fetch(hook, ref), ref)

    async def aread(self, hook: PipelinesHook, ref: dict[str, Any]) -> JobSnapshot:
        return self.interpret(await self.afetch(hook, ref), ref)

    def cancel(self, hook: PipelinesHook, ref: dict[str, Any]) -> bool:
        """Cancel the remote job where the API allows it; ``False`` when it cannot."""
        return False

    async def acancel(self, hook: PipelinesHook, ref: dict[str, Any]) -> bool:
        return False

    def resume_hint(self, ref: dict[str, Any]) -> str:
        if not self.sensor_name:
            return ""
        args = ", ".join(f"{k}={v!r}" for k, v in ref.items())
        return f" To keep waiting for it, use {self.sensor_name}({args})."

    def timeout_message(self, ref: dict[str, Any], last: JobSnapshot | None, waited: float | None) -> str:
        state = last.state if last else "unknown"
        waited_text = f" after {waited:.0f} s" if waited is not None else ""
        return (
            f"Timed out{waited_text} waiting for {self.label} {self.describe(ref)}; its last status was "
            f"{state!r}. The remote job was left running.{self.resume_hint(ref)}"
        )


@dataclass(frozen=True)
class PollPolicy:
    """Poll interval with growth up to a maximum, jitter, and tolerance of transient failures."""

    interval: float = 10.0
    #: the interval grows by ``growth`` per poll up to this value (``None``: 6x interval, <= 300 s)
    max_interval: float | None = None
    growth: float = 1.25
    jitter: float = 0.1
    #: consecutive polls that may fail with a retryable error (after the HTTP core's own retries)
    max_poll_errors: int = 3

    def __post_init__(self) -> None:
        validate_positive("poll_interval", self.interval)
        if self.max_interval is not None:
            validate_positive("max_poll_interval", self.max_interval)
        if not (isinstance(self.growth, (int, float)) and math.isfinite(self.growth) and self.growth >= 1):
            raise ValueError(f"growth must be a finite number >= 1, got {self.growth!r}.")
        if not (isinstance(self.jitter, (int, float)) and 0 <= self.jitter < 1):
            raise ValueError(f"jitter must be a fraction in [0, 1), got {self.jitter!r}.")
        if isinstance(self.max_poll_errors, bool) or not isinstance(self.max_poll_errors, int) \
                or self.max_poll_errors < 0:
            raise ValueError(f"max_poll_errors must be an integer >= 0, got {self.max_poll_errors!r}.")

    @property
    def ceiling(self) -> float:
        if self.max_interval is not None:
            return max(self.max_interval, self.interval)
        return max(self.interval, min(self.interval * 6, 300.0))

    def next_interval(self, current: float) -> float:
        return min(self.ceiling, current * self.growth)

    def jittered(self, seconds: float) -> float:
        return max(0.0, seconds * (1 + random.uniform(-self.jitter, self.jitter)))

    def first_delay(self) -> float:
        """A random first delay, uniform over one interval, so triggers resumed together do not
        poll in lockstep: after a triggerer restart their polls are spread evenly at once (a
        spread over a fraction of the interval kept 5,000 triggers polling within the same second
        of every interval, see ``docs/performance.md``). Never later than a regular poll, and the
        operators and sensors check the status once before they defer. ``jitter=0``: no delay.
        """
        return random.uniform(0, self.interval) if self.jitter > 0 else 0.0

    @classmethod
    def shared(cls, interval: float, max_interval: float | None = None) -> PollPolicy:
        """An equal policy made before, if any (policies are immutable): thousands of triggers
        with the same intervals then hold one object instead of one each."""
        key = (type(interval), interval, type(max_interval), max_interval)
        try:
            policy = _SHARED_POLICIES.get(key)
        except TypeError:  # unhashable, so not a number: the constructor says what is wrong
            return cls(interval, max_interval)
        if policy is None:
            policy = cls(interval, max_interval)
            if len(_SHARED_POLICIES) < 256:
                _SHARED_POLICIES[key] = policy
        return policy

    def to_kwargs(self) -> dict[str, Any]:
        return {"poll_interval": self.interval, "max_poll_interval": self.max_interval}


_SHARED_POLICIES: dict[tuple[Any, ...], PollPolicy] = {}


def validate_positive(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Fail with a clear message when ``value`` is not a positive, finite number of seconds."""
    if value is None and allow_none:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}.")


# Indirections so tests can replace the clock and the sleeps of both loops without touching
# the global ``time``/``asyncio`` modules.
def _now() -> float:
    return time.time()


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _asleep(seconds: float) -> Awaitable[None]:
    # returns asyncio's coroutine rather than wrapping it in one more: every sleeping trigger
    # keeps this chain alive, and each extra frame is more work for the garbage collector
    return asyncio.sleep(seconds)


class _Watch:
    """The state machine behind both loops (so the sync and async loops cannot drift)."""

    def __init__(
        self, kind: JobKind, ref: dict[str, Any], policy: PollPolicy, deadline: float | None
    ) -> None:
        self.kind = kind
        self.ref = ref
        self.policy = policy
        self.deadline = deadline
        self.started = _now()
        self.last: JobSnapshot | None = None
        self.errors = 0
        self.interval = policy.interval

    def on_snapshot(self, snap: JobSnapshot) -> float | None:
        """``None`` when terminal, else seconds to sleep (raises on timeout)."""
        self.errors = 0
        last = self.last
        if last is None or last.state != snap.state:
            log.info("%s %s is %s.", self.kind.title, self.kind.describe(self.ref), snap.state)
            self.last = snap
        elif snap != last:
            self.last = snap
        else:  # an equal reading keeps the object already held: a waiting trigger then makes no
            snap = last  # new long-lived object per poll (fewer objects for the full collections)
        if snap.terminal:
            return None
        return self._sleep(None)

    def on_error(self, err: ApiError) -> float:
        self.errors += 1
        if not err.retryable or self.errors > self.policy.max_poll_errors:
            raise err
        log.warning("Polling %s %s failed (%s); will poll again.",
                    self.kind.label, self.kind.describe(self.ref), err)
        return self._sleep(err.retry_after)

    def _sleep(self, retry_after: float | None) -> float:
        now = _now()
        if self.deadline is not None and now >= self.deadline:
            raise JobTimeoutError(
                self.kind.timeout_message(self.ref, self.last, now - self.started), self.last
            )
        sleep = self.policy.jittered(self.interval)
        if retry_after is not None:
            sleep = max(sleep, retry_after)
        self.interval = self.policy.next_interval(self.interval)
        if self.deadline is not None:
            sleep = min(sleep, max(0.0, self.deadline - now))
        return sleep


def read_once(
    kind: JobKind, hook: PipelinesHook, ref: dict[str, Any]
) -> tuple[JobSnapshot | None, ApiError | None]:
    """One status read before waiting: ``(snapshot, None)``, or ``(None, error)`` for a retryable error.

    The read before the wait is a poll like the others: a transient failure there (after the
    HTTP core's own retries) must not fail a task whose job is running. Hand the error to
    :func:`wait_for_job` (``first_error``), which counts it like any failed poll; a deferring
    task simply defers and lets its trigger read again. Other errors are raised.
    """
    try:
        return kind.read(hook, ref), None
    except ApiError as err:
        if not err.retryable:
            raise
        return None, err


def wait_for_job(
    kind: JobKind,
    hook: PipelinesHook,
    ref: dict[str, Any],
    policy: PollPolicy,
    deadline: float | None,
    first: JobSnapshot | None = None,
    first_error: ApiError | None = None,
) -> JobSnapshot:
    """Poll in the worker until the job is terminal; raise :class:`JobTimeoutError` at the deadline.

    ``first``/``first_error``: the result of a read already made (see :func:`read_once`).
    """
    watch = _Watch(kind, ref, policy, deadline)
    if first is not None:
        delay: float | None = watch.on_snapshot(first)
    elif first_error is not None:
        delay = watch.on_error(first_error)
    else:
        delay = 0.0
    while delay is not None:
        if delay:
            _sleep(delay)
        try:
            delay = watch.on_snapshot(kind.read(hook, ref))
        except ApiError as err:
            delay = watch.on_error(err)
    assert watch.last is not None
    return watch.last


async def awatch_job(
    kind: JobKind,
    hook: PipelinesHook,
    ref: dict[str, Any],
    policy: PollPolicy,
    deadline: float | None,
    *,
    jitter_first: bool = True,
) -> JobSnapshot:
    """Async twin of :func:`wait_for_job`, for triggers (never blocks the loop)."""
    watch = _Watch(kind, ref, policy, deadline)
    delay: float | None = policy.first_delay() if jitter_first else 0.0
    if deadline is not None and delay:
        delay = min(delay, max(0.0, deadline - _now()))
    while delay is not None:
        if delay:
            await _asleep(delay)
        try:  # afetch and interpret directly (what ``kind.aread`` does, one coroutine less per poll)
            delay = watch.on_snapshot(kind.interpret(await kind.afetch(hook, ref), ref))
        except ApiError as err:
            delay = watch.on_error(err)
    assert watch.last is not None
    return watch.last


def snapshot_from_event(event: dict[str, Any] | None, kind: JobKind) -> JobSnapshot:
    """Validate a trigger event (guards against triggerer/worker version skew)."""
    if not isinstance(event, dict) or event.get("status") not in EVENT_STATUSES:
        raise AirflowException(f"Unexpected trigger event for a {kind.label}: {event!r}")
    status = event["status"]
    message = event.get("message") or ""
    if status == "timeout":
        raise JobTimeoutError(message)
    if status == "error":
        raise AirflowException(message or f"Waiting for the {kind.label} failed.")
    outcome = Outcome.SUCCESS if status == "success" else Outcome.FAILED
    result = dict(event.get("result") or {})
    return JobSnapshot(str(event.get("state", "")), outcome, event.get("message"), result)
