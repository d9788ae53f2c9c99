"""Airflow connections (``AIRFLOW_CONN_*`` JSON form) pointing at a sandbox URL."""

from __future__ import annotations

import json
import shlex
from typing import Any

from airflow_provider_pipelines.sandbox.config import (
    COGNITE_CLIENT_ID,
    COGNITE_CLIENT_SECRET,
    COGNITE_PROJECT,
    COGNITE_TENANT,
    EI_API_KEY,
    HERE_ACCESS_KEY_ID,
    HERE_ACCESS_KEY_SECRET,
)

__all__ = ["connection_dicts", "connections", "export_lines"]


def connection_dicts(url: str) -> dict[str, dict[str, Any]]:
    """The three default connections as dicts, keyed by environment variable name."""
    url = url.rstrip("/")
    return {
        "AIRFLOW_CONN_COGNITE_DEFAULT": {
            "conn_type": "cognite",
            "host": url,
            "login": COGNITE_CLIENT_ID,
            "password": COGNITE_CLIENT_SECRET,
            "extra": {
                "project": COGNITE_PROJECT,
                "token_url": f"{url}/{COGNITE_TENANT}/oauth2/v2.0/token",
                "scopes": f"{url}/.default",
            },
        },
        "AIRFLOW_CONN_EDGE_IMPULSE_DEFAULT": {
            "conn_type": "edge_impulse",
            "host": url,
            "password": EI_API_KEY,
        },
        "AIRFLOW_CONN_HERE_DEFAULT": {
            "conn_type": "here_platform",
            "host": f"{url}/pipeline-service",
            "login": HERE_ACCESS_KEY_ID,
            "password": HERE_ACCESS_KEY_SECRET,
            "extra": {"token_endpoint_url": f"{url}/oauth2/token"},
        },
    }


def connections(url: str) -> dict[str, str]:
    """``{"AIRFLOW_CONN_...": "<json>"}`` for the sandbox at ``url``."""
    return {name: json.dumps(conn) for name, conn in connection_dicts(url).items()}


def export_lines(url: str) -> list[str]:
    """Shell ``export`` lines for the connections."""
    return [f"export {name}={shlex.quote(value)}" for name, value in connections(url).items()]
