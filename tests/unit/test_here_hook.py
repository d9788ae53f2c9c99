"""HerePipelineHook: signed token requests, token caching, trace headers, errors, 307, credentials."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256, Client

from airflow_provider_pipelines.hooks._auth import TOKEN_CACHE
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.here import (
    DEFAULT_BASE_URL,
    DEFAULT_TOKEN_ENDPOINT_URL,
    HerePipelineHook,
    connection_from_credentials_properties,
    here_id,
    oauth1_authorization_header,
    parse_credentials_properties,
    signature_base_string,
    token_request_body,
)

BASE = DEFAULT_BASE_URL
TOKEN_URL = DEFAULT_TOKEN_ENDPOINT_URL
KEY_ID = "TESTACCESSKEYID"
SECRET = "test-access-key-secret-Zq9/+="
SCOPE = "hrn:here:authorization::org1:project/p1"
PID = "5f2b5b1e-0000-4000-8000-000000000001"
VID = "5f2b5b1e-0000-4000-8000-0000000000a1"
OPID = "0b7c9d6e-1111-4222-8333-444455556666"
VERSION_URL = f"{BASE}/v2/pipelines/{PID}/versions/{VID}"
ACTIVATE_URL = f"{VERSION_URL}/operations/activate"
TOKENS = iter(f"tok-{i:04d}-{uuid.uuid4().hex}" for i in range(10_000))


def oauth_params(header: str) -> dict[str, str]:
    assert header.startswith("OAuth ")
    return {k: unquote(v) for k, v in re.findall(r'(\w+)="([^"]*)"', header)}


def expected_signature(header: str, url: str, body: str) -> str:
    """What oauthlib (an independent implementation) signs for the same nonce and timestamp."""
    params = oauth_params(header)
    client = Client(KEY_ID, client_secret=SECRET, signature_method=SIGNATURE_HMAC_SHA256,
                    nonce=params["oauth_nonce"], timestamp=params["oauth_timestamp"])
    _, headers, _ = client.sign(url, http_method="POST", body=body,
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    return oauth_params(headers["Authorization"])["oauth_signature"]


@pytest.fixture
def here_conn(conn_env):
    conn_env("here_default", conn_type="here_platform", login=KEY_ID, password=SECRET,
             extra={"scope": SCOPE})


def token_response(expires_in: int = 3600) -> dict[str, Any]:
    return {"json": {"access_token": next(TOKENS), "token_type": "bearer", "expires_in": expires_in,
                     "scope": SCOPE}}


@pytest.fixture
def token_mock(requests_mock):
    return requests_mock.post(TOKEN_URL, json=lambda request, context: token_response()["json"])


# --------------------------------------------------------------------------------------------
# Signing
# --------------------------------------------------------------------------------------------


def test_signature_matches_the_test_vector():
    body = token_request_body(SCOPE)
    oauth = {"oauth_consumer_key": "ACCESS_KEY_ID", "oauth_nonce": "abc",
             "oauth_signature_method": "HMAC-SHA256", "oauth_timestamp": "1700000000", "oauth_version": "1.0"}
    assert signature_base_string("POST", TOKEN_URL, {**oauth, **body}) == (
        "POST&https%3A%2F%2Faccount.api.here.com%2Foauth2%2Ftoken&grant_type%3Dclient_credentials"
        "%26oauth_consumer_key%3DACCESS_KEY_ID%26oauth_nonce%3Dabc%26oauth_signature_method%3DHMAC-SHA256"
        "%26oauth_timestamp%3D1700000000%26oauth_version%3D1.0%26scope%3Dhrn%253Ahere%253Aauthorization"
        "%253A%253Aorg1%253Aproject%252Fp1"
    )
    header = oauth1_authorization_header("ACCESS_KEY_ID", "SECRET", TOKEN_URL, body, nonce="abc",
                                         timestamp=1700000000)
    assert 'oauth_signature="52LqG9negb1GyXPxQxWDge7VYdKRtQT84UKKyieTcwA%3D"' in header
    signature = "52LqG9negb1GyXPxQxWDge7VYdKRtQT84UKKyieTcwA="
    assert oauth_params(header) == {**oauth, "oauth_signature": signature}


@pytest.mark.parametrize(
    ("url", "scope"),
    [
        ("https://ACCOUNT.api.here.com:443/oauth2/token", None),
        ("http://127.0.0.1:8123/oauth2/token", "hrn:here:authorization::org 1:project/p~1+x"),
        ("https://elb.cn-northwest-1.account.hereapi.cn/oauth2/token", SCOPE),
    ],
)
def test_signature_agrees_with_oauthlib(url, scope):
    body = token_request_body(scope)
    header = oauth1_authorization_header(KEY_ID, SECRET, url, body)
    form = urlencode(body)
    assert oauth_params(header)["oauth_signature"] == expected_signature(header, url, form)


def test_each_header_has_a_fresh_nonce():
    headers = {oauth_params(oauth1_authorization_header(KEY_ID, SECRET, TOKEN_URL, {}))["oauth_nonce"]
               for _ in range(50)}
    assert len(headers) == 50


# --------------------------------------------------------------------------------------------
# Token request, caching, refresh
# --------------------------------------------------------------------------------------------


def test_token_request_is_a_signed_form_post_and_every_call_carries_bearer_and_ids(
    here_conn, requests_mock, token_mock
):
    version = requests_mock.get(VERSION_URL, json={"id": VID, "state": "ready"})
    hook = HerePipelineHook(correlation_id="corr-1234")
    hook.get_pipeline_version(PID, VID)
    hook.get_pipeline_version(PID, VID, verbose=False)

    token_req = token_mock.request_history[0]
    assert token_req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(token_req.text) == {"grant_type": ["client_credentials"], "scope": [SCOPE]}
    params = oauth_params(token_req.headers["Authorization"])
    assert params["oauth_consumer_key"] == KEY_ID
    assert params["oauth_signature_method"] == "HMAC-SHA256"
    assert params["oauth_version"] == "1.0"
    assert params["oauth_signature"] == expected_signature(token_req.headers["Authorization"], TOKEN_URL,
                                                           token_req.text)
    assert SECRET not in token_req.headers["Authorization"] and SECRET not in token_req.text

    first, second = version.request_history
    assert first.headers["Authorization"].startswith("Bearer tok-")
    assert first.headers["Authorization"] == second.headers["Authorization"]
    assert first.qs == {"verbose": ["true"]} and second.qs == {"verbose": ["false"]}
    assert first.headers["X-Correlation-ID"] == second.headers["X-Correlation-ID"] == "corr-1234"
    assert uuid.UUID(first.headers["X-Request-ID"]) != uuid.UUID(second.headers["X-Request-ID"])
    assert token_req.headers.get("X-Correlation-ID") is None  # nothing undocumented sent to the account API


def test_every_token_attempt_is_signed_anew(here_conn, requests_mock):
    tokens = requests_mock.post(TOKEN_URL, [
        {"status_code": 429, "headers": {"Retry-After": "0"},
         "json": {"errorId": "E-1", "httpStatus": 429, "errorCode": 429002, "message": "Too many requests"}},
        token_response(),
    ])
    requests_mock.get(VERSION_URL, json={"id": VID})
    HerePipelineHook().get_pipeline_version(PID, VID)
    first, second = tokens.request_history
    a, b = oauth_params(first.headers["Authorization"]), oauth_params(second.headers["Authorization"])
    assert a["oauth_nonce"] != b["oauth_nonce"]
    for req in (first, second):
        assert oauth_params(req.headers["Authorization"])["oauth_signature"] == expected_signature(
            req.headers["Authorization"], TOKEN_URL, req.text)


def test_one_token_request_for_many_calls_and_hooks(here_conn, requests_mock, token_mock):
    requests_mock.get(VERSION_URL, json={"id": VID})
    for _ in range(5):
        hook = HerePipelineHook()
        for _ in range(4):
            hook.get_pipeline_version(PID, VID)
    assert token_mock.call_count == 1
    assert list(TOKEN_CACHE.fetches.values()) == [1]


def test_token_is_refreshed_before_it_expires(here_conn, requests_mock, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(TOKEN_CACHE, "clock", lambda: now[0])
    tokens = requests_mock.post(TOKEN_URL, [token_response(expires_in=600), token_response(expires_in=600)])
    api = requests_mock.get(VERSION_URL, json={"id": VID})
    hook = HerePipelineHook()
    hook.get_pipeline_version(PID, VID)
    now[0] += 539  # refresh 60 s ahead of expiry: still the first token
    hook.get_pipeline_version(PID, VID)
    assert tokens.call_count == 1
    now[0] += 2  # 541 s: inside the refresh window, before the 600 s expiry
    hook.get_pipeline_version(PID, VID)
    assert tokens.call_count == 2
    bearers = [r.headers["Authorization"] for r in api.request_history]
    assert bearers[0] == bearers[1] != bearers[2]


def test_a_401_refreshes_the_token_once(here_conn, requests_mock, token_mock):
    api = requests_mock.get(VERSION_URL, [
        {"status_code": 401, "json": {"status": 401, "code": "E1401", "message": "Unauthorized"}},
        {"json": {"id": VID}},
    ])
    assert HerePipelineHook().get_pipeline_version(PID, VID) == {"id": VID}
    assert token_mock.call_count == 2
    assert api.request_history[0].headers["Authorization"] != api.request_history[1].headers["Authorization"]


def test_scope_is_optional(conn_env, requests_mock, token_mock):
    conn_env("here_default", conn_type="here_platform", login=KEY_ID, password=SECRET)
    requests_mock.get(VERSION_URL, json={"id": VID})
    HerePipelineHook().get_pipeline_version(PID, VID)
    req = token_mock.request_history[0]
    assert parse_qs(req.text) == {"grant_type": ["client_credentials"]}
    assert oauth_params(req.headers["Authorization"])["oauth_signature"] == expected_signature(
        req.headers["Authorization"], TOKEN_URL, req.text)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_error_message_object_names_everything(here_conn, requests_mock, token_mock):
    requests_mock.post(ACTIVATE_URL, status_code=400, headers={"X-Request-ID": "srv-req-1",
                                                               "X-Correlation-ID": "srv-corr-1"},
                       json={"status": 400, "code": "E1000", "message": "Validation Failed",
                             "errors": [{"field": "/inputCatalogs/weather/version", "invalidValue": -1,
                                         "message": "must be >= 0", "code": "E1000", "status": 400}]})
    with pytest.raises(ApiError) as info:
        HerePipelineHook().schedule_pipeline_version(PID, VID, {"inputCatalogs": {}})
    err = info.value
    assert (err.status, err.request_id, err.correlation_id) == (400, "srv-req-1", "srv-corr-1")
    assert err.vendor == "HERE"
    text = str(err)
    for part in ("activate pipeline version", f"pipeline {PID} version {VID}", "HTTP 400",
                 "Validation Failed", "E1000", "/inputCatalogs/weather/version: must be >= 0",
                 "request id srv-req-1",
                 "correlation id srv-corr-1"):
        assert part in text


def test_error_array_bodies_are_read(here_conn, requests_mock, token_mock):
    requests_mock.get(f"{VERSION_URL}/jobs", status_code=404, json=[
        {"status": 404, "code": "E1404", "message": "PipelineVersion not found"},
        {"status": 404, "code": "E1405", "message": "second reason"},
    ])
    with pytest.raises(ApiError) as info:
        HerePipelineHook(correlation_id="c-1").list_jobs(PID, VID)
    assert "PipelineVersion not found (code E1404); second reason (code E1405)" in str(info.value)
    assert info.value.correlation_id == "c-1"
    assert re.search(r"request id [0-9a-f-]{36}", str(info.value))  # ours, since the server sent none


def test_token_endpoint_error_response_is_explained_without_secrets(here_conn, requests_mock, caplog):
    caplog.set_level(logging.DEBUG)
    tokens = requests_mock.post(TOKEN_URL, status_code=401, json={
        "errorId": "ERROR-3c1d", "httpStatus": 401, "errorCode": 401300,
        "message": "Invalid client credentials",
        "errorFields": [{"name": "oauth_signature", "errorCode": 401300, "message": "mismatch"}]})
    api = requests_mock.get(VERSION_URL, json={})
    with pytest.raises(ApiError) as info:
        HerePipelineHook().get_pipeline_version(PID, VID)
    text = str(info.value)
    assert "request an access token" in text and f"access key {KEY_ID}" in text
    assert "Invalid client credentials (errorCode 401300, errorId ERROR-3c1d): oauth_signature: mismatch" \
        in text
    assert tokens.call_count == 1 and api.call_count == 0
    assert SECRET not in text and SECRET not in caplog.text


def test_test_connection(here_conn, requests_mock, token_mock):
    requests_mock.get(f"{BASE}/v2/pipelines", json=[{"id": PID}, {"id": VID}])
    assert HerePipelineHook().test_connection() == (
        True, f"Connected to the HERE Pipeline API at {BASE} (2 pipelines visible).")


def test_test_connection_failure_says_why(here_conn, requests_mock):
    requests_mock.post(TOKEN_URL, status_code=401, json={
        "errorCode": 401310, "message": "Attempt to use client ID instead of access key identifier"})
    ok, message = HerePipelineHook().test_connection()
    assert not ok and "401310" in message and "client ID" in message and SECRET not in message
    assert message.endswith("Hint: the login is a client id; use here.access.key.id from "
                            "credentials.properties.")


# --------------------------------------------------------------------------------------------
# 307 redirects on operations
# --------------------------------------------------------------------------------------------

OP = {"id": OPID, "requestType": "activate", "state": "accepted", "created": "2026-01-01T00:00:00+00:00"}


def test_307_to_the_same_host_is_followed_with_the_token_and_body(here_conn, requests_mock, token_mock):
    alt = f"{BASE}-alt/v2/pipelines/{PID}/versions/{VID}/operations/activate"
    first = requests_mock.post(ACTIVATE_URL, status_code=307, headers={"Location": alt})
    second = requests_mock.post(alt, status_code=202, json=OP)
    body = {"inputCatalogs": {"weather": {"processingType": "changes", "version": 3}}}
    assert HerePipelineHook().schedule_pipeline_version(PID, VID, body) == OP
    assert first.call_count == second.call_count == 1
    sent = second.last_request
    assert sent.json() == body and sent.headers["Authorization"].startswith("Bearer tok-")
    assert sent.headers["Authorization"] == first.last_request.headers["Authorization"]


def test_307_to_another_here_host_is_followed(here_conn, requests_mock, token_mock):
    other = f"https://pipelines.api.platform.in.here.com/pipeline-service/v2/pipelines/{PID}/versions/" \
            f"{VID}/operations/cancel"
    requests_mock.post(f"{VERSION_URL}/operations/cancel", status_code=307, headers={"Location": other})
    target = requests_mock.post(other, status_code=202, json={**OP, "requestType": "cancel"})
    assert HerePipelineHook().version_operation(PID, VID, "cancel")["requestType"] == "cancel"
    assert target.last_request.headers["Authorization"].startswith("Bearer ")


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("https://evil.example.com/steal", "neither the connection's host"),
        ("https://here.com.evil.example/x", "neither the connection's host"),
        ("http://pipelines.api.platform.here.com/pipeline-service/x", "not https"),
        (None, "no Location header"),
    ],
)
def test_307_elsewhere_is_refused_without_sending_the_token(
    here_conn, requests_mock, token_mock, location, why
):
    headers = {"Location": location} if location else {}
    requests_mock.post(ACTIVATE_URL, status_code=307, headers={**headers, "X-Request-ID": "r-307"})
    elsewhere = requests_mock.register_uri("POST", re.compile(r"^(?!https://pipelines\.api\.platform\.here\.com/"
                                                              r"pipeline-service/v2/.*/activate$).*(steal|/x)$"),
                                           json={})
    with pytest.raises(ApiError) as info:
        HerePipelineHook().schedule_pipeline_version(PID, VID)
    assert info.value.status == 307 and why in str(info.value) and "request id r-307" in str(info.value)
    assert elsewhere.call_count == 0
    bearer = requests_mock.request_history[-1].headers["Authorization"]
    assert bearer.split()[1] not in str(info.value)


def test_endless_redirects_stop(here_conn, requests_mock, token_mock):
    requests_mock.post(ACTIVATE_URL, status_code=307, headers={"Location": ACTIVATE_URL})
    with pytest.raises(ApiError, match="more than 3 redirects"):
        HerePipelineHook().schedule_pipeline_version(PID, VID)
    assert requests_mock.call_count == 1 + 4  # token + the original and three follows


# --------------------------------------------------------------------------------------------
# Connection fields and credentials.properties
# --------------------------------------------------------------------------------------------

PROPERTIES = r"""
# downloaded from the HERE platform
here.user.id = HERE-1234
here.client.id = my-client-id
here.access.key.id = FROMFILEKEYID
here.access.key.secret = s3cr3t=with:specials\\and\=escape
here.token.endpoint.url = https\://account.api.here.com/oauth2/token
! another comment style
here.token.scope: hrn:here:authorization::org1:project/p1
"""


def test_parse_credentials_properties():
    props = parse_credentials_properties(PROPERTIES)
    assert props["here.access.key.id"] == "FROMFILEKEYID"
    assert props["here.access.key.secret"] == "s3cr3t=with:specials\\and=escape"
    assert props["here.token.endpoint.url"] == "https://account.api.here.com/oauth2/token"
    assert props["here.token.scope"] == SCOPE
    assert parse_credentials_properties("a=1\\\n   2\nb 3\n") == {"a": "12", "b": "3"}


def test_connection_from_credentials_properties():
    conn = connection_from_credentials_properties(PROPERTIES)
    assert conn == {
        "conn_type": "here_platform", "login": "FROMFILEKEYID",
        "password": "s3cr3t=with:specials\\and=escape",
        "extra": {"token_endpoint_url": TOKEN_URL, "scope": SCOPE},
    }
    json.dumps(conn)
    china = connection_from_credentials_properties(
        "here.access.key.id=K\nhere.access.key.secret=S\n",
        host="https://pipelines.api.platform.hereolp.cn/pipeline-service")
    assert china["host"].endswith("hereolp.cn/pipeline-service")
    assert china["extra"] == {"token_endpoint_url": TOKEN_URL}
    with pytest.raises(ValueError, match=r"no here.access.key.secret.*download the file again"):
        connection_from_credentials_properties("here.access.key.id = X\n")


def test_credentials_properties_extra_fills_empty_fields(conn_env, requests_mock, token_mock):
    conn_env("here_default", conn_type="here_platform", extra={"credentials_properties": PROPERTIES})
    requests_mock.get(VERSION_URL, json={})
    hook = HerePipelineHook()
    hook.get_pipeline_version(PID, VID)
    req = token_mock.request_history[0]
    assert oauth_params(req.headers["Authorization"])["oauth_consumer_key"] == "FROMFILEKEYID"
    assert parse_qs(req.text)["scope"] == [SCOPE]
    assert "s3cr3t=with:specials\\and=escape" in hook.resolved.secrets


def test_explicit_fields_win_over_credentials_properties(conn_env, requests_mock, token_mock):
    conn_env("here_default", conn_type="here_platform", login=KEY_ID, password=SECRET,
             extra={"credentials_properties": PROPERTIES})
    requests_mock.get(VERSION_URL, json={})
    HerePipelineHook().get_pipeline_version(PID, VID)
    header = token_mock.request_history[0].headers["Authorization"]
    assert oauth_params(header)["oauth_consumer_key"] == KEY_ID


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"password": SECRET}, "has no access key id (login)"),
        ({"login": KEY_ID}, "has no access key secret (password)"),
        ({"login": KEY_ID, "password": SECRET, "host": "http://pipelines.example.com/ps"}, "must use https://"),
        ({"login": KEY_ID, "password": SECRET, "extra": {"token_endpoint_url": "http://account.example.com/t"}},
         "token_endpoint_url"),
    ],
)
def test_bad_connections_fail_clearly_before_any_request(conn_env, requests_mock, fields, message):
    conn_env("here_default", conn_type="here_platform", **fields)
    with pytest.raises(Exception, match=re.escape(message)):
        HerePipelineHook().get_pipeline_version(PID, VID)
    assert requests_mock.call_count == 0


def test_host_defaults_and_scheme(conn_env):
    conn_env("here_default", conn_type="here_platform", login=KEY_ID, password=SECRET)
    assert HerePipelineHook().resolved.base_url == DEFAULT_BASE_URL
    conn_env("here_cn", conn_type="here_platform", login=KEY_ID, password=SECRET,
             host="pipelines.api.platform.hereolp.cn/pipeline-service/")
    assert HerePipelineHook("here_cn").resolved.base_url == "https://pipelines.api.platform.hereolp.cn/pipeline-service"


def test_ui_field_behaviour():
    ui = HerePipelineHook.get_ui_field_behaviour()
    assert ui["relabeling"]["login"] == "Access key ID" and "schema" in ui["hidden_fields"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (f"hrn:here:pipeline::org1:{PID}", f"use '{PID}'"),
        ("42", "must be a HERE UUID"),
        (None, "must be a HERE UUID"),
        (f" {PID}x", "must be a HERE UUID"),
    ],
)
def test_here_id(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        here_id("pipeline_id", value)
    assert here_id("pipeline_id", f" {PID} ") == PID


def test_unknown_operation_is_refused(here_conn, requests_mock):
    with pytest.raises(ValueError, match="Unknown pipeline version operation 'delete'"):
        HerePipelineHook().version_operation(PID, VID, "delete")
    assert requests_mock.call_count == 0


# --------------------------------------------------------------------------------------------
# Async path against a local aiohttp server
# --------------------------------------------------------------------------------------------


class FakeHere:
    """A tiny HERE: verifies signatures with oauthlib, issues tokens, serves a version and a 307."""

    def __init__(self) -> None:
        self.token_requests: list[dict[str, str]] = []
        self.api_requests: list[dict[str, Any]] = []
        self.valid: set[str] = set()
        self.app = web.Application()
        self.app.router.add_post("/oauth2/token", self.token)
        self.app.router.add_get("/ps/v2/pipelines/{pid}/versions/{vid}", self.version)
        self.app.router.add_post("/ps/v2/pipelines/{pid}/versions/{vid}/operations/{op}", self.operation)
        self.app.router.add_post("/ps-alt/v2/pipelines/{pid}/versions/{vid}/operations/{op}", self.operation)
        self.url = ""

    async def token(self, request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)  # slow enough for concurrent callers to pile up
        body = await request.text()
        header = request.headers["Authorization"]
        self.token_requests.append({"body": body, "authorization": header})
        expected = expected_signature(header, f"{self.url}/oauth2/token", body)
        if oauth_params(header)["oauth_signature"] != expected:
            return web.json_response({"errorCode": 401300, "message": "signature mismatch"}, status=401)
        token = next(TOKENS)
        self.valid.add(token)
        return web.json_response({"access_token": token, "token_type": "bearer", "expires_in": 3600})

    def _authorized(self, request: web.Request) -> bool:
        self.api_requests.append({"path": request.path, "headers": dict(request.headers)})
        return request.headers.get("Authorization", "")[7:] in self.valid

    async def version(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"status": 401, "message": "Unauthorized"}, status=401)
        return web.json_response({"id": request.match_info["vid"], "state": "ready"},
                                 headers={"X-Request-ID": request.headers.get("X-Request-ID", "")})

    async def operation(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"status": 401, "message": "Unauthorized"}, status=401)
        if request.path.startswith("/ps/") and request.match_info["op"] == "activate":
            raise web.HTTPTemporaryRedirect(request.path.replace("/ps/", "/ps-alt/", 1))
        if request.path.startswith("/ps/") and request.match_info["op"] == "cancel":
            raise web.HTTPTemporaryRedirect("http://127.0.0.2:9/ps/steal")
        body = await request.json() if request.can_read_body else None
        return web.json_response({**OP, "requestType": request.match_info["op"], "body": body}, status=202)


@pytest_asyncio.fixture
async def fake_here(conn_env):
    fake = FakeHere()
    server = TestServer(fake.app)
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    conn_env("here_default", conn_type="here_platform", login=KEY_ID, password=SECRET,
             host=f"{fake.url}/ps", extra={"token_endpoint_url": f"{fake.url}/oauth2/token"})
    yield fake
    await server.close()


@pytest.mark.asyncio
async def test_async_calls_share_one_signed_token(fake_here):
    hooks = [HerePipelineHook(correlation_id=f"c-{i}") for i in range(4)]
    results = await asyncio.gather(*(h.aget_pipeline_version(PID, VID) for h in hooks for _ in range(5)))
    assert all(r["state"] == "ready" for r in results)
    assert len(fake_here.token_requests) == 1
    assert len({r["headers"]["X-Request-ID"] for r in fake_here.api_requests}) == 20
    assert {r["headers"]["X-Correlation-ID"] for r in fake_here.api_requests} == {"c-0", "c-1", "c-2", "c-3"}


@pytest.mark.asyncio
async def test_async_307_follows_same_host_and_refuses_others(fake_here):
    hook = HerePipelineHook()
    op = await hook.aschedule_pipeline_version(PID, VID, {"highAvailability": True})
    assert op["requestType"] == "activate" and op["body"] == {"highAvailability": True}
    followed = [r for r in fake_here.api_requests if r["path"].startswith("/ps-alt/")]
    assert len(followed) == 1 and followed[0]["headers"]["Authorization"].startswith("Bearer ")
    with pytest.raises(ApiError, match=r"127\.0\.0\.2:9, which is neither the connection's host"):
        await hook.aversion_operation(PID, VID, "cancel")
    assert not any("steal" in r["path"] for r in fake_here.api_requests)


def test_no_answer_quotes_the_ids_we_sent_and_is_not_repeated(here_conn, requests_mock, token_mock):
    import requests

    requests_mock.post(ACTIVATE_URL, exc=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(ApiError) as info:
        HerePipelineHook(correlation_id="c-77").schedule_pipeline_version(PID, VID)
    err = info.value
    assert err.ambiguous and err.status is None and "no answer within the read timeout" in str(err)
    assert err.request_id == requests_mock.request_history[-1].headers["X-Request-ID"]
    assert err.correlation_id == "c-77" and f"request id {err.request_id}" in str(err)
    assert requests_mock.call_count == 2  # the token and one POST: a POST is never blindly repeated
