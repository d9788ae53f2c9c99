"""Triggerer restart: a trigger rebuilt from its ``serialize()`` output resumes the same job.

A triggerer restart (deploy, crash, HA failover) cancels ``run()`` and later rebuilds the trigger
in another process from the serialized kwargs stored in the metadata database. The rebuilt
trigger must watch the same job with the same absolute deadline, send no new start request and
no cancel request (a restart is not a kill), and its event must complete the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest

from airflow_provider_pipelines._compat import TaskDeferred
from airflow_provider_pipelines.hooks._auth import TOKEN_CACHE
from airflow_provider_pipelines.sandbox.server import SandboxServer
from tests.reliability.conftest import make_context, restore_trigger, run_trigger
from tests.reliability.test_fault_matrix import CASES, Case, Reporter, assert_success, driver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

KINDS = [pytest.param(kind, id=kind) for kind in CASES]


async def run_then_stop(trigger: Any, seconds: float) -> list[Any]:
    """Run ``trigger.run()`` for ``seconds``, then cancel it as a stopping triggerer does."""
    events: list[Any] = []

    async def consume() -> None:
        async for event in trigger.run():
            events.append(event)

    task = asyncio.create_task(consume())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return events


def counts(sb: SandboxServer, case: Case) -> dict[str, int]:
    return {
        "starts": len(sb.requests(method="POST", path=case.start_path)) if case.start_path else 0,
        "cancels": len(sb.requests(method="POST", path=case.cancel_path)) if case.cancel_path else 0,
        "reads": len(sb.requests(method=case.status_method, path=case.status_path)),
        "tokens": len(sb.requests(method="POST", path=case.token_path)) if case.token_path else 0,
    }


def defer(sb: SandboxServer, case: Case, reporters: list[Reporter], variant: str, **kw: Any) -> Any:
    reporter = case.prepare(sb, variant)
    if reporter is not None:
        reporters.append(reporter)
    ctx = make_context()
    run = driver(case, "deferred", variant, ctx, **kw)
    with pytest.raises(TaskDeferred) as info:
        run.run(stop_at=case.phase)
    return run, ctx, info.value


@pytest.fixture
def reporters() -> Any:
    started: list[Reporter] = []
    yield started
    for reporter in started:
        reporter.cancel()


@pytest.mark.parametrize("kind", KINDS)
def test_rebuilt_trigger_resumes_the_same_job(sb: SandboxServer, reporters: Any, kind: str) -> None:
    case = CASES[kind]
    run, ctx, deferred = defer(sb, case, reporters, "slow")
    classpath, kwargs = deferred.trigger.serialize()
    stored = json.loads(json.dumps(kwargs))  # what the metadata database keeps
    assert isinstance(stored["deadline"], float) and stored["deadline"] > time.time()

    first = restore_trigger(deferred.trigger)
    before = counts(sb, case)
    assert asyncio.run(run_then_stop(first, 0.4)) == []  # stopped before its job ended: no event
    during = counts(sb, case)
    assert during["reads"] > before["reads"]  # it was polling
    assert during["cancels"] == before["cancels"]  # a restart is not a kill: nothing cancelled
    assert first.serialize() == (classpath, kwargs)  # nothing it learnt changes what it resumes from

    TOKEN_CACHE.clear()  # the new triggerer is another process
    second = restore_trigger(first)
    assert (second.ref, second.deadline) == (stored["ref"], stored["deadline"])
    event = run_trigger(second)
    assert event["status"] == "success" and event["ref"] == stored["ref"]
    after = counts(sb, case)
    assert after["starts"] == before["starts"] == (0 if case.sensor else 1)  # no new run
    assert after["cancels"] == 0
    if case.token_path:
        assert after["tokens"] == before["tokens"] + 1  # the new process fetched its own token, once

    resumed = getattr(run.make(), deferred.method_name)(ctx, event=event, **(deferred.kwargs or {}))
    assert_success(case, resumed)  # the task completes from the rebuilt trigger's event


@pytest.mark.parametrize("kind", KINDS)
def test_deadline_survives_the_restart(sb: SandboxServer, reporters: Any, kind: str) -> None:
    """The deadline is absolute: a trigger rebuilt after it passed times out at once, not a timeout later."""
    case = CASES[kind]
    _, _, deferred = defer(sb, case, reporters, "never", timeout=1.0)
    first = restore_trigger(deferred.trigger)
    asyncio.run(run_then_stop(first, 0.3))
    deadline = first.deadline
    time.sleep(max(0.0, deadline - time.time()) + 0.05)  # the triggerer was down past the deadline

    second = restore_trigger(first)
    assert second.deadline == deadline
    began = time.monotonic()
    event = run_trigger(second)
    assert event["status"] == "timeout" and "Timed out" in event["message"]
    assert time.monotonic() - began < 0.5
    assert counts(sb, case)["starts"] == (0 if case.sensor else 1)
