"""Shared test harness: an isolated Airflow home, the token cache reset, the sandbox, dags test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# An isolated Airflow home, configured before anything imports airflow.
_AIRFLOW_HOME = Path(
    os.environ.get("PIPELINES_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="pipelines-airflow-")
)
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(_AIRFLOW_HOME / "dags"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_DAGS = REPO / "example_dags"
AIRFLOW_BIN = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> Iterator[None]:
    """Each test starts with an empty process-wide token cache."""
    from airflow_provider_pipelines.hooks._auth import TOKEN_CACHE

    TOKEN_CACHE.clear()
    yield
    TOKEN_CACHE.clear()


@pytest.fixture
def conn_env(monkeypatch: pytest.MonkeyPatch):
    """Set an Airflow connection through ``AIRFLOW_CONN_<ID>`` (JSON form)."""

    def _set(conn_id: str, **fields: Any) -> None:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))

    return _set


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """An initialised metadata DB (SQLite) in the isolated Airflow home."""
    marker = _AIRFLOW_HOME / ".db-ready"
    if not marker.exists():
        subprocess.run(  # noqa: S603 - the venv's own airflow CLI
            [AIRFLOW_BIN, "db", "migrate"], check=True, capture_output=True, env=os.environ.copy()
        )
        marker.write_text("ok")
    return _AIRFLOW_HOME


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh sandbox server with the three default connections pointing at it."""
    from airflow_provider_pipelines.sandbox import SandboxServer

    with SandboxServer(port=0) as sb:
        for name, value in sb.connections().items():
            monkeypatch.setenv(name, value)
        yield sb


def run_dags_test(
    dag_file: Path | str,
    dag_id: str,
    *,
    env: dict[str, str] | None = None,
    logical_date: str | None = None,
    conf: dict[str, Any] | None = None,
    timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``airflow dags test`` CLI on one DAG file; returns the completed process."""
    cmd = [AIRFLOW_BIN, "dags", "test", dag_id]
    if logical_date:
        cmd.append(logical_date)
    cmd += ["--dagfile-path", str(dag_file)]
    if conf:
        cmd += ["--conf", json.dumps(conf)]
    # `dags test --dagfile-path` only accepts files inside the DAGs folder: use the file's folder
    dags_folder = str(Path(dag_file).resolve().parent)
    full_env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": dags_folder, **(env or {})}
    return subprocess.run(  # noqa: S603 - the venv's own airflow CLI
        cmd, capture_output=True, text=True, env=full_env, timeout=timeout, check=False
    )


@pytest.fixture
def dags_test(airflow_db: Path):
    """``dags_test(dag_file, dag_id, env=..., conf=...)`` -> CompletedProcess of ``airflow dags test``."""
    return run_dags_test
