"""Transport safety: HTTPS only (loopback excepted), TLS verified by default (``ca_bundle`` for a private
CA), and credentials never carried to another host by a redirect.

The TLS tests run a real HTTPS server with a certificate from a throw-away CA; the redirect tests
use ``requests_mock`` (sync path) and local aiohttp servers (async path).
"""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from airflow_provider_pipelines._compat import AirflowException
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.cognite import CogniteHook
from airflow_provider_pipelines.hooks.edge_impulse import EdgeImpulseHook
from airflow_provider_pipelines.hooks.here import HerePipelineHook
from airflow_provider_pipelines.sandbox.config import HERE_PIPELINE_OK, HERE_VERSION_OK
from airflow_provider_pipelines.sandbox.server import SandboxServer

RUN = {"jobId": 5, "status": "Completed"}
FAST = {"backoff_base": 0.01, "backoff_max": 0.02, "max_attempts": 2}


# ---- HTTPS only ----------------------------------------------------------------------------------------


TOKEN_URL = "https://login.example.com/oauth2/token"


def hooks_for(conn_env: Any, url: str, token_url: str = TOKEN_URL) -> list[Any]:
    """A hook of each vendor whose host is ``url``."""
    conn_env("c", conn_type="cognite", host=url, login="id", password="s",
             extra={"project": "p", "token_url": token_url})
    conn_env("e", conn_type="edge_impulse", host=url, password="ei_key")
    conn_env("h", conn_type="here_platform", host=url, login="AK", password="s",
             extra={"token_endpoint_url": token_url})
    return [CogniteHook("c"), EdgeImpulseHook("e"), HerePipelineHook("h")]


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765",
                                 "http://127.0.0.2:8765", "https://api.example.com"])
def test_https_or_loopback_is_accepted(requests_mock: Any, conn_env: Any, url: str) -> None:
    for hook in hooks_for(conn_env, url):
        assert hook.resolved.base_url.startswith(url)
    assert requests_mock.request_history == []


@pytest.mark.parametrize("url", ["http://api.example.com", "http://127.0.0.1.nip.io", "http://localhost.example.com",
                                 "http://10.0.0.5:8080", "ftp://api.example.com"])
def test_plain_http_to_another_host_is_refused(requests_mock: Any, conn_env: Any, url: str) -> None:
    for hook in hooks_for(conn_env, url):
        refused = r"host .* (must use https://|is not an absolute http\(s\) URL)"
        with pytest.raises(AirflowException, match=refused):
            hook.resolved  # noqa: B018 - resolving the connection is what is tested
    assert requests_mock.request_history == []


@pytest.mark.parametrize("hook_index", [0, 2], ids=["cognite-token_url", "here-token_endpoint_url"])
def test_plain_http_token_endpoint_is_refused(requests_mock: Any, conn_env: Any, hook_index: int) -> None:
    hook = hooks_for(conn_env, "https://api.example.com", token_url="http://login.example.com/token")[hook_index]
    with pytest.raises(AirflowException, match=r"'http://login.example.com/token' must use https://"):
        hook.resolved  # noqa: B018
    assert requests_mock.request_history == []


# ---- TLS verification --------------------------------------------------------------------------------------


