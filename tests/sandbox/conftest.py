"""Fixtures for the sandbox tests: one server per session (manual clock), reset before each test."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256, SIGNATURE_TYPE_AUTH_HEADER, Client

from airflow_provider_pipelines.sandbox import SandboxServer
from airflow_provider_pipelines.sandbox.config import (
    COGNITE_CLIENT_ID,
    COGNITE_CLIENT_SECRET,
    EI_API_KEY,
    HERE_ACCESS_KEY_ID,
    HERE_ACCESS_KEY_SECRET,
)
from airflow_provider_pipelines.sandbox.testing import sandbox_fixture

# The fixture under test is the one other engineers use: a session server, reset before each test.
sandbox = sandbox_fixture(clock="manual")

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def sb(sandbox: SandboxServer) -> SandboxServer:
    return sandbox


@pytest.fixture
def http() -> Any:
    with requests.Session() as session:
        yield session


def cognite_token(sb: SandboxServer, **extra: str) -> str:
    data = {
        "grant_type": "client_credentials",
        "client_id": COGNITE_CLIENT_ID,
        "client_secret": COGNITE_CLIENT_SECRET,
        "scope": f"{sb.url}/.default",
        **extra,
    }
    r = requests.post(f"{sb.url}/sandbox-tenant/oauth2/v2.0/token", data=data, timeout=5)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def cdf(sb: SandboxServer, version: str | None = "20230101-beta", token: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token or cognite_token(sb)}"}
    if version is not None:
        headers["cdf-version"] = version
    return headers


def api(sb: SandboxServer, path: str) -> str:
    return f"{sb.url}/api/v1/projects/sandbox{path}"


EI = {"x-api-key": EI_API_KEY}


def ei(sb: SandboxServer, path: str = "") -> str:
    return f"{sb.url}/v1/api/organizations/1/pipelines{path}"


def here_sign(
    url: str,
    body: str | None = "grant_type=client_credentials",
    *,
    key: str = HERE_ACCESS_KEY_ID,
    secret: str = HERE_ACCESS_KEY_SECRET,
    nonce: str | None = None,
    timestamp: str | None = None,
    content_type: str = "application/x-www-form-urlencoded",
) -> dict[str, str]:
    """Headers of a token request signed by oauthlib (form body params included in the signature)."""
    client = Client(
        key,
        client_secret=secret,
        signature_method=SIGNATURE_HMAC_SHA256,
        signature_type=SIGNATURE_TYPE_AUTH_HEADER,
        nonce=nonce,
        timestamp=timestamp,
    )
    headers = {"Content-Type": content_type}
    if content_type == "application/x-www-form-urlencoded":
        _, signed, _ = client.sign(url, http_method="POST", body=body, headers=headers)
    else:  # JSON body: only the oauth_* parameters are signed
        _, signed, _ = client.sign(url, http_method="POST", body=None, headers={})
        signed = {**signed, "Content-Type": content_type}
    return dict(signed)


def here_token(sb: SandboxServer, scope: str | None = None) -> str:
    url = f"{sb.url}/oauth2/token"
    body = "grant_type=client_credentials" + (f"&scope={scope}" if scope else "")
    r = requests.post(url, data=body, headers=here_sign(url, body), timeout=5)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def here_api(sb: SandboxServer, path: str) -> str:
    return f"{sb.url}/pipeline-service/v2/pipelines{path}"


def wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
