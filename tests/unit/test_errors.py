"""Errors: what an ApiError says, how vendors' error bodies map to it, and that no secret leaks."""

from __future__ import annotations

import pickle
import socket
from collections.abc import Mapping
from typing import Any

import pytest
import requests_mock as rm

from airflow_provider_pipelines._compat import AirflowException
from airflow_provider_pipelines.hooks import _http
from airflow_provider_pipelines.hooks._auth import CachedTokenAuth, StaticHeaderAuth, TokenCache
from airflow_provider_pipelines.hooks._http import ApiError, ApiRequest, HttpCore, HttpSettings, Redactor
from airflow_provider_pipelines.hooks.cognite import CogniteHook, CogniteProfile

URL = "https://api.acme.test/v1/things/7"
SECRET = "s3cr3t-client-secret-value"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.token-one.signature"


class Profile:
    name = "Acme"

    def error_message(self, status: int, body: Any, text: str) -> str:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return str(body["error"].get("message") or "")
        return ""

    def request_ids(
        self, response_headers: Mapping[str, str], sent_headers: Mapping[str, str]
    ) -> tuple[str | None, str | None]:
        return response_headers.get("x-request-id"), sent_headers.get("x-correlation-id")

    def body_error(self, body: Any) -> str | None:
        return None


def no_sleep(seconds: float) -> None:
    return None


def make_core(auth: Any = None, secrets: tuple[str, ...] = (SECRET,), **settings: Any) -> HttpCore:
    return HttpCore(Profile(), HttpSettings(**{"max_attempts": 3, **settings}), auth, Redactor(secrets),
                    sleep=no_sleep)


def get(url: str = URL, **kw: Any) -> ApiRequest:
    return ApiRequest("GET", url, "get thing", "thing 7", **kw)


# ----------------------------------------------------------------------------------------------
# ApiError itself
# ----------------------------------------------------------------------------------------------


def test_api_error_renders_every_field() -> None:
    error = ApiError(vendor="Acme", operation="run pipeline", resource="pipeline 42", status=409,
                     vendor_message="already running", request_id="req-1", correlation_id="corr-2",
                     attempts=3)
    assert str(error) == ("Acme API: run pipeline (pipeline 42) failed: HTTP 409: already running "
                          "[request id req-1; correlation id corr-2; after 3 attempts]")
    assert isinstance(error, AirflowException)
    assert (error.vendor, error.operation, error.resource, error.status) == (
        "Acme", "run pipeline", "pipeline 42", 409)
    assert (error.vendor_message, error.request_id, error.correlation_id) == (
        "already running", "req-1", "corr-2")


def test_api_error_without_response_or_resource() -> None:
    error = ApiError(vendor="Acme", operation="get thing", vendor_message="could not connect: refused")
    assert str(error) == "Acme API: get thing failed: no response: could not connect: refused"
    assert error.status is None and not error.retryable and not error.ambiguous


def test_api_error_survives_pickling() -> None:
    error = ApiError(vendor="Acme", operation="get thing", resource="thing 7", status=503,
                     vendor_message="busy", request_id="r1", retryable=True, attempts=3)
    clone = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert type(clone) is ApiError and str(clone) == str(error)
    assert clone.status == 503 and clone.attempts == 3 and clone.retryable


def test_error_from_the_core_names_everything() -> None:
    with rm.Mocker() as m:
        m.get(URL, status_code=404, json={"error": {"message": "Thing 7 does not exist"}},
              headers={"x-request-id": "9f2c"})
        with pytest.raises(ApiError) as info:
            make_core().request(get(headers={"x-correlation-id": "corr-1"}))
    assert str(info.value) == (
        "Acme API: get thing (thing 7) failed: HTTP 404: Thing 7 does not exist "
        "[request id 9f2c; correlation id corr-1]"
    )


