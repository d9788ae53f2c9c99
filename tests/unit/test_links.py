"""Extra links: each operator declares them, provider info lists them, ``get_link`` reads the URL
from XCom (only http/https), and the operators push those XComs before they wait, so the link
exists while the task waits or defers and after it failed.

The XCom pushes are checked against the sandbox (real HTTP, the vendors' URL fields as the
sandbox serves them), with failing remote runs.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from typing import Any
from unittest import mock

import pytest

import airflow_provider_pipelines.links as links_module
from airflow_provider_pipelines._compat import BaseOperator, BaseOperatorLink, TaskDeferred
from airflow_provider_pipelines.get_provider_info import get_provider_info
from airflow_provider_pipelines.jobs.base import JobFailedError
from airflow_provider_pipelines.links import (
    CogniteEntityMatchingRunLink,
    EdgeImpulsePipelineLink,
    HereLoggingLink,
    HerePipelineUILink,
    safe_url,
)
from airflow_provider_pipelines.operators.cognite import CogniteEntityMatchingPipelineRunOperator
from airflow_provider_pipelines.operators.edge_impulse import EdgeImpulseRunPipelineOperator
from airflow_provider_pipelines.operators.here import HereSchedulePipelineVersionOperator
from airflow_provider_pipelines.sandbox.config import (
    EI_ORGANIZATION_ID,
    EI_PIPELINE_FAILING,
    EM_PIPELINE_FAILING_ID,
    HERE_PIPELINE_FAILING,
    HERE_VERSION_FAILING,
)
from airflow_provider_pipelines.sensors.here import HerePipelineJobSensor

LINK_CLASSES = [CogniteEntityMatchingRunLink, EdgeImpulsePipelineLink, HerePipelineUILink, HereLoggingLink]
#: Operator (or sensor) -> the links it must offer.
DECLARED = {
    CogniteEntityMatchingPipelineRunOperator: [CogniteEntityMatchingRunLink],
    EdgeImpulseRunPipelineOperator: [EdgeImpulsePipelineLink],
    HereSchedulePipelineVersionOperator: [HerePipelineUILink, HereLoggingLink],
    HerePipelineJobSensor: [HerePipelineUILink, HereLoggingLink],
}
TI_KEY = mock.sentinel.ti_key


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------------------------------
# the link classes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("link_class", LINK_CLASSES, ids=lambda c: c.__name__)
def test_get_link_reads_the_url_from_its_xcom_key(link_class: type[Any]) -> None:
    from airflow.sdk.execution_time.xcom import XCom

    url = f"https://example.test/{link_class.key}/run/42?x=1"
    with mock.patch.object(XCom, "get_value", return_value=url) as get_value:
        assert link_class().get_link(mock.sentinel.operator, ti_key=TI_KEY) == url
    get_value.assert_called_once_with(key=link_class.key, ti_key=TI_KEY)


@pytest.mark.parametrize("stored", [None, "", "   ", 42, {"url": "https://x.test"}, ["https://x.test"],
                                    "javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,hi",
                                    "file:///etc/passwd", "//evil.test/x", "/relative/path", "https://",
                                    "http://[::1"])
def test_no_link_for_a_missing_or_unsafe_value(stored: Any) -> None:
    from airflow.sdk.execution_time.xcom import XCom

    with mock.patch.object(XCom, "get_value", return_value=stored):
        assert HerePipelineUILink().get_link(mock.sentinel.operator, ti_key=TI_KEY) == ""


def test_safe_url_keeps_http_and_https() -> None:
    assert safe_url("http://127.0.0.1:8765/_sandbox/here/logs?jobId=1") == (
        "http://127.0.0.1:8765/_sandbox/here/logs?jobId=1")
    assert safe_url("  HTTPS://platform.here.com/pipelines/x  ") == "HTTPS://platform.here.com/pipelines/x"


def test_links_have_unique_names_and_keys() -> None:
    assert len({c.name for c in LINK_CLASSES}) == len(LINK_CLASSES)
    assert len({c.key for c in LINK_CLASSES}) == len(LINK_CLASSES)
    assert all(issubclass(c, BaseOperatorLink) and c.name and c.key for c in LINK_CLASSES)
    # Airflow stores each link's URL under this XCom key at task end: no clash with ours
    assert all(c().xcom_key == f"_link_{c.__name__}" for c in LINK_CLASSES)


def test_provider_info_lists_exactly_the_link_classes() -> None:
    defined = {_dotted(obj) for _, obj in inspect.getmembers(links_module, inspect.isclass)
               if issubclass(obj, BaseOperatorLink) and obj.__module__ == links_module.__name__
               and not obj.__name__.startswith("_")}
    listed = get_provider_info()["extra-links"]
    assert len(listed) == len(set(listed))
    assert set(listed) == defined == {_dotted(c) for c in LINK_CLASSES}
    for dotted in listed:
        module, _, name = dotted.rpartition(".")
        assert getattr(importlib.import_module(module), name) in LINK_CLASSES


@pytest.mark.parametrize("operator_class", list(DECLARED), ids=lambda c: c.__name__)
def test_each_operator_declares_its_links(operator_class: type[BaseOperator]) -> None:
    declared = operator_class.operator_extra_links
    assert [type(link) for link in declared] == DECLARED[operator_class]


def test_every_link_is_offered_by_some_operator() -> None:
    offered = {link for links in DECLARED.values() for link in links}
    assert offered == set(LINK_CLASSES)


# --------------------------------------------------------------------------------------------
# the XCom pushes, against the sandbox
# --------------------------------------------------------------------------------------------


class FakeTI:
    """The task instance as operators use it: identity for correlation ids, and ``xcom_push``."""

    dag_id, run_id, task_id, map_index, try_number = "links", "manual__1", "run", -1, 1

    def __init__(self) -> None:
        self.pushed: list[tuple[str, Any]] = []

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed.append((key, json.loads(json.dumps(value))))

    @property
    def xcom(self) -> dict[str, Any]:
        return dict(self.pushed)


def _context() -> dict[str, Any]:
    return {"ti": FakeTI()}


@pytest.fixture
def quick(sandbox: Any) -> Any:
    """Short simulated runs, so a failing run fails within a second or two."""
    sandbox.configure(
        cognite={"entity_matching": {"default": {"queued": 0.1, "running": 0.3}}},
        edge_impulse={"default": {"waiting": 0.05, "created": 0.05, "transform": 0.1, "upload": 0.05}},
        here={"default": {"operation_accepted": 0.05, "operation_processing": 0.1, "job_starting": 0.1,
                          "job_running": 0.3, "scheduled_job_delay": 0.2}},
    )
    return sandbox


def _operators(sandbox: Any) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Per vendor: (operator factory for a run that fails, expected URL XComs as regexes)."""
    url = re.escape(sandbox.url)
    cluster = re.escape(sandbox.url.split("://", 1)[1])
    return {
        "cognite": (
            lambda **kw: CogniteEntityMatchingPipelineRunOperator(
                task_id="run", pipeline_id=EM_PIPELINE_FAILING_ID, poll_interval=0.1, timeout=60, **kw),
            {"run_url": rf"https://fusion\.cognite\.com/sandbox/entity_matching/pipelines/"
                        rf"{EM_PIPELINE_FAILING_ID}/runs/\d+\?cluster={cluster}"},
        ),
        "edge_impulse": (
            lambda **kw: EdgeImpulseRunPipelineOperator(
                task_id="run", organization_id=EI_ORGANIZATION_ID, pipeline_id=EI_PIPELINE_FAILING,
                poll_interval=0.1, timeout=60, **kw),
            {"pipeline_url": rf"{url}/organization/{EI_ORGANIZATION_ID}/pipelines"},
        ),
        "here": (
            lambda **kw: HereSchedulePipelineVersionOperator(
                task_id="run", pipeline_id=HERE_PIPELINE_FAILING, pipeline_version_id=HERE_VERSION_FAILING,
                input_catalogs={"weather": {"processingType": "changes", "version": 75, "sinceVersion": 70}},
                poll_interval=0.1, timeout=60, **kw),
            {"pipeline_ui_url": rf"{url}/_sandbox/here/.+", "logging_url": rf"{url}/_sandbox/here/logs\?.+"},
        ),
    }


