"""Cognite emulator: token endpoint, entity matching pipelines, advanced joins, extraction pipelines."""

from __future__ import annotations

import gzip
import json
import uuid

import pytest
import requests

from airflow_provider_pipelines.sandbox import SandboxServer
from airflow_provider_pipelines.sandbox.config import (
    COGNITE_STATIC_TOKEN,
    EXTPIPE_CONTEXT_XID,
    EXTPIPE_EXTRACTOR_XID,
)

from .conftest import api, cdf, cognite_token

RUN_KEYS = {"jobId", "status", "createdTime", "startTime", "statusTime", "errorMessage"}


# --------------------------------------------------------------------------------------------
# Token endpoint
# --------------------------------------------------------------------------------------------
def token_url(sb: SandboxServer, tenant: str = "sandbox-tenant") -> str:
    return f"{sb.url}/{tenant}/oauth2/v2.0/token"


def test_token_success_shape(sb: SandboxServer) -> None:
    r = requests.post(
        token_url(sb),
        data={
            "grant_type": "client_credentials",
            "client_id": "sandbox-client",
            "client_secret": "sandbox-client-secret",
            "scope": f"{sb.url}/.default",
        },
        timeout=5,
    )
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert isinstance(body["access_token"], str) and body["access_token"]


def test_token_lifetime_is_configurable_and_expiry_is_enforced(sb: SandboxServer) -> None:
    sb.configure(cognite={"token_lifetime": 10})
    r = requests.post(
        token_url(sb),
        data={
            "grant_type": "client_credentials",
            "client_id": "sandbox-client",
            "client_secret": "sandbox-client-secret",
            "scope": f"{sb.url}/.default",
        },
        timeout=5,
    )
    assert r.json()["expires_in"] == 10
    headers = {"Authorization": f"Bearer {r.json()['access_token']}", "cdf-version": "beta"}
    url = api(sb, "/context/entitymatching/pipelines/1")
    assert requests.get(url, headers=headers, timeout=5).status_code == 200
    sb.advance(10)
    r = requests.get(url, headers=headers, timeout=5)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == 401


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "someone-else"}, 401, "invalid_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": None}, 400, "invalid_request"),
        ({"scope": None}, 400, "invalid_request"),
        ({"scope": "https://example.com/user.read"}, 400, "invalid_scope"),
    ],
)
def test_token_errors(sb: SandboxServer, form: dict[str, str | None], status: int, error: str) -> None:
    data: dict[str, str | None] = {
        "grant_type": "client_credentials",
        "client_id": "sandbox-client",
        "client_secret": "sandbox-client-secret",
        "scope": f"{sb.url}/.default",
    }
    data.update(form)
    r = requests.post(token_url(sb), data={k: v for k, v in data.items() if v is not None}, timeout=5)
    assert r.status_code == status
    body = r.json()
    assert body["error"] == error
    assert isinstance(body["error_description"], str)


def test_token_requires_form_body_and_known_tenant(sb: SandboxServer) -> None:
    r = requests.post(token_url(sb), json={"grant_type": "client_credentials"}, timeout=5)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert r.headers["x-ms-request-id"]
    r = requests.post(token_url(sb, "other-tenant"), data={"grant_type": "client_credentials"}, timeout=5)
    assert r.status_code == 400 and "other-tenant" in r.json()["error_description"]


def test_token_accepts_http_basic_client_auth(sb: SandboxServer) -> None:
    r = requests.post(
        token_url(sb),
        data={"grant_type": "client_credentials", "scope": f"{sb.url}/.default"},
        auth=("sandbox-client", "sandbox-client-secret"),
        timeout=5,
    )
    assert r.status_code == 200


