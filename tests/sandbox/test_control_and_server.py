"""Control API, SandboxServer Python API, the CLI (subprocess) and import cost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from starlette.testclient import TestClient

from airflow_provider_pipelines.sandbox import SandboxServer, create_app
from airflow_provider_pipelines.sandbox.config import ConfigError

from .conftest import EI, api, cdf, ei

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# Control API
# --------------------------------------------------------------------------------------------
def test_health_and_connections(sb: SandboxServer) -> None:
    r = requests.get(f"{sb.url}/_sandbox/health", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["url"] == sb.url
    assert requests.get(f"{sb.url}/_sandbox/connections", timeout=5).json() == sb.connections()
    assert requests.get(f"{sb.url}/_sandbox/nothing", timeout=5).status_code == 404


def test_config_get_and_post(sb: SandboxServer) -> None:
    base = f"{sb.url}/_sandbox/config"
    assert requests.get(base, timeout=5).json()["cognite"]["token_lifetime"] == 3600
    patch = {
        "cognite": {"entity_matching": {"pipelines": {"sandbox.em.assets": {"queued": 0, "running": 0.5}}}}
    }
    r = requests.post(base, json=patch, timeout=5)
    assert r.status_code == 200
    assert r.json()["cognite"]["entity_matching"]["pipelines"]["sandbox.em.assets"]["running"] == 0.5
    h = cdf(sb)
    run = requests.post(api(sb, "/context/entitymatching/pipelines/1/runs"), headers=h, timeout=5).json()
    sb.advance(0.5)
    done = requests.get(
        api(sb, f"/context/entitymatching/pipelines/1/runs/{run['jobId']}"), headers=h, timeout=5
    )
    assert done.json()["status"] == "Completed"
    for bad in (
        {"nope": 1},
        {"cognite": {"entity_matching": {"pipelines": {"x": {"speed": 1}}}}},
        {"cognite": {"entity_matching": {"default": {"outcome": "maybe"}}}},
        {"here": {"default": {"job_running": -1}}},
        {"edge_impulse": {"unknown_status": "200"}},
    ):
        assert requests.post(base, json=bad, timeout=5).status_code == 400, bad
    assert requests.post(base, data=b"{", timeout=5).status_code == 400


def test_clock_control(sb: SandboxServer) -> None:
    base = f"{sb.url}/_sandbox/clock"
    start = requests.get(base, timeout=5).json()
    assert start["mode"] == "manual"
    moved = requests.post(base, json={"advance": 2.5}, timeout=5).json()
    assert moved["now_ms"] == start["now_ms"] + 2500
    target = moved["now"] + 10
    assert requests.post(base, json={"set": target}, timeout=5).json()["now"] == target
    assert requests.post(base, json={"set": 0}, timeout=5).status_code == 400
    assert requests.post(base, json={"unfreeze": True}, timeout=5).json()["mode"] == "real"
    assert requests.post(base, json={"freeze": True}, timeout=5).json()["mode"] == "manual"
    assert requests.post(base, json={"rewind": 1}, timeout=5).status_code == 400


def test_reset_and_expire_tokens(sb: SandboxServer) -> None:
    base = f"{sb.url}/_sandbox"
    h = cdf(sb)
    requests.post(ei(sb, "/12/run"), headers=EI, timeout=5)
    sb.inject_fault(path="/nothing", status=500)
    r = requests.post(f"{base}/expire_tokens", json={"vendor": "cognite"}, timeout=5)
    assert r.json() == {"expired": {"cognite": 1}}
    assert (
        requests.get(api(sb, "/context/entitymatching/pipelines/1"), headers=h, timeout=5).status_code == 401
    )
    assert requests.post(f"{base}/expire_tokens", json={"vendor": "acme"}, timeout=5).status_code == 400
    r = requests.post(f"{base}/reset", timeout=5)
    assert r.status_code == 200
    assert sb.faults() == [] and sb.requests() == []
    pipeline = requests.get(ei(sb, "/12"), headers=EI, timeout=5).json()["pipeline"]
    assert pipeline["currentRun"] is None
    r = requests.post(f"{base}/reset", json={"config": {"cognite": {"token_lifetime": 60}}}, timeout=5)
    assert requests.get(f"{base}/config", timeout=5).json()["cognite"]["token_lifetime"] == 60
    sb.reset()
    assert requests.get(f"{base}/config", timeout=5).json()["cognite"]["token_lifetime"] == 3600


def test_simulated_here_pages(sb: SandboxServer) -> None:
    r = requests.get(f"{sb.url}/_sandbox/here/jobs/abc/sparkui", timeout=5)
    assert r.status_code == 200 and "jobs/abc/sparkui" in r.text


# --------------------------------------------------------------------------------------------
# Python API
# --------------------------------------------------------------------------------------------
def test_connections_format(sb: SandboxServer) -> None:
    conns = {k: json.loads(v) for k, v in sb.connections().items()}
    url = sb.url
    assert url.startswith("http://127.0.0.1:")
    assert conns == {
        "AIRFLOW_CONN_COGNITE_DEFAULT": {
            "conn_type": "cognite",
            "host": url,
            "login": "sandbox-client",
            "password": "sandbox-client-secret",
            "extra": {
                "project": "sandbox",
                "token_url": url + "/sandbox-tenant/oauth2/v2.0/token",
                "scopes": url + "/.default",
            },
        },
        "AIRFLOW_CONN_EDGE_IMPULSE_DEFAULT": {
            "conn_type": "edge_impulse",
            "host": url,
            "password": "ei_sandbox_0123456789abcdef",
        },
        "AIRFLOW_CONN_HERE_DEFAULT": {
            "conn_type": "here_platform",
            "host": url + "/pipeline-service",
            "login": "SANDBOXACCESSKEYID",
            "password": "sandbox-access-key-secret",
            "extra": {"token_endpoint_url": url + "/oauth2/token"},
        },
    }


def test_connections_work_with_airflow(sb: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.models.connection import Connection

    for name, value in sb.connections().items():
        conn = Connection.from_json(value, conn_id=name.removeprefix("AIRFLOW_CONN_").lower())
        assert conn.host and conn.password
    cognite = Connection.from_json(
        sb.connections()["AIRFLOW_CONN_COGNITE_DEFAULT"], conn_id="cognite_default"
    )
    assert cognite.extra_dejson["project"] == "sandbox"


def test_configure_helpers(sb: SandboxServer) -> None:
    cfg = sb.configure(cognite={"token_lifetime": 5})
    assert cfg["cognite"]["token_lifetime"] == 5
    cfg = sb.configure_resource("here", "versions", "5f2b5b1e-0000-4000-8000-0000000000a1", job_running=None)
    assert cfg["here"]["versions"]["5f2b5b1e-0000-4000-8000-0000000000a1"]["job_running"] is None
    with pytest.raises(ConfigError):
        sb.configure_resource("here", "jobs", "x", job_running=1)
    with pytest.raises(ConfigError):
        sb.configure(cognite={"token_lifetime": "long"})


def test_server_on_its_own_port_with_real_clock() -> None:
    with SandboxServer(port=0, config={"cognite": {"token_lifetime": 60}}) as other:
        assert other.clock.mode == "real"
        r = requests.get(f"{other.url}/_sandbox/config", timeout=5)
        assert r.json()["cognite"]["token_lifetime"] == 60
        requests.post(f"{other.url}/v1/api/organizations/1/pipelines/12/run", headers=EI, timeout=5)
        # real time: the 2-step run takes 2.5 s; advancing the real clock also works
        other.advance(3)
        pipeline = requests.get(
            f"{other.url}/v1/api/organizations/1/pipelines/12", headers=EI, timeout=5
        ).json()
        assert pipeline["pipeline"]["lastRun"]["finished"] is not None
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{other.url}/_sandbox/health", timeout=1)


def test_deterministic_with_manual_clock_and_seed() -> None:
    config = {"clock": {"mode": "manual", "start": 1_700_000_000}}

    def scenario() -> list[Any]:
        out: list[Any] = []
        with TestClient(create_app(config), base_url="http://sandbox.test") as client:
            h = {"Authorization": "Bearer sandbox-static-token", "cdf-version": "alpha"}
            body = {
                "advancedJoinExternalId": "sandbox.join.good",
                "matcher": {
                    "type": "raw",
                    "dbName": "d",
                    "tableName": "t",
                    "fromColumnKey": "a",
                    "toColumnKey": "b",
                },
            }
            job = client.post(
                "/api/v1/projects/sandbox/advancedjoins/estimatequality", json=body, headers=h
            ).json()
            out.append(job)
            client.post("/_sandbox/clock", json={"advance": 3})
            out.append(
                client.get(
                    f"/api/v1/projects/sandbox/advancedjoins/estimatequality/{job['jobId']}", headers=h
                ).json()
            )
            out.append(client.post("/v1/api/organizations/1/pipelines/12/run", headers=EI).json())
        return out

    first, second = scenario(), scenario()
    assert first == second
    assert first[0]["createdTime"] == 1_700_000_000_000 and first[1]["status"] == "Completed"


# --------------------------------------------------------------------------------------------
# CLI and import cost
# --------------------------------------------------------------------------------------------
def _cli(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("pipelines-sandbox")
    if script.exists():  # the installed console script (entry point declared in pyproject.toml)
        return [str(script), *args]
    return [
        sys.executable,
        "-c",
        "import sys; from airflow_provider_pipelines.sandbox.cli import main; sys.exit(main())",
        *args,
    ]


def test_cli_serve_port_0_is_ready_fast(tmp_path: Path) -> None:
    config = tmp_path / "sandbox.json"
    config.write_text(json.dumps({"cognite": {"token_lifetime": 120}}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        _cli("serve", "--host", "127.0.0.1", "--port", "0", "--config", str(config)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            assert line, f"the CLI exited: {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line.rstrip("\n"))
            if line.startswith("pipelines-sandbox ready at "):
                break
        url = lines[-1].removeprefix("pipelines-sandbox ready at ")
        r = requests.get(f"{url}/_sandbox/config", timeout=5)
        elapsed = time.monotonic() - start
        assert r.status_code == 200 and r.json()["cognite"]["token_lifetime"] == 120
        assert elapsed < 3.0, f"ready after {elapsed:.2f} s"
        exports = [line for line in lines if line.startswith("export AIRFLOW_CONN_")]
        assert len(exports) == 3
        assert any(f'"host": "{url}/pipeline-service"' in line for line in exports)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_cli_rejects_bad_config_and_prints_connections(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cognite": {"nope": 1}}))
    proc = subprocess.run(  # noqa: S603 - our own CLI
        _cli("serve", "--port", "0", "--config", str(bad)),
        capture_output=True,
        text=True,
        env=env,
        timeout=20,
    )
    assert proc.returncode == 2 and "invalid configuration" in proc.stderr
    proc = subprocess.run(  # noqa: S603 - our own CLI
        _cli("connections", "--url", "http://localhost:9999"),
        capture_output=True,
        text=True,
        env=env,
        timeout=20,
    )
    assert proc.returncode == 0 and proc.stdout.count("export AIRFLOW_CONN_") == 3


def test_importing_the_package_is_cheap() -> None:
    code = (
        "import sys, airflow_provider_pipelines.sandbox as s; "
        "heavy = [m for m in ('starlette', 'uvicorn', 'airflow') if m in sys.modules]; "
        "assert not heavy, heavy; assert s.SandboxServer; print('ok')"
    )
    proc = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