VENDORS = ["cognite", "edge_impulse", "here"]


@pytest.mark.parametrize("vendor", VENDORS)
def test_urls_are_pushed_before_waiting_so_a_failed_task_has_its_links(quick: Any, vendor: str) -> None:
    make, expected = _operators(quick)[vendor]
    context = _context()
    with pytest.raises(JobFailedError):
        make(deferrable=False).execute(context)
    pushed = context["ti"].xcom
    for key, pattern in expected.items():
        assert key in pushed, f"{vendor}: no {key} XCom; pushed {sorted(pushed)}"
        assert re.fullmatch(pattern, pushed[key]), (key, pushed[key])
        assert safe_url(pushed[key]) == pushed[key]  # the link will show it


@pytest.mark.parametrize("vendor", VENDORS)
def test_urls_are_pushed_before_deferring(quick: Any, vendor: str) -> None:
    make, expected = _operators(quick)[vendor]
    context = _context()
    quick.clock.freeze()  # the run stays active: the operator has to defer
    try:
        with pytest.raises(TaskDeferred):
            make(deferrable=True).execute(context)
    finally:
        quick.clock.unfreeze()
    pushed = context["ti"].xcom
    for key, pattern in expected.items():
        assert key in pushed, f"{vendor}: no {key} XCom at the deferral; pushed {sorted(pushed)}"
        assert re.fullmatch(pattern, pushed[key]), (key, pushed[key])


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_link_shows_what_the_operator_pushed(quick: Any, vendor: str) -> None:
    """The whole path: the XCom the operator pushed is what the link button opens."""
    from airflow.sdk.execution_time.xcom import XCom

    make, _ = _operators(quick)[vendor]
    context = _context()
    operator = make(deferrable=False)
    with pytest.raises(JobFailedError):
        operator.execute(context)
    pushed = context["ti"].xcom
    for link in operator.operator_extra_links:
        with mock.patch.object(XCom, "get_value", side_effect=lambda key, ti_key: pushed.get(key)):
            assert link.get_link(operator, ti_key=TI_KEY) == pushed[link.key]
