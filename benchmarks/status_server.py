"""A local nginx that serves static job-status documents and OAuth token endpoints.

The benchmarks measure the *client* side (the triggerer's event loop), so the server must cost
next to nothing and never be the bottleneck: nginx from the distribution's packages, HTTP on
127.0.0.1, every answer a constant ``return 200 '{...}'`` (no upstream, no disk reads), one
access-log line per request (``$msec $request_method $uri $status``) from which the benchmarks
count the requests served, by endpoint and by time.

Every status document says the job is still running, so the triggers keep polling for the whole
measurement window.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

#: Token lifetime the token endpoints announce (``expires_in``). The provider refreshes a token
#: ``min(60 s, lifetime / 2)`` before it expires, i.e. every 60 s with this value, so a 60 s
#: window plus warm-up spans two token lifetimes and shows one refresh per credential.
TOKEN_EXPIRES_IN = 120
#: Credentials (one token endpoint each) the Cognite triggers are spread over.
CREDENTIALS = ("a", "b")
PROJECT = "bench"
#: Run id the Edge Impulse status document reports as the pipeline's current run.
EI_RUN_ID = 4242
#: The one Edge Impulse organization the benchmark's pipelines belong to.
EI_ORGANIZATION = 1
HERE_PREFIX = "/here"
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_T0 = 1767225600000  # 2026-01-01T00:00:00Z in ms

# (kind, nginx location, status, JSON body). Locations use regexes so every trigger can poll its
# own job id, as in production.
ENDPOINTS: tuple[tuple[str, str, int, str], ...] = (
    *(
        (f"token:{cred}", f"= /oauth/{cred}/token", 200,
         f'{{"access_token": "bench-access-token-{cred}-0123456789abcdef", "token_type": "Bearer", '
         f'"expires_in": {TOKEN_EXPIRES_IN}}}')
        for cred in CREDENTIALS
    ),
    ("token:here", "= /here-oauth/token", 200,
     f'{{"accessToken": "bench-here-access-token-0123456789abcdef", "tokenType": "bearer", '
     f'"expiresIn": {TOKEN_EXPIRES_IN}}}'),
    ("status:cognite.entity_matching_pipeline_run",
     rf"~ ^/api/v1/projects/{PROJECT}/context/entitymatching/pipelines/[0-9]+/runs/[0-9]+$", 200,
     f'{{"jobId": 1, "status": "Running", "createdTime": {_T0}, "startTime": {_T0}, "statusTime": {_T0}}}'),
    ("status:cognite.advanced_join_estimate_quality",
     rf"~ ^/api/v1/projects/{PROJECT}/advancedjoins/estimatequality/[^/]+$", 200,
     '{"jobId": "00000000-0000-4000-8000-000000000000", "status": "Running", '
     f'"advancedJoinExternalId": "bench.join", "createdTime": {_T0}}}'),
    ("status:cognite.extraction_pipeline_report", f"= /api/v1/projects/{PROJECT}/extpipes/runs/list", 200,
     '{"items": []}'),
    ("status:edge_impulse.pipeline_run",
     rf"~ ^/v1/api/organizations/{EI_ORGANIZATION}/pipelines/[0-9]+$", 200,
     '{"success": true, "pipeline": {"id": 12, "name": "bench pipeline", "description": "", '
     f'"intervalStr": "", "currentRun": {{"id": {EI_RUN_ID}, "pipelineId": 12, '
     '"created": "2026-01-01T00:00:00Z", "steps": [{"name": "Fetch data", "progress": "Running", '
     '"job": {"id": 7001, "category": "", "created": "2026-01-01T00:00:00Z", '
     '"started": "2026-01-01T00:00:01Z"}}]}}}'),
    ("status:here.pipeline_operation",
     rf"~ ^{HERE_PREFIX}/v2/pipelines/{_UUID}/versions/{_UUID}/operations/{_UUID}$", 200,
     '{"id": "5f2b5b1e-0000-4000-8000-00000000c0de", "type": "activate", "state": "being_processed", '
     '"created": "2026-01-01T00:00:00Z", "updated": "2026-01-01T00:00:01Z"}'),
    # HttpSensorTrigger keeps poking only while the endpoint answers 404 (providers-http 6.3.0).
    ("status:http_sensor", "= /http-sensor/job", 404, '{"status": "Running"}'),
    ("status:shared_aiohttp", "= /minimal/job", 200, '{"status": "Running"}'),
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LogLine:
    time: float
    method: str
    uri: str
    status: int
    kind: str


class NginxStatusServer:
    """Start nginx on ``127.0.0.1:<free port>`` with :data:`ENDPOINTS`; stop it on exit."""

    def __init__(self, nginx: str | None = None, nice: int = 0) -> None:
        binary = nginx or shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise SystemExit("nginx is not installed: apt-get update && apt-get install -y nginx")
        self.binary = binary
        self.endpoints = ENDPOINTS
        self.nice = nice
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.access_log = self.dir / "access.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._matchers = [(kind, _matcher(location)) for kind, location, _, _ in self.endpoints]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        locations = "\n".join(
            f"    location {_quoted(location)} {{ add_header x-request-id bench; return {status} '{body}'; }}"
            for _, location, status, body in self.endpoints
        )
        d = self.dir
        return f"""
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; multi_accept on; }}
http {{
  log_format bench '$msec $request_method $uri $status';
  access_log {self.access_log} bench;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  default_type application/json;
  keepalive_timeout 120s;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{self.port} backlog=4096;
{locations}
    location / {{ return 404 '{{"error": {{"code": 404, "message": "not a benchmark endpoint"}}}}'; }}
  }}
}}
"""

    def __enter__(self) -> NginxStatusServer:
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config())
        self._proc = subprocess.Popen(
            [self.binary, "-p", str(self.dir), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise SystemExit(f"nginx did not start: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise SystemExit("nginx did not start listening within 10 s")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- access log -------------------------------------------------------------------------

    def log_offset(self) -> int:
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def classify(self, uri: str) -> str:
        for kind, match in self._matchers:
            if match(uri):
                return kind
        return "other"

    def lines(self, start_offset: int = 0) -> Iterator[LogLine]:
        """Access-log lines written after ``start_offset`` (nginx writes each line unbuffered)."""
        with open(self.access_log, "rb") as fh:
            fh.seek(start_offset)
            for raw in fh:
                parts = raw.decode(errors="replace").split()
                if len(parts) != 4:
                    continue
                yield LogLine(float(parts[0]), parts[1], parts[2], int(parts[3]), self.classify(parts[2]))


def _quoted(location: str) -> str:
    """nginx needs regexes with ``{n}`` quantifiers quoted (a bare ``{`` opens a block)."""
    op, _, pattern = location.partition(" ")
    return f'{op} "{pattern}"' if op == "~" else location


def _matcher(location: str) -> Callable[[str], bool]:
    op, _, pattern = location.partition(" ")
    if op == "=":
        return lambda uri: uri == pattern
    regex = re.compile(pattern)
    return lambda uri: regex.search(uri) is not None


def connections(base_url: str) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` values of the benchmark's connections, all pointing at this server."""
    import json

    conns: dict[str, dict[str, object]] = {
        f"cognite_bench_{cred}": {
            "conn_type": "cognite", "host": base_url, "login": f"bench-client-{cred}",
            "password": f"bench-client-secret-{cred}",
            "extra": {"project": PROJECT, "token_url": f"{base_url}/oauth/{cred}/token",
                      "scopes": "bench/.default"},
        }
        for cred in CREDENTIALS
    }
    conns["edge_impulse_bench"] = {"conn_type": "edge_impulse", "host": base_url,
                                   "password": "ei_bench0123456789abcdef0123456789abcdef"}
    conns["here_bench"] = {"conn_type": "here_platform", "host": f"{base_url}{HERE_PREFIX}",
                           "login": "BENCHACCESSKEYID", "password": "bench-access-key-secret",
                           "extra": {"token_endpoint_url": f"{base_url}/here-oauth/token"}}
    conns["http_bench"] = {"conn_type": "http", "host": base_url}
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(value) for conn_id, value in conns.items()}


def environment(base_url: str) -> dict[str, str]:
    """Environment of a benchmark worker process."""
    env = dict(os.environ)
    env.update(connections(base_url))
    env.setdefault("AIRFLOW_HOME", str(Path(tempfile.gettempdir()) / "bench-airflow-home"))
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    return env