# --------------------------------------------------------------------------------------------
# Cross-cutting checks: auth, project, cdf-version, x-request-id, malformed bodies
# --------------------------------------------------------------------------------------------
def test_every_response_has_request_id_and_cdf_error_shape(sb: SandboxServer) -> None:
    r = requests.get(api(sb, "/context/entitymatching/pipelines/1"), timeout=5)
    assert r.status_code == 401
    assert r.headers["x-request-id"]
    assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"code", "message"}
    r2 = requests.get(api(sb, "/context/entitymatching/pipelines/1"), headers=cdf(sb), timeout=5)
    assert r2.status_code == 200
    assert r2.headers["x-request-id"] and r2.headers["x-request-id"] != r.headers["x-request-id"]


@pytest.mark.parametrize("auth", [None, "Bearer not-a-token", "Basic abc", "Bearer "])
def test_bad_bearer_is_401(sb: SandboxServer, auth: str | None) -> None:
    headers = {"cdf-version": "beta"}
    if auth is not None:
        headers["Authorization"] = auth
    r = requests.get(api(sb, "/context/entitymatching/pipelines"), headers=headers, timeout=5)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == 401


def test_static_token_is_accepted(sb: SandboxServer) -> None:
    r = requests.get(
        api(sb, "/context/entitymatching/pipelines/1"),
        headers=cdf(sb, token=COGNITE_STATIC_TOKEN),
        timeout=5,
    )
    assert r.status_code == 200


def test_unknown_project_is_403(sb: SandboxServer) -> None:
    r = requests.get(
        f"{sb.url}/api/v1/projects/nope/context/entitymatching/pipelines/1", headers=cdf(sb), timeout=5
    )
    assert r.status_code == 403
    assert r.json()["error"]["code"] == 403


@pytest.mark.parametrize(
    ("path", "method", "good", "bad"),
    [
        (
            "/context/entitymatching/pipelines/1",
            "GET",
            ["20230101-beta", "beta", "alpha", "20230101-alpha"],
            [None, "20230101", "gamma"],
        ),
        (
            "/advancedjoins/estimatequality/6f1c2a9e-3b4d-4e5f-8a7b-1c2d3e4f5a6b",  # fixed id: xdist
            "GET",
            ["20230101-alpha", "alpha"],
            [None, "beta", "20230101-beta", "20230101"],
        ),
        (
            "/extpipes/runs?externalId=sandbox-extractor",
            "GET",
            [None, "20230101", "20230101-beta", "beta"],
            ["alpha", "20230101-alpha", "nonsense"],
        ),
    ],
)
def test_cdf_version_enforced_per_api_maturity(
    sb: SandboxServer, path: str, method: str, good: list[str | None], bad: list[str | None]
) -> None:
    token = cognite_token(sb)
    for version in good:
        r = requests.request(method, api(sb, path), headers=cdf(sb, version, token), timeout=5)
        assert r.status_code != 400, (version, r.text)
    for version in bad:
        r = requests.request(method, api(sb, path), headers=cdf(sb, version, token), timeout=5)
        assert r.status_code == 400, (version, r.text)
        assert "cdf-version" in r.json()["error"]["message"]


def test_malformed_json_is_400(sb: SandboxServer) -> None:
    headers = {**cdf(sb, None), "Content-Type": "application/json"}
    for path in ("/extpipes/runs", "/extpipes/byids", "/extpipes/runs/list"):
        r = requests.post(api(sb, path), data=b'{"items": [', headers=headers, timeout=5)
        assert r.status_code == 400, path
        assert "Malformed JSON" in r.json()["error"]["message"]
    r = requests.post(api(sb, "/extpipes/runs"), data=b"[1, 2]", headers=headers, timeout=5)
    assert r.status_code == 400


def test_gzip_request_bodies_are_accepted(sb: SandboxServer) -> None:
    body = gzip.compress(
        json.dumps({"items": [{"externalId": EXTPIPE_CONTEXT_XID, "status": "seen"}]}).encode()
    )
    headers = {**cdf(sb, None), "Content-Type": "application/json", "Content-Encoding": "gzip"}
    r = requests.post(api(sb, "/extpipes/runs"), data=body, headers=headers, timeout=5)
    assert r.status_code == 201, r.text