# ----------------------------------------------------------------------------------------------
# Cognite's error format
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "expected"), [
    ({"error": {"code": 400, "message": "Invalid pipeline"}}, "Invalid pipeline"),
    ({"error": {"code": 400, "message": "Ids not found", "missing": [{"id": 7}]}},
     "Ids not found (missing: [{'id': 7}])"),
    ({"error": {"code": 409, "message": "Duplicate", "duplicated": [{"externalId": "x"}]}},
     "Duplicate (duplicated: [{'externalId': 'x'}])"),
    ({"error": "invalid_client", "error_description": "AADSTS7000215: bad secret"},
     "invalid_client: AADSTS7000215: bad secret"),
    ({"error": "Forbidden"}, "Forbidden"),
    ({"items": []}, ""),
    (["not", "a", "dict"], ""),
])
def test_cognite_error_messages(body: Any, expected: str) -> None:
    assert CogniteProfile().error_message(400, body, "") == expected


def test_cognite_request_id_comes_from_the_response() -> None:
    profile = CogniteProfile()
    assert profile.request_ids({"x-request-id": "abc"}, {}) == ("abc", None)
    assert profile.request_ids({}, {"x-request-id": "sent"}) == (None, None)
    assert profile.body_error({"anything": 1}) is None


def test_cognite_hook_error_carries_the_missing_ids(conn_env: Any) -> None:
    conn_env("cognite_default", conn_type="cognite", host="https://westeurope-1.cognitedata.com",
             extra={"project": "p", "token": "static-token-0123456789"})
    hook = CogniteHook()
    base = "https://westeurope-1.cognitedata.com/api/v1/projects/p"
    with rm.Mocker() as m:
        m.get(f"{base}/context/entitymatching/pipelines/3/runs/4", status_code=400,
              json={"error": {"code": 400, "message": "Pipeline not found", "missing": [{"id": 3}]}},
              headers={"X-Request-ID": "cdf-r-9"})
        with pytest.raises(ApiError) as info:
            hook.get_pipeline_run(3, 4)
    assert str(info.value) == ("Cognite API: get entity matching pipeline run (pipeline 3 run 4) failed: "
                               "HTTP 400: "
                               "Pipeline not found (missing: [{'id': 3}]) [request id cdf-r-9]")
    assert "static-token-0123456789" not in str(info.value)


# ----------------------------------------------------------------------------------------------
# No secret in errors or logs; redacted excerpts
# ----------------------------------------------------------------------------------------------


def test_errors_and_retry_logs_never_contain_the_token_or_client_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = make_core(auth=StaticHeaderAuth("Authorization", f"Bearer {TOKEN}"), max_attempts=2)
    echo = {"error": {"message": f"bad header Authorization: Bearer {TOKEN} and client_secret={SECRET}"}}
    caplog.set_level("DEBUG")
    with rm.Mocker() as m:
        m.get(URL, [{"json": echo, "status_code": 503}, {"json": echo, "status_code": 400}])
        with pytest.raises(ApiError) as info:
            core.request(get())
    assert "retrying in" in caplog.text
    for text in (str(info.value), repr(info.value.args), info.value.vendor_message, caplog.text):
        assert TOKEN not in text and SECRET not in text and "token-one" not in text


def test_a_refreshed_token_echoed_back_is_redacted() -> None:
    tokens = iter(["plain-token-one", "plain-token-two"])

    def fetch() -> tuple[str, float]:
        return next(tokens), 3600

    async def afetch() -> tuple[str, float]:
        return fetch()

    core = make_core(auth=CachedTokenAuth("k", fetch, afetch, TokenCache()), secrets=())
    with rm.Mocker() as m:
        m.get(URL, [{"status_code": 401, "text": "token plain-token-one expired"},
                    {"status_code": 401, "text": "token plain-token-two refused"}])
        with pytest.raises(ApiError) as info:
            core.request(get())
    assert "plain-token" not in str(info.value) and "token *** refused" in str(info.value)


def test_auth_header_value_is_redacted_even_when_not_token_shaped() -> None:
    core = make_core(auth=StaticHeaderAuth("x-api-key", "plainkey42"), secrets=())
    with rm.Mocker() as m:
        m.get(URL, status_code=403, json={"error": {"message": "key plainkey42 is not allowed"}})
        with pytest.raises(ApiError) as info:
            core.request(get())
    assert "plainkey42" not in str(info.value) and "key *** is not allowed" in str(info.value)


