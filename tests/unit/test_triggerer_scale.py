"""Behaviour that keeps thousands of triggers cheap in one triggerer (see docs/performance.md).

Against a local aiohttp server: triggers of one event loop share one connection lookup and one
token, their first polls are spread over the poll interval, a successful call leaves no garbage
for the cyclic collector, and importing the operators modules loads no HTTP client.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from airflow_provider_pipelines.hooks._auth import TOKEN_CACHE
from airflow_provider_pipelines.hooks.cognite import CogniteHook
from airflow_provider_pipelines.triggers import base as triggers_base
from airflow_provider_pipelines.triggers.cognite import CogniteEntityMatchingPipelineRunTrigger


class FakeCdf:
    """Token endpoint + entity matching run status: ``Running`` for ``running_polls`` polls per job."""

    def __init__(self, running_polls: int = 2) -> None:
        self.running_polls = running_polls
        self.polls: dict[str, int] = {}
        self.token_requests = 0
        self.status_requests: list[tuple[float, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/oauth/token":
            self.token_requests += 1
            token = f"tok-{self.token_requests}-abcdefgh"
            return web.json_response({"access_token": token, "expires_in": 3600})
        if request.headers.get("Authorization", "").startswith("Bearer tok-") and "/runs/" in request.path:
            self.status_requests.append((time.monotonic(), request.path))
            count = self.polls[request.path] = self.polls.get(request.path, 0) + 1
            status = "Running" if count <= self.running_polls else "Completed"
            return web.json_response({"jobId": int(request.path.rsplit("/", 1)[1]), "status": status})
        if request.path.endswith("/runs"):
            return web.json_response({"items": []})
        return web.json_response({"error": {"code": 404, "message": "unknown"}}, status=404)


@pytest_asyncio.fixture
async def cdf(conn_env: Any) -> AsyncIterator[tuple[FakeCdf, Any]]:
    fake = FakeCdf()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}"

    def set_conn(project: str = "p1") -> None:
        conn_env("cognite_scale", conn_type="cognite", host=base, login="client", password="client-secret",
                 extra={"project": project, "token_url": f"{base}/oauth/token"})

    set_conn()
    yield fake, set_conn
    await server.close()


def trigger(job_id: int, poll_interval: float = 0.01) -> CogniteEntityMatchingPipelineRunTrigger:
    return CogniteEntityMatchingPipelineRunTrigger(
        conn_id="cognite_scale", ref={"pipeline_id": 1, "job_id": job_id}, deadline=time.time() + 60,
        poll_interval=poll_interval, max_poll_interval=poll_interval,
    )


async def first_event(t: CogniteEntityMatchingPipelineRunTrigger) -> dict[str, Any]:
    agen = t.run()
    try:
        event = await agen.__anext__()
    finally:
        await agen.aclose()
    return dict(event.payload)


@pytest.mark.asyncio
async def test_triggers_in_one_loop_share_one_connection_lookup_and_one_token(cdf, monkeypatch) -> None:
    fake, _ = cdf
    resolves: list[str] = []
    original = CogniteHook._resolve

    def counting_resolve(self: CogniteHook, conn: Any, extra: Any) -> Any:
        resolves.append(self.conn_id)
        return original(self, conn, extra)

    monkeypatch.setattr(CogniteHook, "_resolve", counting_resolve)
    triggers = [trigger(1000 + i) for i in range(200)]
    events = await asyncio.gather(*(first_event(t) for t in triggers))

    assert [e["status"] for e in events] == ["success"] * 200
    assert {e["ref"]["job_id"] for e in events} == {1000 + i for i in range(200)}
    assert resolves == ["cognite_scale"]  # one lookup for 200 triggers started together
    assert fake.token_requests == 1 and sum(TOKEN_CACHE.fetches.values()) == 1
    assert len({id(t.hook) for t in triggers}) == 200  # each trigger keeps its own hook ...
    assert len({id(t.hook.resolved) for t in triggers}) == 1  # ... on the shared resolution
    assert len(fake.status_requests) == 200 * 3  # two Running polls and the Completed one each


@pytest.mark.asyncio
async def test_triggers_sharing_a_connection_share_one_http_core_and_reuse_their_status_request(cdf) -> None:
    fake, _ = cdf
    fake.running_polls = 3
    triggers = [trigger(2000 + i) for i in range(20)]
    events = await asyncio.gather(*(first_event(t) for t in triggers))
    assert [e["status"] for e in events] == ["success"] * 20
    # one HTTP core (retry settings, proxies, redactor) for the 20 hooks of the shared resolution
    assert len({id(t.hook.core) for t in triggers}) == 1
    # every poll of one trigger sent the same request object, built (and its URL parsed) once
    requests = {id(t.hook._last_request) for t in triggers}
    assert len(requests) == 20
    assert all(t.hook._last_request is not None and t.hook._last_request.url.endswith(
        f"/runs/{t.ref['job_id']}") for t in triggers)
    assert len(fake.status_requests) == 20 * 4


@pytest.mark.asyncio
async def test_a_hook_builds_a_new_request_when_the_call_differs(cdf) -> None:
    fake, _ = cdf
    hook = CogniteHook("cognite_scale")
    await hook.aget_pipeline_run(1, 10)
    first = hook._last_request
    await hook.aget_pipeline_run(1, 10)
    assert hook._last_request is first  # the same poll: the same request
    await hook.aget_pipeline_run(1, 11)
    assert hook._last_request is not first and hook._last_request.url.endswith("/runs/11")
    await hook.alist_pipeline_runs(1, limit=5)  # same path prefix, other arguments
    listed = hook._last_request
    assert listed.params == {"limit": 5} and listed.url.endswith("/pipelines/1/runs")
    await hook.alist_pipeline_runs(1, limit=7)
    assert hook._last_request is not listed and hook._last_request.params == {"limit": 7}
    assert [path.rsplit("/", 1)[1] for _, path in fake.status_requests] == ["10", "10", "11"]
    # every argument counts: its value, and whether it was given at all
    plain = hook._request("GET", "/x", "get x", None, {})
    assert hook._request("GET", "/x", "get x", None, {}) is plain
    with_params = hook._request("GET", "/x", "get x", None, {"params": {"a": 1}})
    assert with_params is not plain and with_params.params == {"a": 1}
    assert hook._request("GET", "/x", "get x", None, {"params": {"a": 1}}) is with_params
    assert hook._request("GET", "/x", "get x", None, {"params": {"a": 2}}) is not with_params
    assert hook._request("GET", "/x", "get y", None, {"params": {"a": 2}}).operation == "get y"
    posted = hook._request("POST", "/x", "post x", None, {"json": {"b": [1]}})
    assert posted.json is None and json.loads(posted.body) == {"b": [1]}  # encoded once, kept encoded
    assert hook._request("POST", "/x", "post x", None, {"json": {"b": [1]}}) is posted
    assert hook._request("POST", "/x", "post x", None, {"json": {"b": [2]}}) is not posted


def test_triggers_with_the_same_intervals_share_one_poll_policy() -> None:
    a, b = trigger(1, poll_interval=5), trigger(2, poll_interval=5)
    assert a.policy is b.policy
    assert trigger(3, poll_interval=6).policy is not a.policy
    # a policy is still validated: the shared instance never hides a bad value
    with pytest.raises(ValueError, match="poll_interval must be a positive number"):
        trigger(4, poll_interval=-1)
    with pytest.raises(ValueError, match="poll_interval must be a positive number"):
        CogniteEntityMatchingPipelineRunTrigger(
            conn_id="c", ref={"pipeline_id": 1, "job_id": 1}, deadline=None,
            poll_interval=[5],  # type: ignore[arg-type]
        )


@pytest.mark.asyncio
async def test_an_edited_connection_reaches_triggers_started_after_the_share_window(cdf, monkeypatch) -> None:
    fake, set_conn = cdf
    now = [1000.0]  # the share window's clock, moved by hand (no wall-clock timing)
    monkeypatch.setattr(triggers_base, "_clock", lambda: now[0])
    assert (await first_event(trigger(1)))["status"] == "success"
    set_conn("p2")  # the user edits the connection
    now[0] += triggers_base.CONNECTION_SHARE_SECONDS - 1
    assert (await first_event(trigger(2)))["status"] == "success"  # within the window: shared
    now[0] += 2
    assert (await first_event(trigger(3)))["status"] == "success"  # after it: looked up again
    early = ("/runs/1", "/runs/2")
    assert {path.split("/")[4] for _, path in fake.status_requests if path.endswith(early)} == {"p1"}
    assert {path.split("/")[4] for _, path in fake.status_requests if path.endswith("/runs/3")} == {"p2"}


@pytest.mark.asyncio
async def test_a_failed_connection_lookup_is_not_shared(cdf, monkeypatch) -> None:
    _, set_conn = cdf
    monkeypatch.delenv("AIRFLOW_CONN_COGNITE_SCALE")
    failed = await first_event(trigger(1))
    assert failed["status"] == "error" and "cognite_scale" in failed["message"]
    set_conn()
    assert (await first_event(trigger(2)))["status"] == "success"


def test_first_polls_of_triggers_started_together_spread_over_the_interval() -> None:
    """Triggers resumed together draw their first delay uniformly over the whole interval.

    Checked on the distribution itself (seeded), not on wall-clock timings of a loaded machine.
    """
    import random

    from airflow_provider_pipelines.jobs.base import PollPolicy

    random.seed(1234)
    policy = PollPolicy(interval=5.0)
    delays = [policy.first_delay() for _ in range(5000)]
    assert all(0.0 <= d <= 5.0 for d in delays)
    per_second = [sum(1 for d in delays if k <= d < k + 1) for k in range(5)]
    # an even spread: each second of the interval gets about a fifth of the first polls
    assert all(800 < n < 1200 for n in per_second), per_second


@pytest.mark.asyncio
async def test_a_successful_call_leaves_no_garbage_for_the_cyclic_collector(cdf) -> None:
    hook = CogniteHook("cognite_scale")
    await hook.aget_pipeline_run(1, 1)  # resolve, token, session, warm-up
    # collect what earlier tests left (e.g. their closed event loops and per-loop caches) first
    gc.collect()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # keep what the collector finds, to see whose it is
    try:
        for job in range(2, 52):
            await hook.aget_pipeline_run(1, job)
        gc.collect()
        garbage = list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    # Each call through tenacity used to leave ~40 objects in reference cycles; a triggerer
    # polling 1,000 jobs per second then spent seconds in full collections. (The test server
    # runs in this loop too: only the client side's objects are checked.)
    # only the call path under test: tenacity and the hooks (not per-loop caches of other tests)
    path = ("tenacity", "airflow_provider_pipelines.hooks")
    ours = [type(o).__module__ for o in garbage
            if (type(o).__module__ or "").startswith(path)
            or (getattr(o, "__module__", None) or "").startswith(path)]
    assert ours == [], f"{len(ours)} objects of tenacity/this provider in reference cycles after 50 calls"


def test_importing_the_operators_modules_loads_no_http_client_or_vendor_code() -> None:
    modules = [m for m in ("airflow_provider_pipelines.operators.cognite",
                           "airflow_provider_pipelines.operators.edge_impulse",
                           "airflow_provider_pipelines.operators.here") if importlib.util.find_spec(m)]
    code = (
        f"import sys\nfor m in {modules!r}: __import__(m)\n"
        "heavy = ('aiohttp', 'requests', 'airflow_provider_pipelines.sandbox', 'starlette', 'uvicorn',"
        " 'cognite', 'edgeimpulse_api', 'oauthlib')\n"
        "print(__import__('json').dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    proc = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert modules and json.loads(proc.stdout.strip().splitlines()[-1]) == []
