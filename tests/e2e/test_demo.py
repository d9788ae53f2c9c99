"""The one-command demo (``scripts/demo.py``): its sandbox subprocess, summary and exit code.

The full demo (every example DAG) is the README's main command; here it runs one DAG with a
sandbox configured to fail that DAG's entity matching job, to check what a failure looks like:
exit code 1, the failed task and the vendor's message in the summary, the sandbox stopped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

FAILURE = "Entity matching failed: demo of a failing remote job"


def test_demo_reports_a_failing_dag_and_exits_non_zero(tmp_path: Path) -> None:
    config = tmp_path / "sandbox.json"
    config.write_text(json.dumps({"cognite": {"entity_matching": {"pipelines": {
        "sandbox.em.assets": {"outcome": "failure", "error_message": FAILURE}}}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(PIPELINES_DEMO_PYTHON=sys.executable, PIPELINES_DEMO_DIR=str(tmp_path / "demo"))
    proc = subprocess.run(  # noqa: S603
        [sys.executable, str(REPO / "scripts" / "demo.py"), "cognite_contextualization",
         "--sandbox-config", str(config)],
        capture_output=True, text=True, timeout=220, check=False, env=env, cwd=tmp_path)
    out = proc.stdout + proc.stderr

    assert proc.returncode == 1, out[-5000:]
    assert "[1/1] cognite_contextualization: airflow dags test ... FAILED" in out
    assert re.search(r"cognite_contextualization: FAILED in [\d.]+ s", out)
    assert re.search(r"wait_for_extractor\s+success", out) and re.search(r"run_entity_matching\s+failed", out)
    assert re.search(r"report_success\s+upstream_failed", out)
    assert FAILURE in out  # the tail of the DAG's log in the summary carries the vendor's message
    assert "0/1 DAG runs succeeded" in out
    # its own Airflow home and logs, and the sandbox it started is gone
    logs = tmp_path / "demo" / "logs"
    assert (logs / "cognite_contextualization.log").is_file()
    assert (tmp_path / "demo" / "airflow" / "airflow.db").is_file()
    sandbox_log = (logs / "sandbox.log").read_text()
    url = re.search(r"pipelines-sandbox ready at (\S+)", sandbox_log)
    assert url is not None
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url.group(1)}/_sandbox/health", timeout=5)
