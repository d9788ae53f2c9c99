"""Harness of the reliability suite: a fast sandbox with distinctive secrets, and a task driver.

The sandbox runs once per session (reset before every test) with short job durations and
credentials that appear nowhere else, so a leak of any of them is unambiguous. The driver runs a
task the way Airflow does: worker mode calls ``execute``; deferred mode runs ``execute`` until it
raises ``TaskDeferred``, rebuilds the trigger from its ``serialize()`` output (as the triggerer
does), runs its ``run()`` in a fresh event loop to its one event, and resumes a *new* operator
instance with that event (repeating for operators that defer more than once).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_pipelines._compat import TaskDeferred
from airflow_provider_pipelines.sandbox.config import (
    EI_ORGANIZATION_ID,
    EI_PROJECT_API_KEY,
    EI_PROJECT_HMAC_KEY,
    HERE_ACCESS_KEY_ID,
)
from airflow_provider_pipelines.sandbox.server import SandboxServer
from airflow_provider_pipelines.sandbox.testing import sandbox_fixture

# ---- distinctive secrets (they must never show up anywhere the tests look) -------------------------

COGNITE_SECRET = "cog-client-secret-Q7xZ81pL"
COGNITE_STATIC_TOKEN = "cog-static-token-M3kW55vR"
EI_KEY = "ei_reliability_key_T9bN24sD"
HERE_SECRET = "here-access-secret-H2jC67fY"
#: every credential the connections hold, plus the step keys the Edge Impulse sandbox returns
SECRETS = (COGNITE_SECRET, COGNITE_STATIC_TOKEN, EI_KEY, HERE_SECRET, EI_PROJECT_API_KEY, EI_PROJECT_HMAC_KEY)

#: short job durations, so a whole scenario takes about a second
FAST_CONFIG: dict[str, Any] = {
    "cognite": {
        "client_secret": COGNITE_SECRET,
        "static_tokens": [COGNITE_STATIC_TOKEN],
        "entity_matching": {"default": {"queued": 0.1, "running": 0.3}},
        "estimate_quality": {"default": {"queued": 0.1, "running": 0.3}},
    },
    "edge_impulse": {
        "api_keys": {EI_KEY: EI_ORGANIZATION_ID},
        "default": {"waiting": 0.05, "created": 0.05, "transform": 0.1, "upload": 0.05},
    },
    "here": {
        "access_keys": {HERE_ACCESS_KEY_ID: HERE_SECRET},
        "default": {"operation_accepted": 0.05, "operation_processing": 0.1, "job_starting": 0.1,
                    "job_running": 0.3, "scheduled_job_delay": 0.2},
    },
}

#: retry back-off of every test connection: same policy, tiny waits
FAST_EXTRA: dict[str, Any] = {"backoff_base": 0.01, "backoff_max": 0.05, "connect_timeout": 2,
                              "read_timeout": 10}

reliability_sandbox = sandbox_fixture("reliability_sandbox", config=FAST_CONFIG)


def connection_dicts(url: str, **extra: Any) -> dict[str, dict[str, Any]]:
    """The three default connections for a sandbox at ``url``, with the distinctive secrets."""
    url = url.rstrip("/")
    base = {**FAST_EXTRA, **extra}
    return {
        "cognite_default": {
            "conn_type": "cognite", "host": url, "login": "sandbox-client", "password": COGNITE_SECRET,
            "extra": {"project": "sandbox", "token_url": f"{url}/sandbox-tenant/oauth2/v2.0/token",
                      "scopes": f"{url}/.default", **base},
        },
        "edge_impulse_default": {"conn_type": "edge_impulse", "host": url, "password": EI_KEY, "extra": base},
        "here_default": {
            "conn_type": "here_platform", "host": f"{url}/pipeline-service", "login": HERE_ACCESS_KEY_ID,
            "password": HERE_SECRET, "extra": {"token_endpoint_url": f"{url}/oauth2/token", **base},
        },
    }


def set_connections(monkeypatch: pytest.MonkeyPatch, url: str, **extra: Any) -> dict[str, dict[str, Any]]:
    """Point ``cognite_default``, ``edge_impulse_default`` and ``here_default`` at ``url``."""
    conns = connection_dicts(url, **extra)
    for conn_id, fields in conns.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
    return conns


@pytest.fixture
def sb(reliability_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    """The (freshly reset) sandbox, with the default connections pointing at it."""
    set_connections(monkeypatch, reliability_sandbox.url)
    return reliability_sandbox


# ---- Airflow context stand-ins -----------------------------------------------------------------------


class FakeTI:
    """The task instance as the operators use it: identity, try number and ``xcom_push``."""

    dag_id, run_id, task_id, map_index = "reliability", "manual__1", "task", -1

    def __init__(self, try_number: int = 1) -> None:
        self.try_number = try_number
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = json.loads(json.dumps(value))  # XCom values must be JSON


class FakeStateStore:
    """Airflow 3.3's task state store (``get``/``set``/``delete``), surviving task retries."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self.data[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def make_context(try_number: int = 1, store: FakeStateStore | None = None) -> dict[str, Any]:
    return {"ti": FakeTI(try_number), "task_state_store": store if store is not None else FakeStateStore()}


