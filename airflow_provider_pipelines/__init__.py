"""Apache Airflow 3 provider for Cognite Data Fusion, Edge Impulse and HERE platform pipelines.

Airflow reads the provider metadata through the ``apache_airflow_provider`` entry point,
``airflow_provider_pipelines.get_provider_info:get_provider_info``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