def _certificates(directory: Path) -> tuple[Path, Path, Path, Path]:
    """``(ca.pem, server.pem, server.key, other-ca.pem)``: a CA, a certificate it signed, another CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def ca(common: str) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(common)).issuer_name(name(common))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    ca_key, ca_cert = ca("reliability test CA")
    _, other_cert = ca("some other CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca_cert.subject)
                   .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([
                       x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
                   .sign(ca_key, hashes.SHA256()))
    paths = [directory / n for n in ("ca.pem", "server.pem", "server.key", "other-ca.pem")]
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    paths[3].write_bytes(other_cert.public_bytes(serialization.Encoding.PEM))
    return paths[0], paths[1], paths[2], paths[3]


class TlsApi:
    """A real HTTPS server (its certificate signed by a private CA) that records what reached it."""

    def __init__(self, cert: Path, key: Path) -> None:
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
                body = json.dumps(RUN).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://localhost:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    return _certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_api(certificates: tuple[Path, Path, Path, Path]) -> Iterator[TlsApi]:
    api = TlsApi(certificates[1], certificates[2])
    yield api
    api.close()


def tls_hook(conn_env: Any, api: TlsApi, **extra: Any) -> CogniteHook:
    conn_env("cognite_tls", conn_type="cognite", host=api.url,
             extra={"project": "p", "token": "tls-static-token", **FAST, **extra})
    return CogniteHook("cognite_tls")


def both_paths(hook_factory: Any) -> list[Any]:
    """The outcome of the same read on the sync and on the async path (a fresh hook each)."""
    outcomes = []
    for path in ("sync", "async"):
        hook = hook_factory()
        try:
            if path == "sync":
                outcomes.append(hook.get_pipeline_run(1, 5))
            else:
                outcomes.append(asyncio.run(hook.aget_pipeline_run(1, 5)))
        except ApiError as err:
            outcomes.append(err)
    return outcomes


def test_tls_is_verified_by_default(conn_env: Any, tls_api: TlsApi) -> None:
    for outcome in both_paths(lambda: tls_hook(conn_env, tls_api)):
        assert isinstance(outcome, ApiError)
        assert "could not connect" in str(outcome) and "CERTIFICATE_VERIFY_FAILED" in str(outcome)
    assert tls_api.seen == []  # the handshake failed: no request, no token reached the server


def test_ca_bundle_trusts_a_private_ca(conn_env: Any, tls_api: TlsApi, certificates: Any) -> None:
    outcomes = both_paths(lambda: tls_hook(conn_env, tls_api, ca_bundle=str(certificates[0])))
    assert outcomes == [RUN, RUN]
    assert [s["authorization"] for s in tls_api.seen] == ["Bearer tls-static-token"] * 2


def test_ca_bundle_of_another_ca_is_refused(conn_env: Any, tls_api: TlsApi, certificates: Any) -> None:
    for outcome in both_paths(lambda: tls_hook(conn_env, tls_api, ca_bundle=str(certificates[3]))):
        assert isinstance(outcome, ApiError) and "CERTIFICATE_VERIFY_FAILED" in str(outcome)
    assert tls_api.seen == []


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verification_can_be_switched_off_with_a_warning(
    conn_env: Any, tls_api: TlsApi, caplog: pytest.LogCaptureFixture
) -> None:
    assert both_paths(lambda: tls_hook(conn_env, tls_api, verify_ssl=False)) == [RUN, RUN]
    assert "disables TLS certificate verification (verify_ssl=false)" in caplog.text


# ---- redirects never carry credentials to another host --------------------------------------------------

CDF = "https://westeurope-1.cognitedata.com"
RUN_URL = f"{CDF}/api/v1/projects/p/context/entitymatching/pipelines/1/runs/5"
ELSEWHERE = "https://collector.example.net/steal"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_api_redirect_is_not_followed(requests_mock: Any, conn_env: Any, status: int) -> None:
    conn_env("cognite_default", conn_type="cognite", host=CDF, extra={"project": "p", "token": "static-tok"})
    requests_mock.get(RUN_URL, status_code=status, headers={"Location": ELSEWHERE})
    elsewhere = requests_mock.get(ELSEWHERE, json=RUN)
    with pytest.raises(ApiError, match=rf"HTTP {status}"):
        CogniteHook().get_pipeline_run(1, 5)
    assert elsewhere.call_count == 0
    assert len(requests_mock.request_history) == 1


def test_edge_impulse_redirect_is_not_followed(requests_mock: Any, conn_env: Any) -> None:
    """The API key header (``x-api-key``) is not sent to the redirect target either."""
    conn_env("edge_impulse_default", conn_type="edge_impulse", password="ei_secret_key")
    url = "https://studio.edgeimpulse.com/v1/api/organizations/1/pipelines/12"
    requests_mock.get(url, status_code=302, headers={"Location": ELSEWHERE})
    elsewhere = requests_mock.get(ELSEWHERE, json={"success": True, "pipeline": {}})
    with pytest.raises(ApiError, match="HTTP 302"):
        EdgeImpulseHook().get_pipeline(1, 12)
    assert elsewhere.call_count == 0


def test_token_endpoint_redirect_is_not_followed(requests_mock: Any, conn_env: Any) -> None:
    token_url = "https://login.microsoftonline.com/t/oauth2/v2.0/token"
    conn_env("cognite_default", conn_type="cognite", host=CDF, login="id", password="client-secret-xyz",
             extra={"project": "p", "token_url": token_url})
    requests_mock.post(token_url, status_code=307, headers={"Location": ELSEWHERE})
    elsewhere = requests_mock.post(ELSEWHERE, json={"access_token": "t", "expires_in": 60})
    with pytest.raises(ApiError, match="HTTP 307"):
        CogniteHook().get_pipeline_run(1, 5)
    assert elsewhere.call_count == 0  # the client secret went nowhere else


@pytest.mark.asyncio
async def test_async_redirect_is_not_followed(conn_env: Any) -> None:
    """Async path: the API answers 302 to another origin; that origin receives nothing."""
    received: list[str] = []

    async def record(request: web.Request) -> web.Response:
        received.append(request.headers.get("Authorization", ""))
        return web.json_response(RUN)

    target = web.Application()
    target.router.add_route("*", "/{tail:.*}", record)
    async with TestServer(target) as other:

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(str(other.make_url("/steal")))

        api = web.Application()
        api.router.add_get("/{tail:.*}", redirect)
        async with TestServer(api) as server:
            conn_env("cognite_default", conn_type="cognite", host=str(server.make_url("")).rstrip("/"),
                     extra={"project": "p", "token": "static-tok"})
            with pytest.raises(ApiError, match="HTTP 302"):
                await CogniteHook().aget_pipeline_run(1, 5)
    assert received == []


HERE_BASE = "https://pipelines.api.platform.here.com/pipeline-service"
HERE_TOKEN = "https://account.api.here.com/oauth2/token"
ACTIVATE = f"/v2/pipelines/{HERE_PIPELINE_OK}/versions/{HERE_VERSION_OK}/operations/activate"
OPERATION = {"id": "5f2b5b1e-0000-4000-8000-00000000c0de", "state": "accepted", "requestType": "activate"}


@pytest.fixture
def here_conn(requests_mock: Any, conn_env: Any) -> None:
    conn_env("here_default", conn_type="here_platform", host=HERE_BASE, login="AK", password="here-secret",
             extra={"token_endpoint_url": HERE_TOKEN})
    requests_mock.post(HERE_TOKEN, json={"access_token": "here-bearer", "expires_in": 3600})


@pytest.mark.parametrize("location", [
    "https://pipelines.example.com/pipeline-service" + ACTIVATE,  # not HERE
    "https://here.com.example.net/pipeline-service" + ACTIVATE,  # a look-alike
    "http://pipelines.eu.platform.here.com/pipeline-service" + ACTIVATE,  # HERE, but plain http
])
def test_here_307_to_an_untrusted_target_is_refused(
    requests_mock: Any, here_conn: None, location: str
) -> None:
    requests_mock.post(HERE_BASE + ACTIVATE, status_code=307, headers={"Location": location})
    target = requests_mock.post(location, status_code=202, json=OPERATION)
    with pytest.raises(ApiError, match=r"HTTP 307: redirected to .*(no token was sent|not https)"):
        HerePipelineHook().schedule_pipeline_version(HERE_PIPELINE_OK, HERE_VERSION_OK)
    assert target.call_count == 0


@pytest.mark.parametrize("location", [
    "https://pipelines.eu-west-1.platform.here.com/pipeline-service" + ACTIVATE,  # another HERE host
    "/pipeline-service-alt" + ACTIVATE,  # the same host
])
def test_here_307_to_here_is_followed_with_the_token(
    requests_mock: Any, here_conn: None, location: str
) -> None:
    requests_mock.post(HERE_BASE + ACTIVATE, status_code=307, headers={"Location": location})
    absolute = location if location.startswith("https") else f"https://pipelines.api.platform.here.com{location}"
    target = requests_mock.post(absolute, status_code=202, json=OPERATION)
    body = {"inputCatalogs": {"weather": {"processingType": "changes", "version": 75}}}
    assert HerePipelineHook().schedule_pipeline_version(HERE_PIPELINE_OK, HERE_VERSION_OK, body) == OPERATION
    assert target.call_count == 1
    assert target.last_request.headers["Authorization"] == "Bearer here-bearer"
    assert target.last_request.json() == body  # same method, same body


def test_here_307_on_the_async_path(sb: SandboxServer) -> None:
    """Against the sandbox: a 307 to its alternate base is followed; one to another host is refused."""

    async def scenario() -> tuple[Any, Any]:
        received: list[str] = []

        async def record(request: web.Request) -> web.Response:
            received.append(request.headers.get("Authorization", ""))
            return web.json_response(OPERATION, status=202)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        async with TestServer(app, host="127.0.0.2") as other:
            sb.configure_resource("here", "versions", HERE_VERSION_OK,
                                  redirect=str(other.make_url("/pipeline-service")))
            with pytest.raises(ApiError, match=r"redirected to http://127\.0\.0\.2:\d+, .*no token was sent"):
                await HerePipelineHook().aschedule_pipeline_version(HERE_PIPELINE_OK, HERE_VERSION_OK)
            refused = list(received)
        sb.configure_resource("here", "versions", HERE_VERSION_OK, redirect=True)
        followed = await HerePipelineHook().aschedule_pipeline_version(HERE_PIPELINE_OK, HERE_VERSION_OK)
        return refused, followed

    refused, followed = asyncio.run(scenario())
    assert refused == []
    assert followed["state"] == "accepted"
    posts = sb.requests(method="POST", path="/pipeline-service*/operations/activate")
    assert [(p["path"].split("/v2/")[0], p["status"]) for p in posts] == [
        ("/pipeline-service", 307), ("/pipeline-service", 307), ("/pipeline-service-alt", 202)]
    assert posts[-1]["headers"]["authorization"] == "Bearer <redacted>"  # the token went along, to HERE