# ---- driving a task like Airflow does ------------------------------------------------------------------


def restore_trigger(trigger: Any) -> Any:
    """A trigger rebuilt from its ``serialize()`` output after a JSON round trip (what the triggerer does)."""
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))


def run_trigger(trigger: Any, timeout: float = 30) -> dict[str, Any]:
    """Run ``trigger.run()`` in a fresh event loop; it must send exactly one event."""

    async def collect() -> list[Any]:
        return [event async for event in trigger.run()]

    events = asyncio.run(asyncio.wait_for(collect(), timeout))
    assert len(events) == 1, events
    payload = events[0].payload
    json.dumps(payload)  # events are stored as JSON
    return payload


class Driver:
    """Runs one task in ``worker`` or ``deferred`` mode and records deferrals and events."""

    def __init__(self, make: Callable[[], Any], ctx: dict[str, Any], mode: str) -> None:
        assert mode in ("worker", "deferred")
        self.make, self.ctx, self.mode = make, ctx, mode
        self.deferrals: list[TaskDeferred] = []
        self.serialized: list[tuple[str, dict[str, Any]]] = []
        self.events: list[dict[str, Any]] = []

    def run(
        self,
        *,
        stop_at: int | None = None,
        on_defer: Callable[[int, TaskDeferred], None] | None = None,
    ) -> Any:
        """The task's return value (or its exception). ``stop_at=n`` re-raises the n-th ``TaskDeferred``."""
        task = self.make()
        if self.mode == "worker":
            return task.execute(self.ctx)
        step: Callable[[], Any] = lambda: task.execute(self.ctx)  # noqa: E731
        while True:
            try:
                return step()
            except TaskDeferred as deferred:
                self.deferrals.append(deferred)
                self.serialized.append(deferred.trigger.serialize())
                if on_defer is not None:
                    on_defer(len(self.deferrals), deferred)
                if stop_at == len(self.deferrals):
                    raise
                event = run_trigger(restore_trigger(deferred.trigger))
                self.events.append(event)
                step = self._resume(deferred, event)

    def _resume(self, deferred: TaskDeferred, event: dict[str, Any]) -> Callable[[], Any]:
        method = getattr(self.make(), deferred.method_name)  # Airflow resumes a new instance
        kwargs = dict(deferred.kwargs or {})
        return lambda: method(self.ctx, event=event, **kwargs)


def outcome_of(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """``(result, None)`` or ``(None, exception)``."""
    try:
        return fn(), None
    except Exception as err:
        return None, err


# ---- an API that stops answering: connection refused ---------------------------------------------------


class TcpForwarder:
    """A loopback TCP forwarder to the sandbox. :meth:`close` makes it refuse connections.

    Closing also cuts the connections already open, so pooled keep-alive connections fail too:
    from then on every attempt is "connection refused", as when the API host goes away.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="reliability-forwarder", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if self._closed.is_set():
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            self._listener.close()
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._sockets.clear()


@pytest.fixture
def forwarder(reliability_sandbox: SandboxServer) -> Iterator[TcpForwarder]:
    fwd = TcpForwarder(reliability_sandbox.host, reliability_sandbox.port)
    yield fwd
    fwd.close()


def scan_for_secrets(texts: dict[str, Any], secrets: tuple[str, ...] = SECRETS) -> list[str]:
    """``["<where>: <secret>", ...]`` for every secret found in any of ``texts`` (values JSON-dumped)."""
    found = []
    for where, value in texts.items():
        text = value if isinstance(value, str) else json.dumps(value, default=repr)
        for secret in secrets:
            if secret and secret in text:
                found.append(f"{where}: {secret[:6]}...")
    return found
