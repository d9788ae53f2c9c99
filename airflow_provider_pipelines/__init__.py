"""Apache Airflow 3 provider for Cognite Data Fusion, Edge Impulse and HERE platform pipelines."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "get_provider_info"]


def get_provider_info() -> dict:  # type: ignore[type-arg]
    from airflow_provider_pipelines.get_provider_info import get_provider_info as _info

    return _info()
