"""Async paths of extraction pipeline runs: the hook twins, the trigger, and the sensor's deferred path.

A local CDF (``aiohttp.test_utils.TestServer`` serving :class:`FakeExtpipes`) answers; the trigger
runs in the test's event loop exactly as in the triggerer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from airflow.triggers.base import TriggerEvent

from airflow_provider_pipelines._compat import TaskDeferred
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.cognite import CogniteHook, to_epoch_ms
from airflow_provider_pipelines.jobs.cognite import extraction_report_ref
from airflow_provider_pipelines.sensors.cognite import (
    CogniteExtractionPipelineRunSensor,
    ExtractionRunFailedError,
)
from airflow_provider_pipelines.triggers.cognite import CogniteExtractionPipelineRunTrigger
from tests.unit.test_cognite_extpipes import CLIENT_SECRET, T0, XID, FakeExtpipes

ACCESS_TOKEN = "eyJ-async-extpipes-token-1c2d"
PATH = "/api/v1/projects/proj/extpipes"


class AsyncCdf:
    """:class:`FakeExtpipes` served over HTTP, with a token endpoint and a request log."""

    def __init__(self) -> None:
        self.api = FakeExtpipes()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.tokens = 0
        self.server: TestServer | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/tenant/oauth2/v2.0/token", self.token)
        app.router.add_post(f"{PATH}/runs", self.create)
        app.router.add_post(f"{PATH}/runs/list", self.listing)
        app.router.add_post(f"{PATH}/byids", self.byids)
        return app

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        assert form["client_secret"] == CLIENT_SECRET
        self.tokens += 1
        return web.json_response({"access_token": ACCESS_TOKEN, "expires_in": 3600})

    def _log(self, request: web.Request) -> None:
        self.requests.append((request.method, request.path, dict(request.headers)))
        assert request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
        assert request.content_type == "application/json"  # every call here has a JSON body

    async def create(self, request: web.Request) -> web.Response:
        self._log(request)
        _, status, body = self.api.create(await request.json())
        return web.json_response(body, status=status, headers={"x-request-id": "a-create"})

    async def listing(self, request: web.Request) -> web.Response:
        self._log(request)
        status, body = self.api.list(await request.json())
        return web.json_response(body, status=status, headers={"x-request-id": "a-list"})

    async def byids(self, request: web.Request) -> web.Response:
        self._log(request)
        status, body = self.api.byids(await request.json())
        return web.json_response(body, status=status, headers={"x-request-id": "a-byids"})

    def connection(self) -> dict[str, Any]:
        assert self.server is not None
        url = f"http://127.0.0.1:{self.server.port}"
        return {"conn_type": "cognite", "host": url, "login": "client-id", "password": CLIENT_SECRET,
                "extra": {"project": "proj", "token_url": f"{url}/tenant/oauth2/v2.0/token",
                          "backoff_base": 0.01, "backoff_max": 0.02}}


@pytest_asyncio.fixture
async def cdf(conn_env: Any) -> AsyncIterator[AsyncCdf]:
    fake = AsyncCdf()
    fake.server = TestServer(fake.app(), host="127.0.0.1")
    await fake.server.start_server()
    conn_env("cognite_default", **fake.connection())
    try:
        yield fake
    finally:
        await fake.server.close()


def trigger(deadline: float | None = None, **ref_overrides: Any) -> CogniteExtractionPipelineRunTrigger:
    values = {"external_id": XID, "statuses": ["success"], "failure_statuses": ["failure"],
              "created_after": T0}
    values.update(ref_overrides)
    return CogniteExtractionPipelineRunTrigger(
        conn_id="cognite_default", ref=extraction_report_ref(**values), deadline=deadline,
        poll_interval=0.05, max_poll_interval=0.1)


async def events_of(trig: CogniteExtractionPipelineRunTrigger) -> list[TriggerEvent]:
    return [event async for event in trig.run()]


class TestHookTwins:
    @pytest.mark.asyncio
    async def test_create_list_retrieve(self, cdf: AsyncCdf) -> None:
        hook = CogniteHook()
        run = await hook.acreate_extpipe_run(CogniteHook.extpipe_run_item(XID, "seen", "alive", T0))
        assert run == {"externalId": XID, "id": 100, "status": "seen", "message": "alive", "createdTime": T0}
        cdf.api.page_size = 1
        cdf.api.add_run("success", T0 + 1)
        runs = await hook.alist_extpipe_runs(CogniteHook.extpipe_runs_filter(XID))
        assert [r["createdTime"] for r in runs] == [T0 + 1, T0]
        assert [b.get("cursor") for b in cdf.api.calls_to("list")] == [None, "c1"]
        assert (await hook.aretrieve_extpipe(XID))["name"] == "Extractor"
        assert cdf.tokens == 1  # one token for the hook's whole life
        assert all("cdf-version" not in {k.lower() for k in h} for _, _, h in cdf.requests)

    @pytest.mark.asyncio
    async def test_errors(self, cdf: AsyncCdf) -> None:
        hook = CogniteHook()
        cdf.api.create_script = ["503+created"]
        with pytest.raises(ApiError) as info:
            await hook.acreate_extpipe_run(CogniteHook.extpipe_run_item(XID, "success"))
        assert info.value.ambiguous and info.value.request_id == "a-create"
        assert len(cdf.api.calls_to("create")) == 1  # a non-idempotent create is never retried on 503
        with pytest.raises(ApiError, match="Ids not found"):
            await hook.aretrieve_extpipe("missing")

    @pytest.mark.asyncio
    async def test_max_items_closes_the_page_stream(self, cdf: AsyncCdf) -> None:
        cdf.api.page_size = 1
        for i in range(4):
            cdf.api.add_run("success", T0 + i)
        runs = await CogniteHook().alist_extpipe_runs(CogniteHook.extpipe_runs_filter(XID), max_items=2)
        assert len(runs) == 2 and len(cdf.api.calls_to("list")) == 2


    @pytest.mark.asyncio
    async def test_a_body_changed_in_place_is_sent_as_it_is_now(self, cdf: AsyncCdf) -> None:
        # a hook reuses its request, with the body encoded once, while the call stays the same
        hook = CogniteHook()
        body = CogniteHook.extpipe_runs_filter(XID, ["success"])
        await hook.alist_extpipe_runs(body)
        first = hook._last_request
        await hook.alist_extpipe_runs(body)
        assert hook._last_request is first
        body["filter"]["statuses"] = ["failure"]  # the same dict, changed in place
        await hook.alist_extpipe_runs(body)
        assert hook._last_request is not first
        sent = [b["filter"].get("statuses") for b in cdf.api.calls_to("list")]
        assert sent == [["success"], ["success"], ["failure"]]

    @pytest.mark.asyncio
    async def test_a_body_that_is_not_json_fails_before_anything_is_sent(self, cdf: AsyncCdf) -> None:
        hook = CogniteHook()
        for bad in ({"limit": float("nan")}, {"filter": {"createdTime": object()}}):
            with pytest.raises(ValueError, match="JSON body of 'list extraction pipeline runs' cannot be"):
                await hook.acall("POST", "/extpipes/runs/list", "list extraction pipeline runs", json=bad)
            with pytest.raises(ValueError, match="cannot be sent"):
                hook.call("POST", "/extpipes/runs/list", "list extraction pipeline runs", json=bad)
        assert cdf.requests == [] and cdf.api.calls_to("list") == []


class TestTrigger:
    def test_serialize_round_trip(self) -> None:
        trig = trigger(deadline=1_900_000_000.0)
        path, kwargs = trig.serialize()
        assert path == "airflow_provider_pipelines.triggers.cognite.CogniteExtractionPipelineRunTrigger"
        assert json.loads(json.dumps(kwargs)) == kwargs
        assert CogniteExtractionPipelineRunTrigger(**kwargs).serialize() == (path, kwargs)

    @pytest.mark.asyncio
    async def test_waits_for_the_report(self, cdf: AsyncCdf) -> None:
        async def report_later() -> None:
            # after the trigger has polled at least once and found nothing (not after a fixed
            # time: under load the first poll, with its token and connection lookup, may be late)
            while not cdf.api.calls_to("list"):
                await asyncio.sleep(0.01)
            cdf.api.add_run("seen", T0 + 1)  # not awaited
            cdf.api.add_run("success", T0 + 2, "1200 rows")

        reporter = asyncio.create_task(report_later())
        events = await asyncio.wait_for(events_of(trigger()), 10)
        await reporter
        assert len(events) == 1
        payload = events[0].payload
        assert payload["status"] == "success" and payload["state"] == "success"
        assert payload["result"]["run"] == {"externalId": XID, "id": 101, "status": "success",
                                            "createdTime": T0 + 2, "message": "1200 rows"}
        assert len(cdf.api.calls_to("list")) >= 2  # polled while nothing was there
        json.dumps(payload)
        assert CLIENT_SECRET not in json.dumps(payload) and ACCESS_TOKEN not in json.dumps(payload)

    @pytest.mark.asyncio
    async def test_failure_first(self, cdf: AsyncCdf) -> None:
        cdf.api.page_size = 1
        cdf.api.add_run("failure", T0 + 1, "source unreachable")
        cdf.api.add_run("success", T0 + 2)
        cdf.api.add_run("success", T0 + 3)
        events = await asyncio.wait_for(events_of(trigger()), 10)
        assert events[0].payload["status"] == "failed"
        assert events[0].payload["message"] == "source unreachable"
        assert len(cdf.api.calls_to("list")) == 3  # every page read to find the oldest

    @pytest.mark.asyncio
    async def test_timeout_event(self, cdf: AsyncCdf) -> None:
        events = await asyncio.wait_for(events_of(trigger(deadline=time.time() + 0.3)), 10)
        payload = events[0].payload
        assert payload["status"] == "timeout"
        expected = "waiting for extraction pipeline 'extractor' to report a run with status success"
        assert expected in payload["message"]

    @pytest.mark.asyncio
    async def test_error_event(self, cdf: AsyncCdf) -> None:
        cdf.api.list_script = ["403"]
        events = await asyncio.wait_for(events_of(trigger()), 10)
        assert events[0].payload["status"] == "error"
        assert "HTTP 403: List failed [request id a-list]" in events[0].payload["message"]


class TestSensorDeferredPath:
    @pytest.mark.asyncio
    async def test_defer_trigger_resume(self, cdf: AsyncCdf) -> None:
        start = pendulum.datetime(2025, 1, 1, tz="UTC")
        context: dict[str, Any] = {"data_interval_start": start, "logical_date": start,
                                   "ti": SimpleNamespace(try_number=1)}
        sensor = CogniteExtractionPipelineRunSensor(task_id="wait", external_id=XID, deferrable=True,
                                                    poke_interval=0.05, timeout=30)
        # the first check is a blocking call (as in a worker): run it off the loop the server lives on
        with pytest.raises(TaskDeferred) as info:
            await asyncio.to_thread(sensor.execute, context)
        cdf.api.add_run("success", to_epoch_ms(start) + 60_000, "ok")
        events = await asyncio.wait_for(events_of(info.value.trigger), 10)
        run = sensor.execute_complete(context, events[0].payload)
        assert run["status"] == "success" and run["createdTime"] == to_epoch_ms(start) + 60_000

    @pytest.mark.asyncio
    async def test_defer_trigger_resume_failure(self, cdf: AsyncCdf) -> None:
        start = pendulum.datetime(2025, 1, 1, tz="UTC")
        context: dict[str, Any] = {"data_interval_start": start, "ti": SimpleNamespace(try_number=1)}
        sensor = CogniteExtractionPipelineRunSensor(task_id="wait", external_id=XID, deferrable=True,
                                                    poke_interval=0.05, timeout=30)
        with pytest.raises(TaskDeferred) as info:
            await asyncio.to_thread(sensor.execute, context)
        cdf.api.add_run("failure", to_epoch_ms(start) + 1, "credentials expired")
        events = await asyncio.wait_for(events_of(info.value.trigger), 10)
        with pytest.raises(ExtractionRunFailedError, match="credentials expired"):
            sensor.execute_complete(context, events[0].payload)
