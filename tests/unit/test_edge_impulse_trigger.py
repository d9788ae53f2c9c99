"""EdgeImpulsePipelineRunTrigger: events collected with asyncio against a local aiohttp server.

The server is :class:`FakeStudioState` of the operator tests (inferred Edge Impulse behaviour:
a run is ``currentRun`` until it ends, then ``lastRun`` with ``finished``).
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib import import_module
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from airflow.triggers.base import TriggerEvent

from airflow_provider_pipelines.hooks._http import async_sessions_created
from airflow_provider_pipelines.triggers.edge_impulse import EdgeImpulsePipelineRunTrigger
from tests.unit.test_edge_impulse_operator import API_KEY, SECRETS, FakeStudioState

P = "/v1/api/organizations/1/pipelines/12"


class Served:
    def __init__(self, state: FakeStudioState) -> None:
        self.state = state
        self.requests: list[tuple[str, str, str]] = []
        self.override_get: tuple[int, Any] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, request.headers.get("x-api-key", "")))
        if request.method == "GET" and request.path == P:
            status, body = self.override_get or self.state.get()
        elif request.method == "POST" and request.path == f"{P}/stop":
            status, body = self.state.stop()
        else:
            status, body = 404, {"success": False, "error": "not found"}
        return web.json_response(body, status=status)


@pytest.fixture
def no_sync_http(monkeypatch):
    """Nothing inside a trigger may use the blocking requests client."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("sync HTTP call inside a trigger")

    monkeypatch.setattr("requests.Session.request", refuse)


@pytest_asyncio.fixture
async def served(conn_env, no_sync_http):
    state = FakeStudioState()
    state.start_foreign_run(1234)  # the run the trigger watches is in progress
    served = Served(state)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", served.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    conn_env("edge_impulse_default", conn_type="edge_impulse", host=f"http://127.0.0.1:{server.port}",
             password=API_KEY, extra={"backoff_base": 0.001, "backoff_max": 0.001})
    yield served
    await server.close()


def make_trigger(**kwargs: Any) -> EdgeImpulsePipelineRunTrigger:
    params: dict[str, Any] = {
        "conn_id": "edge_impulse_default",
        "ref": {"organization_id": 1, "pipeline_id": 12, "run_id": 1234, "fail_on_import_errors": True,
                "started_at": time.time()},
        "deadline": time.time() + 30, "poll_interval": 0.02, "cancel_on_kill": True,
    }
    params.update(kwargs)
    return EdgeImpulsePipelineRunTrigger(**params)


async def collect(trigger: EdgeImpulsePipelineRunTrigger) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


def assert_no_secrets(value: Any) -> None:
    text = json.dumps(value, default=str)
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.asyncio
async def test_success_event(served):
    events = await asyncio.wait_for(collect(make_trigger()), 10)
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "success" and payload["kind"] == "edge_impulse.pipeline_run"
    assert payload["state"] == "finished"
    assert payload["ref"]["run_id"] == 1234
    assert payload["result"]["steps"][0]["status"] == "finished"
    assert_no_secrets(payload)
    assert all(key == API_KEY for _, _, key in served.requests)


@pytest.mark.asyncio
async def test_failed_event(served):
    served.state.outcome = "failure"
    events = await asyncio.wait_for(collect(make_trigger()), 10)
    payload = events[0].payload
    assert [e.payload["status"] for e in events] == ["failed"]
    expected = "step 1 'Import into project' failed (status=failed, transformJobStatus=failed)"
    assert expected in payload["message"]
    assert_no_secrets(payload)


@pytest.mark.asyncio
async def test_timeout_event_leaves_the_run_running(served):
    served.state.finish_after = None
    events = await asyncio.wait_for(collect(make_trigger(deadline=time.time() + 0.3)), 10)
    payload = events[0].payload
    assert payload["status"] == "timeout"
    assert payload["state"].startswith("running: step 1 'Import into project'")
    assert "The remote job was left running." in payload["message"]
    assert not any(method == "POST" for method, _, _ in served.requests)


@pytest.mark.asyncio
async def test_success_false_on_poll_is_an_error_event(served):
    served.override_get = (200, {"success": False, "error": "Organization 1 not found"})
    events = await asyncio.wait_for(collect(make_trigger()), 10)
    payload = events[0].payload
    assert payload["status"] == "error"
    assert "HTTP 200: Organization 1 not found" in payload["message"]
    assert len(events) == 1


@pytest.mark.asyncio
async def test_transient_poll_errors_are_tolerated(served):
    served.override_get = (503, {"success": False, "error": "busy"})

    async def recover() -> None:
        await asyncio.sleep(0.1)
        served.override_get = None

    task = asyncio.create_task(recover())
    events = await asyncio.wait_for(collect(make_trigger()), 10)
    await task
    assert events[0].payload["status"] == "success"


@pytest.mark.asyncio
async def test_still_running_yields_nothing(served):
    served.state.finish_after = None
    trigger = make_trigger()
    task = asyncio.create_task(trigger.run().__anext__())
    await asyncio.sleep(0.3)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_serialize_round_trip(served):
    classpath, kwargs = make_trigger().serialize()
    assert classpath == "airflow_provider_pipelines.triggers.edge_impulse.EdgeImpulsePipelineRunTrigger"
    assert set(kwargs) == {"conn_id", "ref", "deadline", "poll_interval", "max_poll_interval",
                           "cancel_on_kill", "hook_params"}
    module, _, name = classpath.rpartition(".")
    restored = getattr(import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert_no_secrets(kwargs)
    events = await asyncio.wait_for(collect(restored), 10)
    assert events[0].payload["status"] == "success"


@pytest.mark.asyncio
async def test_many_triggers_share_one_session(served):
    served.state.finish_after = 3
    before = async_sessions_created()
    results = await asyncio.wait_for(asyncio.gather(*(collect(make_trigger()) for _ in range(20))), 20)
    assert all(len(events) == 1 for events in results)
    assert async_sessions_created() - before == 1


# ---- on_kill (Airflow 3.3+) ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_on_kill_stops_our_current_run(served):
    await make_trigger().on_kill()
    assert [m for m, _, _ in served.requests] == ["GET", "POST"]
    assert served.state.calls[-1] == "STOP"


@pytest.mark.asyncio
async def test_on_kill_leaves_another_run_alone(served):
    served.state.current = None
    served.state.start_foreign_run(999)
    await make_trigger().on_kill()
    assert [m for m, _, _ in served.requests] == ["GET"]
    assert "STOP" not in served.state.calls


@pytest.mark.asyncio
async def test_on_kill_without_cancel_on_kill_sends_nothing(served):
    await make_trigger(cancel_on_kill=False).on_kill()
    assert served.requests == []