def test_unknown_endpoint_and_method_use_cdf_error_shape(sb: SandboxServer) -> None:
    r = requests.get(api(sb, "/no/such/thing"), headers=cdf(sb), timeout=5)
    assert r.status_code == 404 and r.json()["error"]["code"] == 404
    r = requests.delete(api(sb, "/extpipes/runs"), headers=cdf(sb, None), timeout=5)
    assert r.status_code == 405 and r.json()["error"]["code"] == 405


# --------------------------------------------------------------------------------------------
# Entity matching pipelines
# --------------------------------------------------------------------------------------------
def test_em_list_get_byids(sb: SandboxServer) -> None:
    h = cdf(sb)
    r = requests.get(api(sb, "/context/entitymatching/pipelines"), headers=h, timeout=5)
    assert r.status_code == 200
    items = r.json()["items"]
    assert [(p["id"], p["externalId"]) for p in items] == [
        (1, "sandbox.em.assets"),
        (2, "sandbox.em.failing"),
    ]
    r = requests.get(api(sb, "/context/entitymatching/pipelines?limit=1"), headers=h, timeout=5)
    assert len(r.json()["items"]) == 1 and r.json()["nextCursor"]
    r = requests.get(
        api(sb, f"/context/entitymatching/pipelines?limit=1&cursor={r.json()['nextCursor']}"),
        headers=h,
        timeout=5,
    )
    assert r.json()["items"][0]["id"] == 2 and "nextCursor" not in r.json()

    one = requests.get(api(sb, "/context/entitymatching/pipelines/1"), headers=h, timeout=5).json()
    for key in ("id", "externalId", "name", "sources", "targets", "createdTime", "lastUpdatedTime", "owner"):
        assert key in one
    r = requests.post(
        api(sb, "/context/entitymatching/pipelines/byids"),
        json={"items": [{"externalId": "sandbox.em.failing"}, {"id": 1}]},
        headers=h,
        timeout=5,
    )
    assert r.status_code == 200 and [p["id"] for p in r.json()["items"]] == [2, 1]
    r = requests.post(
        api(sb, "/context/entitymatching/pipelines/byids"), json={"items": [{"id": 99}]}, headers=h, timeout=5
    )
    assert r.status_code == 400 and r.json()["error"]["missing"] == [{"id": 99}]
    r = requests.post(
        api(sb, "/context/entitymatching/pipelines/byids"),
        json={"items": [{"id": 99}], "ignoreUnknownIds": True},
        headers=h,
        timeout=5,
    )
    assert r.status_code == 200 and r.json()["items"] == []


def test_em_unknown_and_invalid_ids(sb: SandboxServer) -> None:
    h = cdf(sb)
    r = requests.get(api(sb, "/context/entitymatching/pipelines/99"), headers=h, timeout=5)
    assert r.status_code == 404 and r.json()["error"]["missing"] == [{"id": 99}]
    assert (
        requests.get(api(sb, "/context/entitymatching/pipelines/abc"), headers=h, timeout=5).status_code
        == 400
    )
    assert (
        requests.post(api(sb, "/context/entitymatching/pipelines/99/runs"), headers=h, timeout=5).status_code
        == 404
    )
    assert (
        requests.get(api(sb, "/context/entitymatching/pipelines/1/runs/5"), headers=h, timeout=5).status_code
        == 404
    )


