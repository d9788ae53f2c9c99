"""The job-watching mechanism: one state machine behind ``wait_for_job`` and ``awatch_job``.

The clock and both sleeps of :mod:`airflow_provider_pipelines.jobs.base` are replaced by a fake
that advances time by exactly what the loop asks for, so intervals, jitter and deadlines are
checked exactly and instantly.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_pipelines._compat import AirflowException
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.jobs import base
from airflow_provider_pipelines.jobs.base import (
    EVENT_STATUSES,
    JobKind,
    JobSnapshot,
    JobTimeoutError,
    Outcome,
    PollPolicy,
    awatch_job,
    snapshot_from_event,
    validate_positive,
    wait_for_job,
)

REF = {"pipeline_id": 7, "job_id": 42}


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(base, "_now", fake.time)
    monkeypatch.setattr(base, "_sleep", fake.sleep)
    monkeypatch.setattr(base, "_asleep", fake.asleep)
    return fake


def retryable(retry_after: float | None = None, status: int = 503) -> ApiError:
    return ApiError(vendor="Acme", operation="get run", resource="run 42", status=status,
                    vendor_message="busy", retryable=True, retry_after=retry_after)


def fatal(status: int = 404) -> ApiError:
    return ApiError(vendor="Acme", operation="get run", resource="run 42", status=status,
                    vendor_message="gone")


class ScriptedKind(JobKind):
    """Answers polls from a script of states ("Running", "Completed", "Failed") or ApiErrors."""

    name = "test.scripted"
    label = "test run"
    sensor_name = "TestRunSensor"

    def __init__(self, *script: str | ApiError, repeat_last: bool = True) -> None:
        self.script = list(script)
        self.repeat_last = repeat_last
        self.polls = 0
        self.poll_times: list[float] = []
        self.clock: FakeTime | None = None

    def describe(self, ref: dict[str, Any]) -> str:
        return f"(pipeline {ref['pipeline_id']}, job {ref['job_id']})"

    def _next(self) -> Any:
        self.polls += 1
        if self.clock is not None:
            self.poll_times.append(self.clock.now)
        index = self.polls - 1
        if index >= len(self.script):
            assert self.repeat_last, "polled more often than scripted"
            index = len(self.script) - 1
        item = self.script[index]
        if isinstance(item, ApiError):
            raise item
        return {"status": item, "errorMessage": "matcher crashed" if item == "Failed" else None}

    def fetch(self, hook: Any, ref: dict[str, Any]) -> Any:
        return self._next()

    async def afetch(self, hook: Any, ref: dict[str, Any]) -> Any:
        return self._next()

    def interpret(self, payload: Any, ref: dict[str, Any]) -> JobSnapshot:
        states = {"Completed": Outcome.SUCCESS, "Failed": Outcome.FAILED}
        outcome = states.get(payload["status"], Outcome.RUNNING)
        return JobSnapshot(payload["status"], outcome, payload["errorMessage"], {"job_id": ref["job_id"]})


Watcher = Callable[..., JobSnapshot]


def run_sync(kind: JobKind, policy: PollPolicy, deadline: float | None, **kw: Any) -> JobSnapshot:
    return wait_for_job(kind, None, REF, policy, deadline, **kw)  # type: ignore[arg-type]


def run_async(kind: JobKind, policy: PollPolicy, deadline: float | None, **kw: Any) -> JobSnapshot:
    return asyncio.run(awatch_job(kind, None, REF, policy, deadline, jitter_first=False, **kw))  # type: ignore[arg-type]


both = pytest.mark.parametrize("watch", [run_sync, run_async], ids=["wait_for_job", "awatch_job"])


# ----------------------------------------------------------------------------------------------
# Intervals and jitter
# ----------------------------------------------------------------------------------------------


@both
def test_interval_grows_up_to_the_cap(clock: FakeTime, watch: Watcher) -> None:
    kind = ScriptedKind(*["Running"] * 8, "Completed")
    snap = watch(kind, PollPolicy(10, max_interval=30, growth=1.25, jitter=0), None)
    assert snap.state == "Completed" and snap.outcome is Outcome.SUCCESS and kind.polls == 9
    assert clock.sleeps == pytest.approx([10, 12.5, 15.625, 19.53125, 24.4140625, 30, 30, 30])


def test_default_cap_is_six_intervals_at_most_five_minutes() -> None:
    assert PollPolicy(10).ceiling == 60
    assert PollPolicy(100).ceiling == 300
    assert PollPolicy(400).ceiling == 400  # never below the interval itself
    assert PollPolicy(60, max_interval=30).ceiling == 60


@both
def test_jitter_stays_within_bounds(clock: FakeTime, watch: Watcher) -> None:
    kind = ScriptedKind(*["Running"] * 30, "Completed")
    watch(kind, PollPolicy(10, max_interval=10, jitter=0.2), None)
    assert len(clock.sleeps) == 30
    assert all(8 <= s <= 12 for s in clock.sleeps)
    assert len({round(s, 6) for s in clock.sleeps}) > 1


def test_first_poll_of_a_trigger_is_jittered(clock: FakeTime) -> None:
    kind = ScriptedKind("Completed")
    asyncio.run(awatch_job(kind, None, REF, PollPolicy(10, jitter=0.1), None))  # type: ignore[arg-type]
    assert len(clock.sleeps) == 1 and 0 <= clock.sleeps[0] <= 10.0
    delays = [PollPolicy(10, jitter=0.1).first_delay() for _ in range(400)]
    # spread over the whole interval (not crowded into its first seconds), none longer than it
    assert all(0 <= d <= 10.0 for d in delays) and min(delays) < 2.0 and max(delays) > 8.0
    assert PollPolicy(10, jitter=0).first_delay() == 0.0


def test_worker_wait_starts_from_a_known_first_snapshot(clock: FakeTime) -> None:
    kind = ScriptedKind("Completed")
    first = JobSnapshot("Queued", Outcome.RUNNING)
    snap = run_sync(kind, PollPolicy(5, jitter=0), None, first=first)
    assert snap.state == "Completed" and clock.sleeps == [5] and kind.polls == 1


def test_terminal_first_snapshot_returns_without_polling(clock: FakeTime) -> None:
    kind = ScriptedKind("Running")
    first = JobSnapshot("Failed", Outcome.FAILED, "bad input")
    assert run_sync(kind, PollPolicy(5), None, first=first) is first
    assert kind.polls == 0 and clock.sleeps == []


@both
def test_failed_job_returns_the_failure_snapshot(clock: FakeTime, watch: Watcher) -> None:
    snap = watch(ScriptedKind("Running", "Failed"), PollPolicy(5, jitter=0), None)
    assert snap.outcome is Outcome.FAILED and snap.message == "matcher crashed" and snap.terminal


# ----------------------------------------------------------------------------------------------
# Deadline
# ----------------------------------------------------------------------------------------------


@both
def test_deadline_raises_timeout_with_the_last_status(clock: FakeTime, watch: Watcher) -> None:
    kind = ScriptedKind("Queued", "Running")
    kind.clock = clock
    deadline = clock.now + 25
    with pytest.raises(JobTimeoutError) as info:
        watch(kind, PollPolicy(10, growth=1, jitter=0), deadline)
    # polls at 0, 10, 20 and one last time exactly at the deadline (the last sleep is shortened)
    assert clock.sleeps == [10, 10, 5]
    assert kind.poll_times[-1] == deadline
    assert info.value.last is not None and info.value.last.state == "Running"
    message = str(info.value)
    assert message.startswith("Timed out after 25 s waiting for test run (pipeline 7, job 42)")
    assert "its last status was 'Running'" in message and "The remote job was left running." in message
    assert "TestRunSensor(pipeline_id=7, job_id=42)" in message
    assert isinstance(info.value, AirflowException)


def test_an_equal_reading_keeps_the_snapshot_already_held(clock: FakeTime) -> None:
    # thousands of waiting triggers: an unchanged job makes no new long-lived object per poll,
    # while a changed reading (even with the same state) replaces the one held
    watch = base._Watch(ScriptedKind("Running"), REF, PollPolicy(10, jitter=0), None)
    first = JobSnapshot("Running", Outcome.RUNNING, None, {"progress": 1})
    watch.on_snapshot(first)
    watch.on_snapshot(JobSnapshot("Running", Outcome.RUNNING, None, {"progress": 1}))
    assert watch.last is first
    moved = JobSnapshot("Running", Outcome.RUNNING, None, {"progress": 2})
    watch.on_snapshot(moved)
    assert watch.last is moved
    done = JobSnapshot("Completed", Outcome.SUCCESS, None, {"progress": 2})
    assert watch.on_snapshot(done) is None and watch.last is done


@both
def test_job_finishing_on_the_last_poll_is_not_a_timeout(clock: FakeTime, watch: Watcher) -> None:
    kind = ScriptedKind("Running", "Running", "Completed")
    snap = watch(kind, PollPolicy(10, growth=1, jitter=0), clock.now + 15)
    assert snap.state == "Completed" and clock.sleeps == [10, 5]


def test_deadline_already_passed_polls_once_then_times_out(clock: FakeTime) -> None:
    kind = ScriptedKind("Running")
    with pytest.raises(JobTimeoutError):
        asyncio.run(awatch_job(kind, None, REF, PollPolicy(10), clock.now - 1))  # type: ignore[arg-type]
    assert kind.polls == 1 and clock.sleeps == []


def test_deadline_passed_during_errors_times_out_with_unknown_state(clock: FakeTime) -> None:
    kind = ScriptedKind(retryable(), retryable())
    with pytest.raises(JobTimeoutError, match="its last status was 'unknown'"):
        run_sync(kind, PollPolicy(10, jitter=0), clock.now + 5)


# ----------------------------------------------------------------------------------------------
# Poll errors
# ----------------------------------------------------------------------------------------------


@both
def test_retry_after_is_honoured_between_polls(clock: FakeTime, watch: Watcher) -> None:
    kind = ScriptedKind("Running", retryable(retry_after=45, status=429), "Completed")
    snap = watch(kind, PollPolicy(10, growth=1, jitter=0), None)
    assert snap.state == "Completed" and clock.sleeps == [10, 45]


@both
def test_short_retry_after_does_not_shorten_the_interval(clock: FakeTime, watch: Watcher) -> None:
    kind = ScriptedKind(retryable(retry_after=1, status=429), "Completed")
    watch(kind, PollPolicy(10, growth=1, jitter=0), None)
    assert clock.sleeps == [10]


@both
def test_retry_after_is_capped_by_the_deadline(clock: FakeTime, watch: Watcher) -> None:
    kind = ScriptedKind(retryable(retry_after=3600, status=429), "Running")
    with pytest.raises(JobTimeoutError):
        watch(kind, PollPolicy(10, jitter=0), clock.now + 100)
    assert clock.sleeps == [100]


@both
def test_transient_poll_errors_are_tolerated_up_to_the_bound(clock: FakeTime, watch: Watcher) -> None:
    kind = ScriptedKind(retryable(), retryable(), retryable(), "Completed")
    snap = watch(kind, PollPolicy(10, growth=1, jitter=0, max_poll_errors=3), None)
    assert snap.state == "Completed" and kind.polls == 4


@both
def test_one_error_too_many_is_raised(clock: FakeTime, watch: Watcher) -> None:
    kind = ScriptedKind(retryable(), retryable(), retryable(), retryable(), "Completed")
    with pytest.raises(ApiError) as info:
        watch(kind, PollPolicy(10, growth=1, jitter=0, max_poll_errors=3), None)
    assert kind.polls == 4 and info.value.status == 503 and len(clock.sleeps) == 3


@both
def test_a_good_poll_resets_the_error_count(clock: FakeTime, watch: Watcher) -> None:
    errors = [retryable()] * 2
    kind = ScriptedKind(*errors, "Running", *errors, "Running", *errors, "Completed")
    snap = watch(kind, PollPolicy(10, growth=1, jitter=0, max_poll_errors=2), None)
    assert snap.state == "Completed" and kind.polls == 9


@both
def test_non_retryable_error_is_raised_at_once(clock: FakeTime, watch: Watcher) -> None:
    kind = ScriptedKind("Running", fatal(404), "Completed")
    with pytest.raises(ApiError) as info:
        watch(kind, PollPolicy(10, jitter=0), None)
    assert kind.polls == 2 and info.value.status == 404 and clock.sleeps == [10]


@both
def test_other_exceptions_are_not_swallowed(clock: FakeTime, watch: Watcher) -> None:
    class Broken(ScriptedKind):
        def interpret(self, payload: Any, ref: dict[str, Any]) -> JobSnapshot:
            raise KeyError("status")

    with pytest.raises(KeyError):
        watch(Broken("Running"), PollPolicy(10), None)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, -0.5, True, "10", None, math.nan, math.inf, [10]])
def test_validate_positive_rejects_bad_values(value: Any) -> None:
    with pytest.raises(ValueError, match=r"poll_interval must be a positive number of seconds, got"):
        validate_positive("poll_interval", value)


def test_validate_positive_accepts_numbers_and_optional_none() -> None:
    validate_positive("timeout", 0.5)
    validate_positive("timeout", 3)
    validate_positive("timeout", None, allow_none=True)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"interval": 0}, "poll_interval must be a positive"),
    ({"interval": 5, "max_interval": -1}, "max_poll_interval must be a positive"),
    ({"interval": 5, "growth": 0.5}, "growth must be a finite number >= 1"),
    ({"interval": 5, "jitter": 1.5}, r"jitter must be a fraction in \[0, 1\)"),
    ({"interval": 5, "jitter": -0.1}, "jitter must be a fraction"),
    ({"interval": 5, "max_poll_errors": -1}, "max_poll_errors must be an integer >= 0"),
    ({"interval": 5, "max_poll_errors": True}, "max_poll_errors must be an integer >= 0"),
])
def test_poll_policy_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PollPolicy(**kwargs)


def test_poll_policy_kwargs_are_json_values() -> None:
    assert PollPolicy(15, 120).to_kwargs() == {"poll_interval": 15, "max_poll_interval": 120}


# ----------------------------------------------------------------------------------------------
# Events
# ----------------------------------------------------------------------------------------------


def test_snapshot_to_event_and_back() -> None:
    kind = ScriptedKind()
    snap = JobSnapshot("Completed", Outcome.SUCCESS, None, {"job_id": 42})
    event = snap.to_event(kind.name, REF)
    assert event == {"status": "success", "kind": "test.scripted", "ref": REF, "state": "Completed",
                     "message": None, "result": {"job_id": 42}}
    assert event["status"] in EVENT_STATUSES
    assert snapshot_from_event(event, kind) == snap
    failed = JobSnapshot("Failed", Outcome.FAILED, "matcher crashed").to_event(kind.name, REF)
    assert failed["status"] == "failed" and snapshot_from_event(failed, kind).message == "matcher crashed"


def test_timeout_and_error_events_raise() -> None:
    kind = ScriptedKind()
    with pytest.raises(JobTimeoutError, match="Timed out after 60 s"):
        snapshot_from_event({"status": "timeout", "message": "Timed out after 60 s"}, kind)
    with pytest.raises(AirflowException, match="Acme API: get run failed"):
        snapshot_from_event({"status": "error", "message": "Acme API: get run failed"}, kind)
    with pytest.raises(AirflowException, match="Waiting for the test run failed"):
        snapshot_from_event({"status": "error"}, kind)


@pytest.mark.parametrize("event", [None, {}, {"status": "cancelled"}, "success", {"status": None}])
def test_unexpected_events_are_rejected(event: Any) -> None:
    with pytest.raises(AirflowException, match="Unexpected trigger event for a test run"):
        snapshot_from_event(event, ScriptedKind())


def test_read_uses_fetch_and_interpret() -> None:
    kind = ScriptedKind("Running")
    snap = kind.read(None, REF)  # type: ignore[arg-type]
    assert snap == JobSnapshot("Running", Outcome.RUNNING, None, {"job_id": 42}) and not snap.terminal
    assert asyncio.run(kind.aread(None, REF)).state == "Running"  # type: ignore[arg-type]
    assert kind.cancel(None, REF) is False and asyncio.run(kind.acancel(None, REF)) is False  # type: ignore[arg-type]
