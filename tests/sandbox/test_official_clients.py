"""Official clients as peers: cognite-sdk against the Cognite emulator (token endpoint and extpipe runs).

The edgeimpulse_api models validate every Edge Impulse body in ``test_edge_impulse.py`` and oauthlib
signs every HERE token request in ``test_here.py``.
"""

from __future__ import annotations

import pytest
from cognite.client import ClientConfig, CogniteClient, global_config
from cognite.client.credentials import CredentialProvider, OAuthClientCredentials, Token
from cognite.client.data_classes import ExtractionPipelineRunWrite
from cognite.client.exceptions import CogniteAPIError, CogniteNotFoundError, CogniteProjectAccessError

from airflow_provider_pipelines.sandbox import SandboxServer
from airflow_provider_pipelines.sandbox.config import (
    COGNITE_CLIENT_ID,
    COGNITE_CLIENT_SECRET,
    COGNITE_STATIC_TOKEN,
    EXTPIPE_CONTEXT_XID,
    EXTPIPE_EXTRACTOR_XID,
)


@pytest.fixture(autouse=True)
def _offline_sdk() -> None:
    global_config.disable_pypi_version_check = True  # the SDK would otherwise query pypi.org


def client(sb: SandboxServer, credentials: CredentialProvider | None = None) -> CogniteClient:
    config = ClientConfig(
        client_name="sandbox-tests",
        project="sandbox",
        credentials=credentials or Token(COGNITE_STATIC_TOKEN),
        base_url=sb.url,
    )
    return CogniteClient(config)


def test_sdk_creates_and_lists_extraction_pipeline_runs(sb: SandboxServer) -> None:
    c = client(sb)
    created = c.extraction_pipelines.runs.create(
        ExtractionPipelineRunWrite(extpipe_external_id=EXTPIPE_CONTEXT_XID, status="failure", message="boom")
    )
    assert created.status == "failure" and created.message == "boom" and created.id
    c.extraction_pipelines.runs.create(
        ExtractionPipelineRunWrite(extpipe_external_id=EXTPIPE_CONTEXT_XID, status="success", message="ok")
    )
    # GET /extpipes/runs (no filter besides externalId)
    runs = c.extraction_pipelines.runs.list(external_id=EXTPIPE_CONTEXT_XID, limit=10)
    assert [r.status for r in runs] == ["success", "failure"]
    # POST /extpipes/runs/list (filters)
    failures = c.extraction_pipelines.runs.list(
        external_id=EXTPIPE_CONTEXT_XID, statuses=["failure"], limit=10
    )
    assert [r.message for r in failures] == ["boom"]
    found = c.extraction_pipelines.runs.list(
        external_id=EXTPIPE_CONTEXT_XID, message_substring="bo", limit=10
    )
    assert len(found) == 1
    seeded = c.extraction_pipelines.runs.list(external_id=EXTPIPE_EXTRACTOR_XID, limit=10)
    assert [r.status for r in seeded] == ["success"]
    # the SDK sent its gzipped bodies and its default stable cdf-version
    entry = sb.requests(method="POST", path="*/extpipes/runs")[0]
    assert entry["headers"].get("content-encoding") == "gzip"
    assert entry["headers"]["cdf-version"] == "20230101"
    assert entry["body"]["items"][0]["externalId"] == EXTPIPE_CONTEXT_XID  # the log decodes gzip


def test_sdk_retrieves_extraction_pipelines_and_maps_errors(sb: SandboxServer) -> None:
    c = client(sb)
    pipe = c.extraction_pipelines.retrieve(external_id=EXTPIPE_EXTRACTOR_XID)
    assert pipe is not None and pipe.external_id == EXTPIPE_EXTRACTOR_XID and pipe.last_success
    assert c.extraction_pipelines.retrieve(external_id="nope") is None  # ignoreUnknownIds
    with pytest.raises(CogniteNotFoundError):
        c.extraction_pipelines.runs.create(
            ExtractionPipelineRunWrite(extpipe_external_id="nope", status="seen")
        )
    with pytest.raises(CogniteAPIError) as err:
        c.extraction_pipelines.runs.create(
            ExtractionPipelineRunWrite(
                extpipe_external_id=EXTPIPE_CONTEXT_XID, status="seen", message="m" * 1001
            )
        )
    assert err.value.code == 400 and err.value.x_request_id


def test_sdk_oauth_client_credentials_against_the_token_endpoint(sb: SandboxServer) -> None:
    creds = OAuthClientCredentials(
        token_url=f"{sb.url}/sandbox-tenant/oauth2/v2.0/token",
        client_id=COGNITE_CLIENT_ID,
        client_secret=COGNITE_CLIENT_SECRET,
        scopes=[f"{sb.url}/.default"],
    )
    c = client(sb, creds)
    runs = c.extraction_pipelines.runs.list(external_id=EXTPIPE_EXTRACTOR_XID, limit=5)
    assert len(runs) == 1
    token_request = sb.requests(path="*/oauth2/v2.0/token")[0]
    assert token_request["status"] == 200 and token_request["body"]["client_secret"] == "<redacted>"


def test_sdk_sees_401_for_a_bad_token(sb: SandboxServer) -> None:
    c = client(sb, Token("not-valid"))
    with pytest.raises(CogniteProjectAccessError):
        c.extraction_pipelines.runs.list(external_id=EXTPIPE_EXTRACTOR_XID, limit=5)
    # after a 401 the SDK inspects the token; the sandbox answers that endpoint too (401 here)
    assert [e["status"] for e in sb.requests(path="/api/v1/token/inspect")] == [401]