def test_em_create(sb: SandboxServer) -> None:
    h = cdf(sb)
    item = {
        "externalId": "my.pipeline",
        "name": "mine",
        "sources": {"dataSetIds": [{"id": 1}], "resource": "time_series"},
        "targets": {"dataSetIds": [{"id": 2}], "resource": "assets"},
        "scoreThreshold": 0.7,
    }
    r = requests.post(
        api(sb, "/context/entitymatching/pipelines"), json={"items": [item]}, headers=h, timeout=5
    )
    assert r.status_code == 201
    created = r.json()["items"][0]
    assert (
        created["id"] == 3 and created["externalId"] == "my.pipeline" and created["owner"] == "sandbox-client"
    )
    r = requests.post(
        api(sb, "/context/entitymatching/pipelines"), json={"items": [item]}, headers=h, timeout=5
    )
    assert r.status_code == 409 and r.json()["error"]["duplicated"] == [{"externalId": "my.pipeline"}]
    bad = {**item, "externalId": "x", "unknownField": 1}
    r = requests.post(
        api(sb, "/context/entitymatching/pipelines"), json={"items": [bad]}, headers=h, timeout=5
    )
    assert r.status_code == 400
    r = requests.post(
        api(sb, "/context/entitymatching/pipelines"),
        json={"items": [{"name": "no sources"}]},
        headers=h,
        timeout=5,
    )
    assert r.status_code == 400


def test_em_run_progression_with_manual_clock(sb: SandboxServer) -> None:
    h = cdf(sb)
    r = requests.post(api(sb, "/context/entitymatching/pipelines/1/runs"), headers=h, timeout=5)
    assert r.status_code == 200
    run = r.json()
    assert set(run) == RUN_KEYS
    assert isinstance(run["jobId"], int) and run["status"] == "Queued" and run["errorMessage"] is None
    assert run["createdTime"] == run["startTime"] == run["statusTime"]
    url = api(sb, f"/context/entitymatching/pipelines/1/runs/{run['jobId']}")

    sb.advance(0.999)
    assert requests.get(url, headers=h, timeout=5).json()["status"] == "Queued"
    sb.advance(0.001)
    running = requests.get(url, headers=h, timeout=5).json()
    assert running["status"] == "Running" and set(running) == RUN_KEYS
    assert running["startTime"] == run["createdTime"] + 1000
    sb.advance(2)
    done = requests.get(url, headers=h, timeout=5).json()
    assert done["status"] == "Completed"
    assert done["statusTime"] == run["createdTime"] + 3000
    assert len(done["matches"]) == 3 and done["matches"][0]["matchType"] == "model"
    assert {"source", "target", "score"} <= set(done["matches"][0])
    assert done["suggestedRules"] and {"inputPattern", "predictPattern", "numMatches"} <= set(
        done["suggestedRules"][0]
    )
    assert done["generatedRules"] and "numConflicts" in done["generatedRules"][0]
    assert done["errors"] == []

    latest = requests.get(
        api(sb, "/context/entitymatching/pipelines/1/runs/latest?includeSkipped=false"), headers=h, timeout=5
    )
    assert latest.status_code == 200 and latest.json()["jobId"] == run["jobId"]
    assert set(latest.json()) == RUN_KEYS  # summary only (conservative reading)
    pipeline = requests.get(api(sb, "/context/entitymatching/pipelines/1"), headers=h, timeout=5).json()
    assert pipeline["lastRun"]["jobId"] == run["jobId"]


def test_em_failing_pipeline(sb: SandboxServer) -> None:
    h = cdf(sb)
    run = requests.post(api(sb, "/context/entitymatching/pipelines/2/runs"), headers=h, timeout=5).json()
    sb.advance(3)
    done = requests.get(
        api(sb, f"/context/entitymatching/pipelines/2/runs/{run['jobId']}"), headers=h, timeout=5
    )
    body = done.json()
    assert body["status"] == "Failed" and body["errorMessage"]
    assert "matches" not in body
    other = requests.get(
        api(sb, f"/context/entitymatching/pipelines/1/runs/{run['jobId']}"), headers=h, timeout=5
    )
    assert other.status_code == 404