def test_transport_error_text_is_redacted() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x?api_key=abcdef123456&client_secret={SECRET}"
    with pytest.raises(ApiError) as info:
        make_core(max_attempts=1).request(get(url))
    assert "could not connect" in str(info.value)
    assert "abcdef123456" not in str(info.value) and SECRET not in str(info.value)


def test_non_json_error_body_is_quoted_short_and_redacted() -> None:
    body = "<html>\n\n" + "x" * 500 + f" client_secret={SECRET} </html>"
    with rm.Mocker() as m:
        m.get(URL, text=body, status_code=400)
        with pytest.raises(ApiError) as info:
            make_core().request(get())
    message = info.value.vendor_message
    assert message.startswith("'<html> xxx") and message.endswith("…'")  # whitespace collapsed, cut marked
    assert len(message) <= _http.BODY_EXCERPT_CHARS + 3
    assert SECRET not in str(info.value)


def test_secret_straddling_the_excerpt_cut_does_not_leak_in_part() -> None:
    body = "y" * (_http.BODY_EXCERPT_CHARS - 10) + SECRET + "z" * 50
    with rm.Mocker() as m:
        m.get(URL, text=body, status_code=400)
        with pytest.raises(ApiError) as info:
            make_core().request(get())
    assert SECRET[:10] not in str(info.value) and "***" in str(info.value)


def test_malformed_success_body_excerpt_is_redacted() -> None:
    with rm.Mocker() as m:
        m.get(URL, text=f'{{"access_token": "{TOKEN}", "trunc', status_code=200)
        with pytest.raises(ApiError) as info:
            make_core(max_attempts=1).request(get())
    assert "not valid JSON" in str(info.value) and TOKEN not in str(info.value)


def test_redactor() -> None:
    redact = Redactor(["hunter2-secret", None, "ab"])
    text = redact('pw hunter2-secret, Authorization: Bearer abcdefghijkl, {"access_token": "xyz789", '
                  '"projectApiKey": "ei_123", "refresh_token": "rt-1", "note": "ab"} '
                  'oauth_signature="sig%3D"')
    for leaked in ("hunter2-secret", "abcdefghijkl", "xyz789", "ei_123", "rt-1", "sig%3D"):
        assert leaked not in text
    assert '"note": "ab"' in text  # too-short values are not treated as secrets


@pytest.mark.parametrize("text", [
    "Bearer abcdefghijkl", "BEARER abcdefghijkl", "access_token=leakedvalue1", "accessToken: leakedvalue1",
    "client_secret=leakedvalue1", "api_key=leakedvalue1", "Api-Key: leakedvalue1", "APIKEY=leakedvalue1",
    "password: leakedvalue1", "Token=leakedvalue1", "projectApiKey: leakedvalue1",
    "projectHmacKey: leakedvalue1", 'oauth_signature="leakedvalue1"',
])
def test_redactor_patterns_run_for_every_key_word(text: str) -> None:
    # plain words skip the patterns (a cheap cue first): every key word must still reach them
    redacted = Redactor()(f"step said {text}, done")
    assert "leakedvalue1" not in redacted and "abcdefghijkl" not in redacted
    assert redacted.startswith("step said ") and redacted.endswith(", done")


def test_redactor_leaves_plain_text_alone() -> None:
    for text in ("Fetch data", "2026-01-01T00:00:00Z", "running: step 1 'x' of 2 (transform started)"):
        assert Redactor()(text) == text
    assert Redactor(["plainsecret"])("the plainsecret leaked") == "the *** leaked"


def test_connection_secrets_reach_the_airflow_masker(conn_env: Any) -> None:
    from airflow_provider_pipelines._compat import redact_secrets as redact

    conn_env("masked_conn", conn_type="cognite", host="https://westeurope-1.cognitedata.com",
             login="client-x", password="masker-client-secret-77",
             extra={"project": "p", "token_url": "https://login.test/t"})
    CogniteHook("masked_conn").resolved  # noqa: B018
    masked = redact("the value is masker-client-secret-77")
    assert "masker-client-secret-77" not in masked and masked.startswith("the value is ")
