"""pytest helpers for tests that need a running sandbox.

In a ``conftest.py``::

    from airflow_provider_pipelines.sandbox.testing import sandbox_fixture

    sandbox = sandbox_fixture()                      # session-scoped server, reset before each test
    sandbox_manual = sandbox_fixture(name="sandbox_manual", clock="manual")

and in a test::

    def test_x(sandbox, monkeypatch):
        use_sandbox_connections(sandbox, monkeypatch)   # sets the AIRFLOW_CONN_* variables
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from airflow_provider_pipelines.sandbox.server import SandboxServer

__all__ = ["sandbox_fixture", "use_sandbox_connections"]


def use_sandbox_connections(sandbox: SandboxServer, monkeypatch: Any) -> dict[str, str]:
    """Point the default Airflow connections at ``sandbox`` via ``AIRFLOW_CONN_*`` variables."""
    conns = sandbox.connections()
    for name, value in conns.items():
        monkeypatch.setenv(name, value)
    return conns


_SERVERS: dict[str, SandboxServer] = {}


def sandbox_fixture(
    name: str = "sandbox",
    *,
    config: Mapping[str, Any] | None = None,
    clock: str | None = None,
    reset_each_test: bool = True,
) -> Callable[..., Any]:
    """A pytest fixture named ``name``: one :class:`SandboxServer` per session, reset before each test.

    Assign the result to a module-level name in a ``conftest.py`` (or test module).
    ``clock="manual"`` starts every test with a frozen clock (advance it with ``sandbox.advance(s)``).
    """
    import pytest

    patch: dict[str, Any] = dict(config or {})
    if clock is not None:
        patch["clock"] = {**patch.get("clock", {}), "mode": clock}

    @pytest.fixture(name=name)
    def _sandbox(request: Any) -> Iterator[SandboxServer]:
        server = _SERVERS.get(name)
        if server is None:
            server = SandboxServer(port=0, config=patch).start()
            _SERVERS[name] = server

            def _stop(srv: SandboxServer = server) -> None:
                srv.stop()
                _SERVERS.pop(name, None)

            request.config.add_cleanup(_stop)
        elif reset_each_test:
            server.reset()
        yield server

    return _sandbox
