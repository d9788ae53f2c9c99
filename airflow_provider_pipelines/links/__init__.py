"""Extra links from a task to the remote run, read from XComs the operators push before waiting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_pipelines._compat import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey


class _XComUrlLink(BaseOperatorLink):
    """A link whose URL the operator stored in XCom under :attr:`key`."""

    name = ""
    key = ""

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        try:
            from airflow.sdk.execution_time.xcom import XCom
        except ImportError:  # pragma: no cover
            return ""
        value = XCom.get_value(key=self.key, ti_key=ti_key)
        return str(value) if value else ""


class CogniteEntityMatchingRunLink(_XComUrlLink):
    """The run in Cognite Fusion (URL pattern unconfirmed: see docs/connections/cognite.md)."""

    name = "CDF entity matching run"
    key = "run_url"


class EdgeImpulsePipelineLink(_XComUrlLink):
    """The organization pipeline in Edge Impulse Studio (URL pattern unconfirmed)."""

    name = "Edge Impulse pipeline"
    key = "pipeline_url"


class HerePipelineUILink(_XComUrlLink):
    """HERE ``pipelineUIUrl`` of the job (given by the API)."""

    name = "HERE pipeline UI"
    key = "pipeline_ui_url"


class HereLoggingLink(_XComUrlLink):
    """HERE ``loggingUrl`` of the job (given by the API)."""

    name = "HERE job logs"
    key = "logging_url"


__all__ = ["CogniteEntityMatchingRunLink", "EdgeImpulsePipelineLink", "HereLoggingLink", "HerePipelineUILink"]
