"""A local, faithful emulator of the Cognite, Edge Impulse and HERE pipeline APIs.

Importing this package is cheap: the server, the app and the state are loaded on first use.

>>> from airflow_provider_pipelines.sandbox import SandboxServer  # doctest: +SKIP
>>> with SandboxServer(port=0) as sb:  # doctest: +SKIP
...     print(sb.url)

See ``docs/sandbox.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_pipelines.sandbox.app import create_app
    from airflow_provider_pipelines.sandbox.clock import SandboxClock
    from airflow_provider_pipelines.sandbox.server import SandboxServer
    from airflow_provider_pipelines.sandbox.state import SandboxState

__all__ = ["SandboxClock", "SandboxServer", "SandboxState", "create_app"]

_LAZY = {
    "SandboxServer": "airflow_provider_pipelines.sandbox.server",
    "SandboxState": "airflow_provider_pipelines.sandbox.state",
    "SandboxClock": "airflow_provider_pipelines.sandbox.clock",
    "create_app": "airflow_provider_pipelines.sandbox.app",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
