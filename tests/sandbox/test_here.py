"""HERE emulator: OAuth 1.0a-signed token endpoint (checked with oauthlib) and the Pipeline API v2."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import requests

from airflow_provider_pipelines.sandbox import SandboxServer
from airflow_provider_pipelines.sandbox.config import (
    HERE_PIPELINE_FAILING,
    HERE_PIPELINE_OK,
    HERE_PROJECT_HRN,
    HERE_VERSION_FAILING,
    HERE_VERSION_OK,
    HERE_VERSION_OK_SIBLING,
)
from airflow_provider_pipelines.sandbox.here import oauth_signature, signature_base_string

from .conftest import here_api, here_sign, here_token

V_OK = f"/{HERE_PIPELINE_OK}/versions/{HERE_VERSION_OK}"
V_SIBLING = f"/{HERE_PIPELINE_OK}/versions/{HERE_VERSION_OK_SIBLING}"
V_FAIL = f"/{HERE_PIPELINE_FAILING}/versions/{HERE_VERSION_FAILING}"
RUN_NOW = {
    "inputCatalogs": {"weather": {"processingType": "changes", "version": 75, "sinceVersion": 70}},
    "outputCatalog": {"baseVersion": 42},
}
OP_KEYS = {"id", "pipelineVersionId", "requestType", "state", "userId", "clientId", "created", "options"}
ERROR_MESSAGE_KEYS = {"status", "code", "message"}


# --------------------------------------------------------------------------------------------
# Token endpoint
# --------------------------------------------------------------------------------------------
def test_signature_matches_the_documented_test_vector() -> None:
    base = signature_base_string(
        "POST",
        "https://account.api.here.com/oauth2/token",
        [
            ("oauth_consumer_key", "ACCESS_KEY_ID"),
            ("oauth_nonce", "abc"),
            ("oauth_signature_method", "HMAC-SHA256"),
            ("oauth_timestamp", "1700000000"),
            ("oauth_version", "1.0"),
            ("grant_type", "client_credentials"),
            ("scope", "hrn:here:authorization::org1:project/p1"),
        ],
    )
    assert base == (
        "POST&https%3A%2F%2Faccount.api.here.com%2Foauth2%2Ftoken&grant_type%3Dclient_credentials"
        "%26oauth_consumer_key%3DACCESS_KEY_ID%26oauth_nonce%3Dabc%26oauth_signature_method%3DHMAC-SHA256"
        "%26oauth_timestamp%3D1700000000%26oauth_version%3D1.0%26scope%3Dhrn%253Ahere%253Aauthorization"
        "%253A%253Aorg1%253Aproject%252Fp1"
    )
    assert oauth_signature("SECRET", base) == "52LqG9negb1GyXPxQxWDge7VYdKRtQT84UKKyieTcwA="


def test_oauthlib_signed_form_request_is_accepted(sb: SandboxServer) -> None:
    url = f"{sb.url}/oauth2/token"
    body = "grant_type=client_credentials"
    r = requests.post(url, data=body, headers=here_sign(url, body), timeout=5)
    assert r.status_code == 200, r.text
    token = r.json()
    assert set(token) == {"access_token", "token_type", "expires_in"}
    assert token["token_type"] == "bearer" and token["expires_in"] == 3600


def test_scope_is_part_of_the_signature_and_echoed(sb: SandboxServer) -> None:
    url = f"{sb.url}/oauth2/token"
    body = f"grant_type=client_credentials&scope={HERE_PROJECT_HRN}"
    r = requests.post(url, data=body, headers=here_sign(url, body), timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == HERE_PROJECT_HRN
    # signed without the scope, sent with it: signature mismatch
    headers = here_sign(url, "grant_type=client_credentials")
    r = requests.post(url, data=body, headers=headers, timeout=5)
    assert r.status_code == 401 and r.json()["errorCode"] == 401300


def test_wrong_secret_is_401300(sb: SandboxServer) -> None:
    url = f"{sb.url}/oauth2/token"
    body = "grant_type=client_credentials"
    r = requests.post(url, data=body, headers=here_sign(url, body, secret="not-the-secret"), timeout=5)
    assert r.status_code == 401
    error = r.json()
    assert {"errorId", "httpStatus", "errorCode", "message"} <= set(error)
    assert error["errorCode"] == 401300 and error["httpStatus"] == 401


def test_unknown_key_and_client_id_as_key(sb: SandboxServer) -> None:
    url = f"{sb.url}/oauth2/token"
    body = "grant_type=client_credentials"
    r = requests.post(url, data=body, headers=here_sign(url, body, key="UNKNOWN"), timeout=5)
    assert r.status_code == 401 and r.json()["errorCode"] == 401300
    r = requests.post(url, data=body, headers=here_sign(url, body, key="sandbox-here-client-id"), timeout=5)
    assert r.status_code == 401 and r.json()["errorCode"] == 401310


def test_reused_nonce_is_401207(sb: SandboxServer) -> None:
    url = f"{sb.url}/oauth2/token"
    body = "grant_type=client_credentials"
    stamp = str(int(time.time()))
    first = requests.post(
        url, data=body, headers=here_sign(url, body, nonce="n0nce", timestamp=stamp), timeout=5
    )
    assert first.status_code == 200
    again = requests.post(
        url, data=body, headers=here_sign(url, body, nonce="n0nce", timestamp=stamp), timeout=5
    )
    assert again.status_code == 401 and again.json()["errorCode"] == 401207


@pytest.mark.parametrize("offset", [-1000, 1000])
def test_stale_timestamp_is_401204(sb: SandboxServer, offset: int) -> None:
    url = f"{sb.url}/oauth2/token"
    body = "grant_type=client_credentials"
    stamp = str(int(time.time()) + offset)
    r = requests.post(url, data=body, headers=here_sign(url, body, timestamp=stamp), timeout=5)
    assert r.status_code == 401 and r.json()["errorCode"] == 401204


def test_malformed_header_method_version(sb: SandboxServer) -> None:
    url = f"{sb.url}/oauth2/token"
    body = "grant_type=client_credentials"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = requests.post(url, data=body, headers=form, timeout=5)
    assert r.status_code == 401 and r.json()["errorCode"] == 401200
    r = requests.post(
        url, data=body, headers={**form, "Authorization": 'OAuth oauth_consumer_key="x"'}, timeout=5
    )
    assert r.status_code == 401 and r.json()["errorCode"] == 401202
    r = requests.post(url, data=body, headers={**form, "Authorization": "OAuth garbage"}, timeout=5)
    assert r.status_code == 401 and r.json()["errorCode"] == 401202
    signed = here_sign(url, body)
    r = requests.post(
        url,
        data=body,
        headers={**signed, "Authorization": signed["Authorization"].replace("HMAC-SHA256", "HMAC-SHA1")},
        timeout=5,
    )
    assert r.status_code == 401 and r.json()["errorCode"] == 401205
    signed = here_sign(url, body)
    r = requests.post(
        url,
        data=body,
        headers={**signed, "Authorization": signed["Authorization"].replace('"1.0"', '"2.0"')},
        timeout=5,
    )
    assert r.status_code == 401 and r.json()["errorCode"] == 401206


def test_grant_type_and_scope_errors(sb: SandboxServer) -> None:
    url = f"{sb.url}/oauth2/token"
    for body, status, code in (
        ("grant_type=password", 400, 400203),
        ("scope=x", 400, 400201),
        ("grant_type=client_credentials&scope=hrn:here:authorization::other:project/p", 403, 403109),
        (f"grant_type=client_credentials&scope={HERE_PROJECT_HRN}%20{HERE_PROJECT_HRN}", 400, 400981),
    ):
        r = requests.post(url, data=body, headers=here_sign(url, body), timeout=5)
        assert (r.status_code, r.json()["errorCode"]) == (status, code), body


def test_json_body_variant_answers_camel_case(sb: SandboxServer) -> None:
    url = f"{sb.url}/oauth2/token"
    headers = here_sign(url, None, content_type="application/json")
    r = requests.post(
        url,
        json={"grantType": "client_credentials", "scope": HERE_PROJECT_HRN, "expiresIn": 600},
        headers=headers,
        timeout=5,
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "accessToken": r.json()["accessToken"],
        "tokenType": "bearer",
        "expiresIn": 600,
        "scope": HERE_PROJECT_HRN,
    }
    headers = here_sign(url, None, content_type="application/json")
    r = requests.post(url, data=b"{bad", headers=headers, timeout=5)
    assert r.status_code == 400 and r.json()["errorCode"] == 400002


# --------------------------------------------------------------------------------------------
# Pipeline API
# --------------------------------------------------------------------------------------------
def bearer(sb: SandboxServer, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {here_token(sb)}", **extra}


def test_bearer_required_and_request_ids_echoed(sb: SandboxServer) -> None:
    r = requests.get(here_api(sb, V_OK), timeout=5)
    assert r.status_code == 401 and ERROR_MESSAGE_KEYS <= set(r.json())
    assert r.headers["X-Request-ID"] and r.headers["X-Correlation-ID"]
    r = requests.get(here_api(sb, V_OK), headers={"Authorization": "Bearer nope"}, timeout=5)
    assert r.status_code == 401
    r = requests.get(
        here_api(sb, V_OK),
        headers=bearer(sb, **{"X-Request-ID": "req-1", "X-Correlation-ID": "corr-1"}),
        timeout=5,
    )
    assert r.status_code == 200
    assert r.headers["X-Request-ID"] == "req-1" and r.headers["X-Correlation-ID"] == "corr-1"


def test_expired_token_is_401(sb: SandboxServer) -> None:
    h = bearer(sb)
    assert requests.get(here_api(sb, V_OK), headers=h, timeout=5).status_code == 200
    sb.advance(3600)
    assert requests.get(here_api(sb, V_OK), headers=h, timeout=5).status_code == 401


def test_version_view_verbose(sb: SandboxServer) -> None:
    h = bearer(sb)
    plain = requests.get(here_api(sb, V_OK), headers=h, timeout=5).json()
    assert plain["id"] == HERE_VERSION_OK and plain["state"] == "ready"
    assert plain["loggingUrl"] and plain["pipelineUIUrl"]
    assert "latestOperation" not in plain and "latestJob" not in plain
    requests.post(here_api(sb, V_OK + "/operations/activate"), json=RUN_NOW, headers=h, timeout=5)
    sb.advance(1.5)
    plain = requests.get(here_api(sb, V_OK), headers=h, timeout=5).json()
    assert "latestOperation" not in plain and "latestJob" not in plain
    verbose = requests.get(here_api(sb, V_OK + "?verbose=true"), headers=h, timeout=5).json()
    assert verbose["latestOperation"]["requestType"] == "activate"
    assert verbose["latestJob"]["state"] == "running"
    versions = requests.get(here_api(sb, f"/{HERE_PIPELINE_OK}/versions"), headers=h, timeout=5).json()
    assert [v["id"] for v in versions] == [HERE_VERSION_OK, HERE_VERSION_OK_SIBLING]
    assert requests.get(here_api(sb, V_OK + "?verbose=perhaps"), headers=h, timeout=5).status_code == 400


def test_run_now_full_lifecycle(sb: SandboxServer) -> None:
    h = bearer(sb)
    r = requests.post(here_api(sb, V_OK + "/operations/activate"), json=RUN_NOW, headers=h, timeout=5)
    assert r.status_code == 202
    op = r.json()
    assert OP_KEYS <= set(op) and op["state"] == "accepted" and op["requestType"] == "activate"
    op_url = here_api(sb, V_OK + f"/operations/{op['id']}")
    jobs_url = here_api(sb, V_OK + "/jobs")

    sb.advance(0.3)
    assert requests.get(op_url, headers=h, timeout=5).json()["state"] == "being_processed"
    sb.advance(0.7)
    assert requests.get(op_url, headers=h, timeout=5).json()["state"] == "succeeded"
    version = requests.get(here_api(sb, V_OK), headers=h, timeout=5).json()
    assert version["state"] == "running"
    assert requests.get(jobs_url, headers=h, timeout=5).json() == []  # job starting: not listed yet
    sb.advance(0.5)
    (job,) = requests.get(jobs_url, headers=h, timeout=5).json()
    assert job["state"] == "running" and job["executionMode"] == "on-demand"
    assert job["catalogVersions"] == RUN_NOW
    assert job["loggingUrl"] and job["pipelineUIUrl"]
    sb.advance(2)
    (job,) = requests.get(jobs_url, headers=h, timeout=5).json()
    assert job["state"] == "completed"
    version = requests.get(here_api(sb, V_OK + "?verbose=true"), headers=h, timeout=5).json()
    assert version["state"] == "ready"  # run-now auto-deactivates
    assert version["latestJob"]["id"] == job["id"]
    ops = requests.get(here_api(sb, V_OK + "/operations"), headers=h, timeout=5).json()
    assert [o["id"] for o in ops] == [op["id"]]


def test_failing_version_jobs_fail(sb: SandboxServer) -> None:
    h = bearer(sb)
    r = requests.post(here_api(sb, V_FAIL + "/operations/activate"), json=RUN_NOW, headers=h, timeout=5)
    assert r.status_code == 202
    sb.advance(5)
    (job,) = requests.get(here_api(sb, V_FAIL + "/jobs"), headers=h, timeout=5).json()
    assert job["state"] == "failed"
    assert requests.get(here_api(sb, V_FAIL), headers=h, timeout=5).json()["state"] == "ready"


def test_scheduled_activation_deactivate_pause_resume(sb: SandboxServer) -> None:
    h = bearer(sb)
    op = requests.post(here_api(sb, V_OK + "/operations/activate"), headers=h, timeout=5).json()
    assert op["state"] == "accepted"
    sb.advance(1)
    assert requests.get(here_api(sb, V_OK), headers=h, timeout=5).json()["state"] == "scheduled"
    r = requests.post(here_api(sb, V_OK + "/operations/pause"), headers=h, timeout=5)
    assert r.status_code == 202
    sb.advance(1)
    assert requests.get(here_api(sb, V_OK), headers=h, timeout=5).json()["state"] == "paused"
    sb.advance(10)
    assert requests.get(here_api(sb, V_OK + "/jobs"), headers=h, timeout=5).json() == []  # paused: no trigger
    assert (
        requests.post(
            here_api(sb, V_OK + "/operations/resume"), json={"highAvailability": False}, headers=h, timeout=5
        ).status_code
        == 202
    )
    sb.advance(1)
    assert requests.get(here_api(sb, V_OK), headers=h, timeout=5).json()["state"] == "scheduled"
    sb.advance(2.5)  # scheduled job delay 2 s, then starting 0.5 s
    (job,) = requests.get(here_api(sb, V_OK + "/jobs"), headers=h, timeout=5).json()
    assert job["executionMode"] == "scheduled" and job["state"] == "running"
    assert requests.get(here_api(sb, V_OK), headers=h, timeout=5).json()["state"] == "running"
    sb.advance(2)
    assert requests.get(here_api(sb, V_OK), headers=h, timeout=5).json()["state"] == "scheduled"
    r = requests.post(here_api(sb, V_OK + "/operations/deactivate"), headers=h, timeout=5)
    assert r.status_code == 202
    sb.advance(1)
    assert requests.get(here_api(sb, V_OK), headers=h, timeout=5).json()["state"] == "ready"


def test_cancel_running_job(sb: SandboxServer) -> None:
    h = bearer(sb)
    requests.post(here_api(sb, V_OK + "/operations/activate"), json=RUN_NOW, headers=h, timeout=5)
    sb.advance(1.6)
    r = requests.post(here_api(sb, V_OK + "/operations/cancel"), headers=h, timeout=5)
    assert r.status_code == 202 and r.json()["requestType"] == "cancel"
    sb.advance(1)
    (job,) = requests.get(here_api(sb, V_OK + "/jobs"), headers=h, timeout=5).json()
    assert job["state"] == "canceled"
    assert requests.get(here_api(sb, V_OK), headers=h, timeout=5).json()["state"] == "ready"
    sb.advance(10)
    (job,) = requests.get(here_api(sb, V_OK + "/jobs"), headers=h, timeout=5).json()
    assert job["state"] == "canceled"


def test_state_preconditions(sb: SandboxServer) -> None:
    h = bearer(sb)
    for name in ("cancel", "deactivate", "pause", "resume"):
        r = requests.post(here_api(sb, V_OK + f"/operations/{name}"), headers=h, timeout=5)
        assert r.status_code == 400, name
        assert ERROR_MESSAGE_KEYS <= set(r.json())
    assert (
        requests.post(
            here_api(sb, V_OK + "/operations/activate"), json=RUN_NOW, headers=h, timeout=5
        ).status_code
        == 202
    )
    # an operation is still in progress on the version
    r = requests.post(here_api(sb, V_OK + "/operations/activate"), json=RUN_NOW, headers=h, timeout=5)
    assert r.status_code == 400 and "still being processed" in r.json()["message"]
    sb.advance(1)
    # version running: a sibling version of the same pipeline cannot be activated
    r = requests.post(here_api(sb, V_SIBLING + "/operations/activate"), headers=h, timeout=5)
    assert r.status_code == 400 and "sibling" in r.json()["message"]
    # run-now version cannot be paused
    r = requests.post(here_api(sb, V_OK + "/operations/pause"), headers=h, timeout=5)
    assert r.status_code == 400


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"inputCatalogs": {"weather": {"processingType": "sometimes", "version": 1}}},
            "/inputCatalogs/weather/processingType",
        ),
        (
            {"inputCatalogs": {"weather": {"processingType": "changes", "version": "1"}}},
            "/inputCatalogs/weather/version",
        ),
        (
            {"inputCatalogs": {"weather": {"processingType": "changes", "version": 1.5}}},
            "/inputCatalogs/weather/version",
        ),
        ({"inputCatalogs": {"roads": {"processingType": "changes", "version": 1}}}, "/inputCatalogs/roads"),
        ({"inputCatalogs": {}}, "/inputCatalogs/weather"),
        ({"runAsId": "not-an-hrn"}, "/runAsId"),
        ({"outputCatalog": {"baseVersion": -1}}, "/outputCatalog/baseVersion"),
        ({"highAvailability": "yes"}, "/highAvailability"),
        ({"unknown": 1}, "/unknown"),
    ],
)
def test_activate_body_validation(sb: SandboxServer, body: dict[str, Any], field: str) -> None:
    r = requests.post(here_api(sb, V_OK + "/operations/activate"), json=body, headers=bearer(sb), timeout=5)
    assert r.status_code == 400
    error = r.json()
    assert error["status"] == 400 and error["code"] == "E1000"
    assert field in [e["field"] for e in error["errors"]]


def test_activate_accepts_valid_run_as_id_and_rejects_non_json(sb: SandboxServer) -> None:
    h = bearer(sb)
    body = {**RUN_NOW, "runAsId": "hrn:here:account::myorg:app/my-app-id", "highAvailability": True}
    r = requests.post(here_api(sb, V_OK + "/operations/activate"), json=body, headers=h, timeout=5)
    assert r.status_code == 202 and r.json()["runAsId"] == body["runAsId"]
    assert r.json()["options"] == {"highAvailability": True}
    r = requests.post(
        here_api(sb, V_FAIL + "/operations/activate"),
        data=b"{oops",
        headers={**h, "Content-Type": "application/json"},
        timeout=5,
    )
    assert r.status_code == 400
    r = requests.post(
        here_api(sb, V_FAIL + "/operations/activate"),
        data=b"x=1",
        headers={**h, "Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    )
    assert r.status_code == 415


def test_unknown_ids_are_404_and_jobs_404_is_an_array(sb: SandboxServer) -> None:
    h = bearer(sb)
    unknown = str(uuid.uuid4())
    r = requests.get(here_api(sb, f"/{HERE_PIPELINE_OK}/versions/{unknown}"), headers=h, timeout=5)
    assert r.status_code == 404 and r.json()["status"] == 404
    r = requests.get(here_api(sb, f"/{unknown}/versions/{HERE_VERSION_OK}"), headers=h, timeout=5)
    assert r.status_code == 404
    r = requests.get(
        here_api(sb, f"/{HERE_PIPELINE_FAILING}/versions/{HERE_VERSION_OK}"), headers=h, timeout=5
    )
    assert r.status_code == 404  # version of another pipeline
    r = requests.get(here_api(sb, f"/{HERE_PIPELINE_OK}/versions/{unknown}/jobs"), headers=h, timeout=5)
    assert r.status_code == 404 and isinstance(r.json(), list) and r.json()[0]["status"] == 404
    r = requests.get(here_api(sb, V_OK + f"/operations/{unknown}"), headers=h, timeout=5)
    assert r.status_code == 404
    r = requests.post(
        here_api(sb, f"/{HERE_PIPELINE_OK}/versions/{unknown}/operations/activate"), headers=h, timeout=5
    )
    assert r.status_code == 404
    r = requests.post(here_api(sb, V_OK + "/operations/explode"), headers=h, timeout=5)
    assert r.status_code == 404
    r = requests.get(here_api(sb, "/not-a-uuid/versions/also-not"), headers=h, timeout=5)
    assert r.status_code == 400


def test_operation_failure_knob(sb: SandboxServer) -> None:
    sb.configure_resource("here", "versions", HERE_VERSION_OK, operation_outcome="failure")
    h = bearer(sb)
    op = requests.post(here_api(sb, V_OK + "/operations/activate"), json=RUN_NOW, headers=h, timeout=5).json()
    sb.advance(1)
    done = requests.get(here_api(sb, V_OK + f"/operations/{op['id']}"), headers=h, timeout=5).json()
    assert done["state"] == "failed" and "Main class not found" in done["message"]
    assert requests.get(here_api(sb, V_OK), headers=h, timeout=5).json()["state"] == "ready"


def test_redirect_307(sb: SandboxServer) -> None:
    sb.configure_resource("here", "versions", HERE_VERSION_OK, redirect=True)
    h = bearer(sb)
    url = here_api(sb, V_OK + "/operations/activate")
    r = requests.post(url, json=RUN_NOW, headers=h, timeout=5, allow_redirects=False)
    assert r.status_code == 307
    location = r.headers["Location"]
    assert location == f"{sb.url}/pipeline-service-alt/v2/pipelines{V_OK}/operations/activate"
    r = requests.post(location, json=RUN_NOW, headers=h, timeout=5, allow_redirects=False)
    assert r.status_code == 202 and r.json()["state"] == "accepted"
    sb.configure_resource(
        "here", "versions", HERE_VERSION_FAILING, redirect="https://eu.example.com/pipeline-service"
    )
    r = requests.post(
        here_api(sb, V_FAIL + "/operations/activate"), headers=h, timeout=5, allow_redirects=False
    )
    assert (
        r.headers["Location"]
        == f"https://eu.example.com/pipeline-service/v2/pipelines{V_FAIL}/operations/activate"
    )


def test_upgrade_is_not_simulated(sb: SandboxServer) -> None:
    r = requests.post(
        here_api(sb, V_OK + "/operations/upgrade"),
        json={"toVersionId": HERE_VERSION_OK_SIBLING},
        headers=bearer(sb),
        timeout=5,
    )
    assert r.status_code == 501
