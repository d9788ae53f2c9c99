"""HERE triggers against a local aiohttp server: events, serialisation, on_kill."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from airflow.triggers.base import TriggerEvent

from airflow_provider_pipelines.triggers.here import HerePipelineJobTrigger, HerePipelineOperationTrigger

KEY_ID = "TRIGGERKEYID"
SECRET = "trigger-secret-value-77"
PID = "5f2b5b1e-0000-4000-8000-000000000001"
VID = "5f2b5b1e-0000-4000-8000-0000000000a1"
OPID = "0b7c9d6e-1111-4222-8333-444455556666"
JOB_ID = "9d9d9d9d-1111-4222-8333-444455556666"
OP_REF = {"pipeline_id": PID, "version_id": VID, "operation_id": OPID}
JOB_REF = {"pipeline_id": PID, "version_id": VID, "job_id": None, "created_after": "2026-01-01T10:00:00Z",
           "previous_job_id": None, "single_job": True, "operation_id": OPID}


class ScriptedHere:
    """Answers from scripts (the last answer of each script repeats) and records every request."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[tuple[int, Any]]] = {"operation": [], "version": [], "jobs": []}
        self.requests: list[dict[str, Any]] = []
        self.tokens = 0
        base = "/ps/v2/pipelines/{pid}/versions/{vid}"
        self.app = web.Application()
        self.app.router.add_post("/oauth2/token", self.token)
        self.app.router.add_get(base, self.answer("version"))
        self.app.router.add_get(base + "/jobs", self.answer("jobs"))
        self.app.router.add_get(base + "/operations/{op}", self.answer("operation"))
        self.app.router.add_post(base + "/operations/{op}", self.post_operation)

    def script(self, name: str, *answers: Any, status: int = 200) -> None:
        self.scripts[name] = [(status, a) for a in answers]

    async def token(self, request: web.Request) -> web.Response:
        self.tokens += 1
        return web.json_response({"access_token": f"trigger-token-{self.tokens}-xyz", "expires_in": 3600})

    def answer(self, name: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            self.requests.append({"method": "GET", "path": request.path, "headers": dict(request.headers)})
            script = self.scripts[name]
            status, body = script.pop(0) if len(script) > 1 else script[0]
            return web.json_response(body, status=status, headers={"X-Request-ID": "srv-" + name})

        return handler

    async def post_operation(self, request: web.Request) -> web.Response:
        self.requests.append({"method": "POST", "path": request.path, "headers": dict(request.headers)})
        op = {"id": "cancel-op", "requestType": request.match_info["op"], "state": "accepted"}
        return web.json_response(op, status=202)

    def posts(self) -> list[str]:
        return [r["path"].rsplit("/", 1)[-1] for r in self.requests if r["method"] == "POST"]


@pytest_asyncio.fixture
async def here(conn_env):
    fake = ScriptedHere()
    server = TestServer(fake.app)
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    conn_env("here_default", conn_type="here_platform", login=KEY_ID, password=SECRET, host=f"{url}/ps",
             extra={"token_endpoint_url": f"{url}/oauth2/token"})
    yield fake
    await server.close()


async def collect(trigger: Any) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


def op_trigger(**kwargs: Any) -> HerePipelineOperationTrigger:
    params: dict[str, Any] = {"conn_id": "here_default", "ref": OP_REF, "deadline": time.time() + 30,
                              "poll_interval": 0.01, "hook_params": {"correlation_id": "corr-trigger"}}
    params.update(kwargs)
    return HerePipelineOperationTrigger(**params)


def job_trigger(**kwargs: Any) -> HerePipelineJobTrigger:
    params: dict[str, Any] = {"conn_id": "here_default", "ref": JOB_REF, "deadline": time.time() + 30,
                              "poll_interval": 0.01}
    params.update(kwargs)
    return HerePipelineJobTrigger(**params)


def test_serialize_round_trip_carries_no_secret():
    trigger = op_trigger(deadline=1_800_000_000.0, cancel_on_kill=True, max_poll_interval=60)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_pipelines.triggers.here.HerePipelineOperationTrigger"
    assert kwargs == {"conn_id": "here_default", "ref": OP_REF, "deadline": 1_800_000_000.0,
                      "poll_interval": 0.01, "max_poll_interval": 60, "cancel_on_kill": True,
                      "hook_params": {"correlation_id": "corr-trigger"}}
    assert HerePipelineOperationTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert SECRET not in json.dumps(kwargs)
    assert job_trigger().serialize()[0] == "airflow_provider_pipelines.triggers.here.HerePipelineJobTrigger"


@pytest.mark.asyncio
async def test_operation_trigger_sends_one_success_event(here):
    here.script("operation", {"id": OPID, "state": "accepted"}, {"id": OPID, "state": "BEING_PROCESSED"},
                {"id": OPID, "state": "succeeded", "requestType": "activate"})
    events = await collect(op_trigger())
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "success" and payload["kind"] == "here.pipeline_operation"
    assert payload["state"] == "succeeded" and payload["result"]["operation_id"] == OPID
    assert {r["headers"]["X-Correlation-ID"] for r in here.requests} == {"corr-trigger"}
    assert here.tokens == 1


@pytest.mark.asyncio
async def test_operation_trigger_reports_a_failed_operation(here):
    here.script("operation", {"id": OPID, "state": "failed", "message": "Main class not found"})
    [event] = await collect(op_trigger())
    assert event.payload["status"] == "failed" and event.payload["message"] == "Main class not found"


@pytest.mark.asyncio
async def test_job_trigger_finds_the_job_and_reports_its_end(here):
    job = {"id": JOB_ID, "created": "2026-01-01T10:00:05Z", "loggingUrl": "https://logs/j"}
    here.script("version", {"state": "running", "latestJob": {**job, "state": "running"}},
                {"state": "ready", "latestJob": {**job, "state": "failed"}})
    [event] = await collect(job_trigger())
    assert event.payload["status"] == "failed" and event.payload["state"] == "failed"
    assert "https://logs/j" in event.payload["message"] and event.payload["result"]["job_id"] == JOB_ID


@pytest.mark.asyncio
async def test_job_trigger_success(here):
    here.script("version", {"state": "ready", "latestJob": {"id": JOB_ID, "state": "completed",
                                                            "created": "2026-01-01T10:00:05Z"}})
    [event] = await collect(job_trigger())
    assert event.payload["status"] == "success" and event.payload["result"]["state"] == "completed"


@pytest.mark.asyncio
async def test_timeout_event_leaves_the_run_running(here):
    here.script("operation", {"id": OPID, "state": "accepted"})
    [event] = await collect(op_trigger(deadline=time.time() + 0.3))
    assert event.payload["status"] == "timeout" and "left running" in event.payload["message"]
    assert event.payload["state"] == "accepted" and here.posts() == []


@pytest.mark.asyncio
async def test_api_errors_become_one_error_event(here):
    not_found = {"status": 404, "code": "E1404", "message": f"Operation {OPID} not found"}
    here.script("operation", not_found, status=404)
    [event] = await collect(op_trigger())
    assert event.payload["status"] == "error"
    assert "HTTP 404" in event.payload["message"] and "request id srv-operation" in event.payload["message"]
    assert "correlation id corr-trigger" in event.payload["message"]


@pytest.mark.asyncio
async def test_transient_poll_errors_are_tolerated(here):
    here.scripts["operation"] = [(503, {"message": "busy"}), (200, {"id": OPID, "state": "succeeded"})]
    [event] = await collect(op_trigger())
    assert event.payload["status"] == "success"


@pytest.mark.asyncio
async def test_on_kill_cancels_a_running_version(here):
    here.script("version", {"state": "running"})
    await job_trigger(cancel_on_kill=True).on_kill()
    assert here.posts() == ["cancel"]


@pytest.mark.asyncio
async def test_on_kill_deactivates_a_version_still_scheduled(here):
    here.script("version", {"state": "scheduled"})
    await op_trigger(cancel_on_kill=True).on_kill()
    assert here.posts() == ["deactivate"]


@pytest.mark.asyncio
async def test_on_kill_waits_for_an_operation_in_progress(here, monkeypatch):
    from airflow_provider_pipelines.jobs.base import PollPolicy

    monkeypatch.setattr("airflow_provider_pipelines.jobs.here._stop_policy",
                        lambda: PollPolicy(interval=0.01))
    here.script("version", {"state": "ready", "latestOperation": {"id": OPID, "state": "being_processed"}},
                {"state": "running"})
    here.script("operation", {"id": OPID, "state": "being_processed"}, {"id": OPID, "state": "succeeded"})
    await op_trigger(cancel_on_kill=True).on_kill()
    assert here.posts() == ["cancel"]


@pytest.mark.asyncio
async def test_on_kill_without_cancel_on_kill_does_nothing(here):
    here.script("version", {"state": "running"})
    await job_trigger(cancel_on_kill=False).on_kill()
    assert here.requests == []


@pytest.mark.asyncio
async def test_many_triggers_share_one_token(here):
    here.script("operation", {"id": OPID, "state": "succeeded"})
    results = await asyncio.gather(*(collect(op_trigger()) for _ in range(25)))
    assert all(r[0].payload["status"] == "success" for r in results)
    assert here.tokens == 1
