"""Extra links from a task to its remote run, read from XComs the operators push before waiting.

Each operator pushes the URL under the link's :attr:`~_XComUrlLink.key` right after it starts
(or adopts) the remote run, so the button works while the task waits or defers, and after it
failed. Where the URL comes from:

- :class:`CogniteEntityMatchingRunLink` (XCom ``run_url``): a URL pattern, **unconfirmed**
  (``CogniteHook.fusion_url``);
- :class:`EdgeImpulsePipelineLink` (XCom ``pipeline_url``): a URL pattern, **unconfirmed**
  (``STUDIO_PIPELINES_URL`` in ``hooks/edge_impulse.py``);
- :class:`HerePipelineUILink` (XCom ``pipeline_ui_url``): given by the API (``pipelineUIUrl`` of
  the job, or of the version before a job exists);
- :class:`HereLoggingLink` (XCom ``logging_url``): given by the API (``loggingUrl``, likewise).

A link shows only ``http``/``https`` URLs: anything else in the XCom (for example a
``javascript:`` URL from a misbehaving API) gives no link rather than a dangerous one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_pipelines._compat import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

#: The URL schemes a link may point to.
SAFE_SCHEMES = ("http", "https")


def safe_url(value: Any) -> str:
    """``value`` when it is an absolute http(s) URL, else ``""`` (no link)."""
    if not isinstance(value, str):
        return ""
    url = value.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme.lower() not in SAFE_SCHEMES or not parts.netloc:
        return ""
    return url


class _XComUrlLink(BaseOperatorLink):
    """A link whose URL the operator stored in XCom under :attr:`key` (empty: no button)."""

    name = ""
    key = ""

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return safe_url(XCom.get_value(key=self.key, ti_key=ti_key))


class CogniteEntityMatchingRunLink(_XComUrlLink):
    """The entity matching run in Cognite Fusion.

    Cognite documents no deep-link pattern; the URL is built by ``CogniteHook.fusion_url`` and is
    **unconfirmed** (see the Cognite connection page).
    """

    name = "CDF entity matching run"
    key = "run_url"


class EdgeImpulsePipelineLink(_XComUrlLink):
    """The organization's pipelines in Edge Impulse Studio.

    Edge Impulse documents no deep link to a pipeline or a run; the URL comes from
    ``STUDIO_PIPELINES_URL`` in ``hooks/edge_impulse.py`` and is **unconfirmed**.
    """

    name = "Edge Impulse pipeline"
    key = "pipeline_url"


class HerePipelineUILink(_XComUrlLink):
    """The job's (or version's) pipeline UI, as the HERE Pipeline API gives it (``pipelineUIUrl``)."""

    name = "HERE pipeline UI"
    key = "pipeline_ui_url"


class HereLoggingLink(_XComUrlLink):
    """The job's (or version's) logs, as the HERE Pipeline API gives them (``loggingUrl``)."""

    name = "HERE job logs"
    key = "logging_url"


__all__ = [
    "SAFE_SCHEMES",
    "CogniteEntityMatchingRunLink",
    "EdgeImpulsePipelineLink",
    "HereLoggingLink",
    "HerePipelineUILink",
    "safe_url",
]