def test_em_list_runs_newest_first_with_cursor(sb: SandboxServer) -> None:
    h = cdf(sb)
    ids = []
    for _ in range(3):
        ids.append(
            requests.post(api(sb, "/context/entitymatching/pipelines/1/runs"), headers=h, timeout=5).json()[
                "jobId"
            ]
        )
        sb.advance(0.01)
    r = requests.get(api(sb, "/context/entitymatching/pipelines/1/runs?limit=2"), headers=h, timeout=5)
    assert r.status_code == 200
    assert [x["jobId"] for x in r.json()["items"]] == ids[::-1][:2]
    assert set(r.json()["items"][0]) == RUN_KEYS
    r2 = requests.get(
        api(sb, f"/context/entitymatching/pipelines/1/runs?limit=2&cursor={r.json()['nextCursor']}"),
        headers=h,
        timeout=5,
    )
    assert [x["jobId"] for x in r2.json()["items"]] == [ids[0]] and "nextCursor" not in r2.json()
    for limit in ("0", "101", "x"):
        bad = requests.get(
            api(sb, f"/context/entitymatching/pipelines/1/runs?limit={limit}"), headers=h, timeout=5
        )
        assert bad.status_code == 400
    bad = requests.get(
        api(sb, "/context/entitymatching/pipelines/1/runs?cursor=garbage"), headers=h, timeout=5
    )
    assert bad.status_code == 400


def test_em_latest_without_runs_and_bad_flag(sb: SandboxServer) -> None:
    h = cdf(sb)
    assert (
        requests.get(
            api(sb, "/context/entitymatching/pipelines/1/runs/latest"), headers=h, timeout=5
        ).status_code
        == 404
    )
    r = requests.get(
        api(sb, "/context/entitymatching/pipelines/1/runs/latest?includeSkipped=maybe"), headers=h, timeout=5
    )
    assert r.status_code == 400


def test_em_run_rejects_a_body(sb: SandboxServer) -> None:
    r = requests.post(
        api(sb, "/context/entitymatching/pipelines/1/runs"), json={"x": 1}, headers=cdf(sb), timeout=5
    )
    assert r.status_code == 400


def test_em_never_finishing_job(sb: SandboxServer) -> None:
    sb.configure_resource("cognite", "entity_matching", "sandbox.em.assets", running=None)
    h = cdf(sb)
    run = requests.post(api(sb, "/context/entitymatching/pipelines/1/runs"), headers=h, timeout=5).json()
    sb.advance(10_000)
    h = cdf(sb)  # the first token expired meanwhile (lifetime 3600 s)
    body = requests.get(
        api(sb, f"/context/entitymatching/pipelines/1/runs/{run['jobId']}"), headers=h, timeout=5
    ).json()
    assert body["status"] == "Running"


# --------------------------------------------------------------------------------------------
# Advanced joins: estimate quality
# --------------------------------------------------------------------------------------------
MATCHER = {
    "type": "raw",
    "dbName": "sandbox_db",
    "tableName": "known_matches",
    "fromColumnKey": "a",
    "toColumnKey": "b",
}
EQ_KEYS = {
    "jobId",
    "status",
    "createdTime",
    "startTime",
    "statusTime",
    "advancedJoinExternalId",
    "matcher",
    "errorMessage",
    "qualityScorePercent",
    "confidencePercent",
    "contextualizationScorePercent",
}


@pytest.mark.parametrize(
    ("join", "status", "scores"),
    [
        ("sandbox.join.good", "Completed", (92.5, 88.0, 75.0)),
        ("sandbox.join.poor", "Completed", (41.0, 60.0, 30.0)),
        ("sandbox.join.failing", "Failed", (None, None, None)),
    ],
)
def test_estimate_quality(
    sb: SandboxServer, join: str, status: str, scores: tuple[float | None, ...]
) -> None:
    h = cdf(sb, "alpha")
    r = requests.post(
        api(sb, "/advancedjoins/estimatequality"),
        json={"advancedJoinExternalId": join, "matcher": MATCHER},
        headers=h,
        timeout=5,
    )
    assert r.status_code == 200
    job = r.json()
    assert set(job) == EQ_KEYS
    assert str(uuid.UUID(job["jobId"])) == job["jobId"]
    assert job["status"] == "Queued" and job["matcher"] == MATCHER
    assert job["qualityScorePercent"] is None and job["confidencePercent"] is None
    url = api(sb, f"/advancedjoins/estimatequality/{job['jobId']}")
    sb.advance(1)
    mid = requests.get(url, headers=h, timeout=5).json()
    assert mid["status"] == "Running" and mid["contextualizationScorePercent"] is None
    sb.advance(2)
    done = requests.get(url, headers=h, timeout=5).json()
    assert done["status"] == status
    assert (
        done["qualityScorePercent"],
        done["confidencePercent"],
        done["contextualizationScorePercent"],
    ) == scores
    assert (done["errorMessage"] is not None) == (status == "Failed")


