"""Edge Impulse emulator, with every response body validated by the official edgeimpulse_api models."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from edgeimpulse_api.models.generic_api_response import GenericApiResponse
from edgeimpulse_api.models.get_organization_pipelines_response import GetOrganizationPipelinesResponse
from edgeimpulse_api.models.list_organization_pipelines_response import ListOrganizationPipelinesResponse
from edgeimpulse_api.models.run_organization_pipeline_response import RunOrganizationPipelineResponse

from airflow_provider_pipelines.sandbox import SandboxServer
from airflow_provider_pipelines.sandbox.config import EI_PROJECT_API_KEY, EI_PROJECT_HMAC_KEY

from .conftest import EI, ei


def parse(model: Any, response: requests.Response) -> Any:
    """Validate with the official model (pydantic v1 ``parse_obj`` validates, ``from_json`` only builds)."""
    model.from_json(response.text)
    return model.parse_obj(response.json())


def get_pipeline(sb: SandboxServer, pid: int) -> dict[str, Any]:
    r = requests.get(ei(sb, f"/{pid}"), headers=EI, timeout=5)
    assert r.status_code == 200
    parse(GetOrganizationPipelinesResponse, r)
    body = r.json()
    assert body["success"] is True
    return dict(body["pipeline"])


def test_auth(sb: SandboxServer) -> None:
    for headers in ({}, {"x-api-key": "ei_wrong"}):
        r = requests.get(ei(sb, "/12"), headers=headers, timeout=5)
        assert r.status_code == 401
        parse(GenericApiResponse, r)
        assert r.json()["success"] is False and r.json()["error"]


def test_list_and_get_pipeline(sb: SandboxServer) -> None:
    r = requests.get(ei(sb), headers=EI, timeout=5)
    assert r.status_code == 200
    parsed = parse(ListOrganizationPipelinesResponse, r)
    assert [p.id for p in parsed.pipelines] == [12, 13, 14]
    pipeline = get_pipeline(sb, 12)
    assert pipeline["name"] == "nightly" and len(pipeline["steps"]) == 2
    assert (
        pipeline["currentRun"] is None
        and pipeline["lastRun"] is None
        and pipeline["lastRunStartError"] is None
    )
    assert pipeline["steps"][1]["projectApiKey"] == EI_PROJECT_API_KEY
    assert pipeline["steps"][1]["projectHmacKey"] == EI_PROJECT_HMAC_KEY
    assert pipeline["feedingIntoDataset"]["itemCount"] == 100


def test_unknown_ids_answer_200_success_false(sb: SandboxServer) -> None:
    for url in (ei(sb, "/99"), f"{sb.url}/v1/api/organizations/2/pipelines/12", ei(sb, "/abc")):
        r = requests.get(url, headers=EI, timeout=5)
        assert r.status_code == 200, url
        parse(GenericApiResponse, r)
        assert r.json()["success"] is False and r.json()["error"]
    r = requests.post(ei(sb, "/99/run"), headers=EI, timeout=5)
    assert r.status_code == 200 and r.json()["success"] is False


def test_unknown_status_is_configurable(sb: SandboxServer) -> None:
    sb.configure(edge_impulse={"unknown_status": 404})
    r = requests.get(ei(sb, "/99"), headers=EI, timeout=5)
    assert r.status_code == 404 and r.json() == {"success": False, "error": "Pipeline 99 not found"}


def test_run_progression_nightly(sb: SandboxServer) -> None:
    r = requests.post(ei(sb, "/12/run?ignoreLastSuccessfulRun=false"), headers=EI, timeout=5)
    assert r.status_code == 200
    parsed = parse(RunOrganizationPipelineResponse, r)
    run = r.json()["pipelineRun"]
    assert r.json()["success"] is True and r.json()["error"] is None
    assert parsed.pipeline_run.id == run["id"] == 1001
    assert run["finished"] is None and run["itemCountBefore"]["itemCount"] == 100
    first = run["steps"][0]["transformationJob"]
    assert first["status"] == "waiting" and first["inProgress"] is True
    assert "transformationJob" not in run["steps"][1]  # not started yet
    assert run["steps"][1]["projectApiKey"] == EI_PROJECT_API_KEY  # the real API returns it: clients redact

    seen: list[tuple[str, str, str]] = []
    for _ in range(12):
        pipeline = get_pipeline(sb, 12)
        current = pipeline["currentRun"]
        if current is None:
            break
        assert current["id"] == run["id"] and current["finished"] is None
        job = [s["transformationJob"] for s in current["steps"] if "transformationJob" in s][-1]
        seen.append((job["status"], job["transformJobStatus"], job["uploadJobStatus"]))
        assert set(job["transformationSummary"]) == {
            "startedCount",
            "succeededCount",
            "finishedCount",
            "totalFileCount",
            "totalTimeSpentSeconds",
        }
        sb.advance(0.25)
    assert ("waiting", "waiting", "waiting") in seen
    assert ("created", "created", "waiting") in seen
    assert ("started", "started", "waiting") in seen
    assert ("started", "finished", "started") in seen
    pipeline = get_pipeline(sb, 12)
    assert pipeline["currentRun"] is None
    last = pipeline["lastRun"]
    assert last["id"] == run["id"] and last["finished"] is not None
    assert last["itemCountAfter"]["itemCount"] == 110 and last["itemCountImportIntoProjectFailed"] == 0
    for step in last["steps"]:
        job = step["transformationJob"]
        assert (job["status"], job["transformJobStatus"], job["uploadJobStatus"]) == ("finished",) * 3
        assert job["inProgress"] is False and job["pipelineRunId"] == run["id"]
    assert pipeline["feedingIntoDataset"]["itemCount"] == 110
    # 2 steps x (0.25 + 0.25 + 0.5 + 0.25) = 2.5 s in total
    created = last["created"]
    assert created.endswith("Z") and last["finished"] > created

    r2 = requests.post(ei(sb, "/12/run?ignoreLastSuccessfulRun=true"), headers=EI, timeout=5)
    assert r2.json()["pipelineRun"]["itemCountBefore"]["itemCount"] == 110  # item counts grow


def test_failing_pipeline(sb: SandboxServer) -> None:
    r = requests.post(ei(sb, "/13/run"), headers=EI, timeout=5)
    parse(RunOrganizationPipelineResponse, r)
    sb.advance(10)
    pipeline = get_pipeline(sb, 13)
    assert pipeline["currentRun"] is None
    last = pipeline["lastRun"]
    assert last["finished"] is not None
    failed = last["steps"][1]["transformationJob"]
    assert failed["status"] == "failed" and failed["transformJobStatus"] == "failed"
    summary = failed["transformationSummary"]
    assert summary["succeededCount"] < summary["finishedCount"]
    assert last["steps"][0]["transformationJob"]["status"] == "finished"
    assert last["itemCountAfter"] == last["itemCountBefore"]


def test_broken_start(sb: SandboxServer) -> None:
    r = requests.post(ei(sb, "/14/run"), headers=EI, timeout=5)
    assert r.status_code == 200
    parse(RunOrganizationPipelineResponse, r)
    pipeline = get_pipeline(sb, 14)
    assert pipeline["lastRunStartError"] and pipeline["currentRun"] is None and pipeline["lastRun"] is None


def test_broken_start_rejected_mode(sb: SandboxServer) -> None:
    sb.configure_resource("edge_impulse", "pipelines", 14, start_error_mode="rejected")
    r = requests.post(ei(sb, "/14/run"), headers=EI, timeout=5)
    assert r.status_code == 200
    parse(GenericApiResponse, r)
    assert r.json()["success"] is False and "transformation block" in r.json()["error"]


def test_run_while_running_and_stop(sb: SandboxServer) -> None:
    first = requests.post(ei(sb, "/12/run"), headers=EI, timeout=5).json()["pipelineRun"]["id"]
    r = requests.post(ei(sb, "/12/run"), headers=EI, timeout=5)
    assert r.status_code == 200
    parse(GenericApiResponse, r)
    assert r.json()["success"] is False and str(first) in r.json()["error"]
    sb.advance(0.6)  # step 0 transform started
    r = requests.post(ei(sb, "/12/stop"), headers=EI, timeout=5)
    assert r.status_code == 200
    parse(GenericApiResponse, r)
    assert r.json()["success"] is True
    pipeline = get_pipeline(sb, 12)
    assert pipeline["currentRun"] is None and pipeline["lastRun"]["id"] == first
    job = pipeline["lastRun"]["steps"][0]["transformationJob"]
    assert job["status"] == "failed" and job["transformJobStatus"] == "failed" and job["inProgress"] is False
    assert pipeline["lastRun"]["finished"] is not None
    sb.advance(10)  # nothing moves after a stop
    assert get_pipeline(sb, 12)["lastRun"]["steps"][0]["transformationJob"]["status"] == "failed"
    r = requests.post(ei(sb, "/12/stop"), headers=EI, timeout=5)
    assert r.status_code == 200 and r.json()["success"] is False


def test_invalid_query_flag(sb: SandboxServer) -> None:
    r = requests.post(ei(sb, "/12/run?ignoreLastSuccessfulRun=maybe"), headers=EI, timeout=5)
    assert r.status_code == 200 and r.json()["success"] is False


def test_never_finishing_step(sb: SandboxServer) -> None:
    sb.configure_resource("edge_impulse", "pipelines", 12, transform="inf")
    requests.post(ei(sb, "/12/run"), headers=EI, timeout=5)
    sb.advance(100_000)
    current = get_pipeline(sb, 12)["currentRun"]
    assert current is not None and current["steps"][0]["transformationJob"]["status"] == "started"


def test_unknown_route_uses_envelope(sb: SandboxServer) -> None:
    r = requests.get(f"{sb.url}/v1/api/organizations/1/nothing", headers=EI, timeout=5)
    assert r.status_code == 404
    assert r.json()["success"] is False


@pytest.mark.parametrize("pid", [12, 13, 14])
def test_all_seeded_pipelines_parse(sb: SandboxServer, pid: int) -> None:
    requests.post(ei(sb, f"/{pid}/run"), headers=EI, timeout=5)
    for _ in range(6):
        get_pipeline(sb, pid)
        sb.advance(0.5)
    body = get_pipeline(sb, pid)
    json.dumps(body)
