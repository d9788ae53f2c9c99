"""``SandboxServer``: run the sandbox with uvicorn in a background thread (tests, demos)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from airflow_provider_pipelines.sandbox.clock import SandboxClock
from airflow_provider_pipelines.sandbox.config import ConfigError
from airflow_provider_pipelines.sandbox.connections import connection_dicts, connections
from airflow_provider_pipelines.sandbox.state import SandboxState

__all__ = ["SandboxServer", "bind_socket", "url_for"]

_RESOURCE_KINDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("cognite", "entity_matching"): ("cognite", "entity_matching", "pipelines"),
    ("cognite", "estimate_quality"): ("cognite", "estimate_quality", "joins"),
    ("edge_impulse", "pipelines"): ("edge_impulse", "pipelines"),
    ("here", "versions"): ("here", "versions"),
}


def url_for(host: str, port: int) -> str:
    """The URL clients should use (a wildcard bind address is shown as the loopback address)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (``port=0``: a free port chosen by the OS)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class SandboxServer:
    """The sandbox served by uvicorn on ``host:port`` in a daemon thread.

    >>> with SandboxServer(port=0) as sb:  # doctest: +SKIP
    ...     sb.url
    'http://127.0.0.1:54321'

    The object is ready (accepting connections) when :meth:`start` / ``__enter__`` returns.
    Every method is thread-safe and acts directly on the in-memory state.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        config: Mapping[str, Any] | None = None,
        *,
        log_level: str = "warning",
        startup_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self.state = SandboxState(config)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> SandboxServer:
        if self._thread is not None:
            return self
        import uvicorn

        from airflow_provider_pipelines.sandbox.app import create_app
        from airflow_provider_pipelines.sandbox.faults import install_log_filter

        install_log_filter()
        self._socket = bind_socket(self.host, self.port)
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.state),
            log_level=self.log_level,
            log_config=None,
            access_log=False,
            lifespan="off",
            http="h11",
            loop="asyncio",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"pipelines-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the pipelines sandbox did not start within {self.startup_timeout} s")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
        self._thread = None
        self._server = None
        self._socket = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return url_for(self.host, self.port)

    def connections(self) -> dict[str, str]:
        """``{"AIRFLOW_CONN_COGNITE_DEFAULT": "<json>", ...}`` for this sandbox."""
        return connections(self.url)

    def connection_dicts(self) -> dict[str, dict[str, Any]]:
        return connection_dicts(self.url)

    # -- simulation ----------------------------------------------------------------------------
    @property
    def clock(self) -> SandboxClock:
        """The simulation clock: ``sb.clock.freeze()``, ``sb.clock.advance(2.5)``, ``sb.clock.now()``."""
        return self.state.clock

    def advance(self, seconds: float) -> float:
        """Advance the clock and run the simulation steps that became due."""
        self.state.clock.advance(seconds)
        return self.state.tick() / 1000.0

    def reset(self, config: Mapping[str, Any] | None = None) -> None:
        """Back to the seed state (base config + optional patch); clears faults, log, tokens, runs."""
        self.state.reset(config)

    def configure(self, patch: Mapping[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
        """Change simulation knobs at run time; e.g. ``sb.configure(cognite={"token_lifetime": 5})``."""
        merged: dict[str, Any] = dict(patch or {})
        merged.update(sections)
        return self.state.configure(merged)

    def configure_resource(self, vendor: str, kind: str, key: str | int, **knobs: Any) -> dict[str, Any]:
        """Knobs of one resource, e.g. ``sb.configure_resource("cognite", "entity_matching",
        "sandbox.em.assets", running=None)``. Kinds: cognite/entity_matching (pipeline externalId or id),
        cognite/estimate_quality (advanced join externalId), edge_impulse/pipelines (pipeline id),
        here/versions (pipeline version id)."""
        path = _RESOURCE_KINDS.get((vendor, kind))
        if path is None:
            raise ConfigError(f"unknown resource kind {vendor}/{kind}; known: {sorted(_RESOURCE_KINDS)}")
        patch: dict[str, Any] = {str(key): knobs}
        for part in reversed(path):
            patch = {part: patch}
        return self.state.configure(patch)

    def expire_tokens(self, vendor: str | None = None) -> dict[str, int]:
        """Invalidate the issued tokens of ``vendor`` (None: all); Edge Impulse: revoke the API keys."""
        return self.state.expire_tokens(vendor)

    # -- faults and request log ----------------------------------------------------------------
    def inject_fault(
        self,
        method: str | None = "*",
        path: str | None = "*",
        action: str = "status",
        times: int | None = 1,
        **params: Any,
    ) -> dict[str, Any]:
        """Add a fault; params: status, retry_after, seconds, body, headers, skip, vendor."""
        return self.state.faults.add(action, method, path, times, **params).as_dict()

    def faults(self) -> list[dict[str, Any]]:
        return self.state.faults.list()

    def clear_faults(self) -> int:
        return self.state.faults.clear()

    def requests(
        self,
        method: str | None = None,
        path: str | None = None,
        vendor: str | None = None,
        status: int | None = None,
    ) -> list[dict[str, Any]]:
        """Logged requests (oldest first), filtered by method, path glob, vendor and status."""
        return self.state.log.entries(method=method, path=path, vendor=vendor, status=status)

    def clear_requests(self) -> int:
        return self.state.log.clear()