def test_estimate_quality_validation(sb: SandboxServer) -> None:
    h = cdf(sb, "20230101-alpha")
    url = api(sb, "/advancedjoins/estimatequality")
    r = requests.post(url, json={"advancedJoinExternalId": "nope", "matcher": MATCHER}, headers=h, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["missing"] == [{"externalId": "nope"}]
    bad_bodies = [
        {"matcher": MATCHER},
        {"advancedJoinExternalId": "x" * 256, "matcher": MATCHER},
        {"advancedJoinExternalId": "sandbox.join.good"},
        {"advancedJoinExternalId": "sandbox.join.good", "matcher": {**MATCHER, "type": "view"}},
        {
            "advancedJoinExternalId": "sandbox.join.good",
            "matcher": {k: v for k, v in MATCHER.items() if k != "dbName"},
        },
        {"advancedJoinExternalId": "sandbox.join.good", "matcher": MATCHER, "dummyResponse": "yes"},
        {"advancedJoinExternalId": "sandbox.join.good", "matcher": MATCHER, "extra": 1},
    ]
    for body in bad_bodies:
        assert requests.post(url, json=body, headers=h, timeout=5).status_code == 400, body
    r = requests.get(url + "/123", headers=h, timeout=5)
    assert r.status_code == 400
    r = requests.get(url + f"/{uuid.uuid4()}", headers=h, timeout=5)
    assert r.status_code == 404


def test_estimate_quality_dummy_response(sb: SandboxServer) -> None:
    h = cdf(sb, "alpha")
    r = requests.post(
        api(sb, "/advancedjoins/estimatequality"),
        json={"advancedJoinExternalId": "sandbox.join.good", "matcher": MATCHER, "dummyResponse": True},
        headers=h,
        timeout=5,
    )
    assert (
        r.status_code == 200 and r.json()["status"] == "Completed" and r.json()["qualityScorePercent"] == 50.0
    )


def test_estimate_quality_scores_are_configurable(sb: SandboxServer) -> None:
    sb.configure_resource(
        "cognite", "estimate_quality", "sandbox.join.custom", quality=10.0, queued=0, running=0
    )
    h = cdf(sb, "alpha")
    r = requests.post(
        api(sb, "/advancedjoins/estimatequality"),
        json={"advancedJoinExternalId": "sandbox.join.custom", "matcher": MATCHER},
        headers=h,
        timeout=5,
    )
    job = requests.get(
        api(sb, f"/advancedjoins/estimatequality/{r.json()['jobId']}"), headers=h, timeout=5
    ).json()
    assert job["status"] == "Completed" and job["qualityScorePercent"] == 10.0


# --------------------------------------------------------------------------------------------
# Extraction pipelines
# --------------------------------------------------------------------------------------------
def test_extpipes_byids_and_get(sb: SandboxServer) -> None:
    h = cdf(sb, None)
    r = requests.post(
        api(sb, "/extpipes/byids"),
        json={"items": [{"externalId": EXTPIPE_EXTRACTOR_XID}, {"id": 2}], "ignoreUnknownIds": False},
        headers=h,
        timeout=5,
    )
    assert r.status_code == 200
    extractor, context = r.json()["items"]
    assert (
        extractor["externalId"] == EXTPIPE_EXTRACTOR_XID
        and extractor["lastSuccess"] == extractor["createdTime"]
    )
    assert context["externalId"] == EXTPIPE_CONTEXT_XID and "lastSuccess" not in context
    r = requests.post(
        api(sb, "/extpipes/byids"), json={"items": [{"externalId": "nope"}]}, headers=h, timeout=5
    )
    assert r.status_code == 400 and r.json()["error"]["missing"] == [{"externalId": "nope"}]
    r = requests.post(
        api(sb, "/extpipes/byids"),
        json={"items": [{"externalId": "nope"}], "ignoreUnknownIds": True},
        headers=h,
        timeout=5,
    )
    assert r.status_code == 200 and r.json()["items"] == []
    assert (
        requests.get(api(sb, "/extpipes/1"), headers=h, timeout=5).json()["externalId"]
        == EXTPIPE_EXTRACTOR_XID
    )
    assert requests.get(api(sb, "/extpipes/99"), headers=h, timeout=5).status_code == 404


def test_extpipes_create(sb: SandboxServer) -> None:
    h = cdf(sb, None)
    item = {"externalId": "new-extpipe", "name": "New", "dataSetId": 9000}
    r = requests.post(api(sb, "/extpipes"), json={"items": [item]}, headers=h, timeout=5)
    assert r.status_code == 201 and r.json()["items"][0]["id"] == 3
    assert (
        requests.post(api(sb, "/extpipes"), json={"items": [item]}, headers=h, timeout=5).status_code == 409
    )
    r = requests.post(
        api(sb, "/extpipes"), json={"items": [{"externalId": "x", "name": "n"}]}, headers=h, timeout=5
    )
    assert r.status_code == 400


def test_extpipe_run_create_and_pipeline_update(sb: SandboxServer) -> None:
    h = cdf(sb, None)
    r = requests.post(
        api(sb, "/extpipes/runs"),
        json={"items": [{"externalId": EXTPIPE_CONTEXT_XID, "status": "failure", "message": "boom"}]},
        headers=h,
        timeout=5,
    )
    assert r.status_code == 201
    (run,) = r.json()["items"]
    assert set(run) == {"id", "externalId", "status", "message", "createdTime"}
    assert run["createdTime"] == sb.state.clock.now_ms()
    r = requests.post(
        api(sb, "/extpipes/runs"),
        json={
            "items": [
                {"externalId": EXTPIPE_CONTEXT_XID, "status": "success", "createdTime": 1_700_000_000_000}
            ]
        },
        headers=h,
        timeout=5,
    )
    assert r.json()["items"][0]["createdTime"] == 1_700_000_000_000 and "message" not in r.json()["items"][0]
    pipe = requests.get(api(sb, "/extpipes/2"), headers=h, timeout=5).json()
    assert pipe["lastFailure"] == run["createdTime"] and pipe["lastMessage"] == "boom"
    assert pipe["lastSuccess"] == 1_700_000_000_000 and pipe["lastSeen"] == run["createdTime"]


@pytest.mark.parametrize(
    "body",
    [
        {"items": []},
        {"items": [{"externalId": "sandbox-contextualization", "status": "success"}] * 2},
        {"items": [{"externalId": "sandbox-contextualization", "status": "Success"}]},
        {"items": [{"externalId": "sandbox-contextualization", "status": "success", "message": "m" * 1001}]},
        {"items": [{"externalId": "sandbox-contextualization", "status": "success", "createdTime": "now"}]},
        {"items": [{"externalId": "sandbox-contextualization", "status": "success", "extra": 1}]},
        {"items": [{"status": "success"}]},
        {},
    ],
)
def test_extpipe_run_create_validation(sb: SandboxServer, body: dict[str, object]) -> None:
    r = requests.post(api(sb, "/extpipes/runs"), json=body, headers=cdf(sb, None), timeout=5)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == 400


def test_extpipe_run_message_of_1000_chars_is_ok_and_unknown_pipeline_is_missing(sb: SandboxServer) -> None:
    h = cdf(sb, None)
    r = requests.post(
        api(sb, "/extpipes/runs"),
        json={"items": [{"externalId": EXTPIPE_CONTEXT_XID, "status": "seen", "message": "m" * 1000}]},
        headers=h,
        timeout=5,
    )
    assert r.status_code == 201
    r = requests.post(
        api(sb, "/extpipes/runs"),
        json={"items": [{"externalId": "nope", "status": "seen"}]},
        headers=h,
        timeout=5,
    )
    assert r.status_code == 400 and r.json()["error"]["missing"] == [{"externalId": "nope"}]


def test_extpipe_runs_list_filters_and_paging(sb: SandboxServer) -> None:
    h = cdf(sb, None)
    for i, status in enumerate(["success", "failure", "seen", "failure"]):
        requests.post(
            api(sb, "/extpipes/runs"),
            json={
                "items": [
                    {
                        "externalId": EXTPIPE_CONTEXT_XID,
                        "status": status,
                        "message": f"msg {i} timeout" if status == "failure" else f"msg {i}",
                        "createdTime": 1000 + i,
                    }
                ]
            },
            headers=h,
            timeout=5,
        )
    url = api(sb, "/extpipes/runs/list")
    r = requests.post(url, json={"filter": {"externalId": EXTPIPE_CONTEXT_XID}}, headers=h, timeout=5)
    assert r.status_code == 200
    assert [x["createdTime"] for x in r.json()["items"]] == [1003, 1002, 1001, 1000]
    assert set(r.json()["items"][0]) == {"id", "status", "message", "createdTime"}
    r = requests.post(
        url,
        json={"filter": {"externalId": EXTPIPE_CONTEXT_XID, "statuses": ["failure"]}},
        headers=h,
        timeout=5,
    )
    assert [x["createdTime"] for x in r.json()["items"]] == [1003, 1001]
    r = requests.post(
        url,
        json={"filter": {"externalId": EXTPIPE_CONTEXT_XID, "createdTime": {"min": 1001, "max": 1002}}},
        headers=h,
        timeout=5,
    )
    assert [x["createdTime"] for x in r.json()["items"]] == [1002, 1001]
    r = requests.post(
        url,
        json={"filter": {"externalId": EXTPIPE_CONTEXT_XID, "message": {"substring": "timeout"}}},
        headers=h,
        timeout=5,
    )
    assert [x["createdTime"] for x in r.json()["items"]] == [1003, 1001]
    r = requests.post(
        url, json={"filter": {"externalId": EXTPIPE_CONTEXT_XID}, "limit": 3}, headers=h, timeout=5
    )
    assert len(r.json()["items"]) == 3
    r2 = requests.post(
        url,
        json={"filter": {"externalId": EXTPIPE_CONTEXT_XID}, "limit": 3, "cursor": r.json()["nextCursor"]},
        headers=h,
        timeout=5,
    )
    assert [x["createdTime"] for x in r2.json()["items"]] == [1000] and "nextCursor" not in r2.json()
    bad_bodies: list[dict[str, object]] = [
        {},
        {"filter": {}},
        {"filter": {"externalId": EXTPIPE_CONTEXT_XID, "statuses": ["bad"]}},
        {"filter": {"externalId": EXTPIPE_CONTEXT_XID}, "limit": 0},
    ]
    for body in bad_bodies:
        assert requests.post(url, json=body, headers=h, timeout=5).status_code == 400, body
    r = requests.post(url, json={"filter": {"externalId": "nope"}}, headers=h, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["missing"] == [{"externalId": "nope"}]


def test_extpipe_runs_get(sb: SandboxServer) -> None:
    h = cdf(sb, None)
    r = requests.get(
        api(sb, f"/extpipes/runs?externalId={EXTPIPE_EXTRACTOR_XID}&limit=10"), headers=h, timeout=5
    )
    assert r.status_code == 200
    (seeded,) = r.json()["items"]
    assert seeded["status"] == "success" and seeded["createdTime"] == sb.state.started_ms
    assert requests.get(api(sb, "/extpipes/runs"), headers=h, timeout=5).status_code == 400
    assert requests.get(api(sb, "/extpipes/runs?externalId=nope"), headers=h, timeout=5).status_code == 400
