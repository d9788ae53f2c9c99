"""The example DAGs, parsed, and run through the real ``airflow dags test`` CLI against the sandbox.

These are the DAGs the demo runs. Each outcome is checked against what the sandbox received
(its request log) and what Airflow recorded (the metadata DB), failure paths included.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLE_DAGS, run_dags_test

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DAG_IDS = {"cognite_contextualization", "cognite_quality_gates", "edge_impulse_pipeline",
           "here_pipeline_run_now"}
CDF = "/api/v1/projects/sandbox"
EM_START = f"{CDF}/context/entitymatching/pipelines/*/runs"
ESTIMATE_START = f"{CDF}/advancedjoins/estimatequality"
EXTPIPE_REPORT = f"{CDF}/extpipes/runs"
EI_START = "/v1/api/organizations/1/pipelines/*/run"
HERE_ACTIVATE = "/pipeline-service/v2/pipelines/*/versions/*/operations/activate"
HERE_FAILING = {"pipeline_id": "5f2b5b1e-0000-4000-8000-000000000002",
                "pipeline_version_id": "5f2b5b1e-0000-4000-8000-0000000000a2"}
#: a fixed logical date: its daily data interval is 2026-01-09 00:00 -> 2026-01-10 00:00 UTC
LOGICAL_DATE = "2026-01-10T06:00:00+00:00"
INTERVAL_END_MS = int(datetime(2026, 1, 10, tzinfo=timezone.utc).timestamp() * 1000)

Tis = dict[tuple[str, int], dict[str, Any]]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _quick_jobs(request: pytest.FixtureRequest) -> None:
    """Sandbox jobs of about a second: still running when the operators first look (so they defer)."""
    if "sandbox" not in request.fixturenames:
        return
    request.getfixturevalue("sandbox").configure({
        "cognite": {"entity_matching": {"default": {"queued": 0.3, "running": 0.7}},
                    "estimate_quality": {"default": {"queued": 0.3, "running": 0.7}}},
        "edge_impulse": {"default": {"waiting": 0.1, "created": 0.1, "transform": 0.3, "upload": 0.1}},
        "here": {"default": {"operation_accepted": 0.2, "operation_processing": 0.5, "job_starting": 0.2,
                             "job_running": 0.8}},
    })


def dags_test(dag_id: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {"AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS)}
    return run_dags_test(EXAMPLE_DAGS / f"{dag_id}.py", dag_id, env=env, **kwargs)


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def db_path() -> Path:
    from airflow.configuration import conf

    url = conf.get("database", "sql_alchemy_conn")
    assert url.startswith("sqlite:///"), url
    return Path(url[len("sqlite:///"):])


def _json(value: Any) -> Any:
    """A value of SQLite's JSON column (numbers come back as numbers)."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def query(sql: str, *args: Any) -> list[sqlite3.Row]:
    con = sqlite3.connect(f"file:{db_path()}?mode=ro", uri=True, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        return list(con.execute(sql, args))
    finally:
        con.close()


def latest_run(dag_id: str) -> tuple[dict[str, Any], Tis]:
    """The DAG's newest run, and per (task_id, map_index): state, rendered map index and XComs."""
    run = dict(query("SELECT * FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", dag_id)[0])
    tis: Tis = {}
    for row in query("SELECT task_id, map_index, rendered_map_index, state FROM task_instance "
                     "WHERE dag_id = ? AND run_id = ?", dag_id, run["run_id"]):
        tis[(row["task_id"], row["map_index"])] = {**dict(row), "xcom": {}}
    for row in query("SELECT task_id, map_index, key, value FROM xcom WHERE dag_id = ? AND run_id = ?",
                     dag_id, run["run_id"]):
        tis[(row["task_id"], row["map_index"])]["xcom"][row["key"]] = _json(row["value"])
    return run, tis


def reports(sandbox: Any) -> list[dict[str, Any]]:
    """The extraction pipeline runs the DAG reported (items of accepted ``POST /extpipes/runs``)."""
    return [e["body"]["items"][0] for e in sandbox.requests(method="POST", path=EXTPIPE_REPORT)
            if e["status"] == 201]


def mapped(tis: Tis, task_id: str) -> dict[str, dict[str, Any]]:
    return {v["rendered_map_index"]: v for k, v in tis.items() if k[0] == task_id}


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------
_PARSE = textwrap.dedent("""
    import json, sys

    def no_network(event, args):
        if event in ("socket.connect", "socket.getaddrinfo"):
            raise RuntimeError(f"network call at DAG parse time: {event} {args!r}")

    sys.addaudithook(no_network)
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.0
        from airflow.models.dagbag import DagBag

    bag = DagBag(sys.argv[1])
    dags = {d.dag_id: {"tasks": sorted(d.task_ids), "tags": sorted(d.tags),
                       "doc": bool(d.doc_md or d.description), "timetable": type(d.timetable).__name__}
            for d in bag.dags.values()}
    print(json.dumps({"errors": bag.import_errors, "dags": dags}))
""")


def test_example_dags_parse_without_errors_or_network(airflow_db: Path) -> None:
    # a fresh interpreter whose audit hook fails any socket use while the DAG files are imported
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS)}
    proc = subprocess.run([sys.executable, "-c", _PARSE, str(EXAMPLE_DAGS)],  # noqa: S603
                          capture_output=True, text=True, timeout=180, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == {}
    assert set(parsed["dags"]) == DAG_IDS
    cognite = parsed["dags"]["cognite_contextualization"]
    assert cognite["tasks"] == ["estimate_join_quality", "report_success", "run_entity_matching",
                                "wait_for_extractor"]
    assert cognite["timetable"] == "CronDataIntervalTimetable"  # real daily intervals, for backfills
    assert all(d["doc"] and "example" in d["tags"] for d in parsed["dags"].values())


# --------------------------------------------------------------------------------------------
# cognite_contextualization
# --------------------------------------------------------------------------------------------
def test_contextualization_succeeds_and_reports_its_interval(sandbox: Any, airflow_db: Path) -> None:
    proc = dags_test("cognite_contextualization", logical_date=LOGICAL_DATE)
    assert proc.returncode == 0, output(proc)[-4000:]

    run, tis = latest_run("cognite_contextualization")
    assert run["state"] == "success"
    assert {k[0]: v["state"] for k, v in tis.items()} == {
        "wait_for_extractor": "success", "run_entity_matching": "success",
        "estimate_join_quality": "success", "report_success": "success"}
    # one request per remote run, and the ids the tasks pushed are the ones the sandbox made
    assert [e["path"] for e in sandbox.requests(method="POST", path=EM_START)] == [
        f"{CDF}/context/entitymatching/pipelines/1/runs"]
    em = tis[("run_entity_matching", -1)]["xcom"]
    assert em["return_value"]["status"] == "Completed" and em["return_value"]["matches_count"] == 3
    assert em["job_id"] == em["return_value"]["job_id"]
    [estimate] = sandbox.requests(method="POST", path=ESTIMATE_START)
    assert estimate["body"]["advancedJoinExternalId"] == "sandbox.join.good"
    quality = tis[("estimate_join_quality", -1)]["xcom"]["return_value"]
    assert (quality["qualityScorePercent"], quality["confidencePercent"]) == (92.5, 88.0)
    # the sensor found the extractor's seeded success run; the report is dated at the interval end
    assert tis[("wait_for_extractor", -1)]["xcom"]["return_value"]["status"] == "success"
    [report] = reports(sandbox)
    assert (report["externalId"], report["status"]) == ("sandbox-contextualization", "success")
    assert report["createdTime"] == INTERVAL_END_MS
    assert f"entity matching job {em['job_id']}" in report["message"] and "quality 92.5%" in report["message"]
    assert output(proc).count("Pausing task as DEFERRED") == 2
    assert "sandbox-client-secret" not in output(proc)


def test_contextualization_failure_reports_the_vendor_message(sandbox: Any, airflow_db: Path) -> None:
    # pipeline 2 of the sandbox fails: the task fails with CDF's errorMessage, the failure callback
    # reports a failure run carrying it, and nothing after the failed task talks to CDF
    proc = dags_test("cognite_contextualization", logical_date=LOGICAL_DATE, conf={"em_pipeline_id": 2})
    assert proc.returncode == 1, output(proc)[-4000:]
    assert "DagRun failed" in output(proc)
    vendor_message = "Pipeline failed: source data set 404 contains no time series"
    assert vendor_message in output(proc)

    run, tis = latest_run("cognite_contextualization")
    assert run["state"] == "failed"
    assert tis[("run_entity_matching", -1)]["state"] == "failed"
    assert tis[("estimate_join_quality", -1)]["state"] == "upstream_failed"
    assert sandbox.requests(method="POST", path=ESTIMATE_START) == []
    [report] = reports(sandbox)
    assert (report["externalId"], report["status"]) == ("sandbox-contextualization", "failure")
    assert vendor_message in report["message"] and "run_entity_matching" in report["message"]
    assert report["createdTime"] == INTERVAL_END_MS


def test_contextualization_rejects_bad_params_before_any_request(sandbox: Any, airflow_db: Path) -> None:
    proc = dags_test("cognite_contextualization", logical_date=LOGICAL_DATE,
                     conf={"min_quality_score_percent": 150})
    assert proc.returncode != 0
    assert "min_quality_score_percent" in output(proc) and "150" in output(proc)
    assert sandbox.requests() == []


# --------------------------------------------------------------------------------------------
# cognite_quality_gates (dynamic task mapping)
# --------------------------------------------------------------------------------------------
def test_quality_gates_map_one_deferred_estimate_per_join(sandbox: Any, airflow_db: Path) -> None:
    proc = dags_test("cognite_quality_gates")
    assert proc.returncode == 0, output(proc)[-4000:]
    run, tis = latest_run("cognite_quality_gates")
    assert run["state"] == "success"
    estimates = mapped(tis, "estimate_quality")
    assert set(estimates) == {"sandbox.join.good", "sandbox.join.poor"}
    assert all(v["state"] == "success" for v in estimates.values())
    started = sorted(e["body"]["advancedJoinExternalId"]
                     for e in sandbox.requests(method="POST", path=ESTIMATE_START))
    assert started == ["sandbox.join.good", "sandbox.join.poor"]
    assert output(proc).count("Pausing task as DEFERRED") == 2
    rows = {r["advanced_join"]: r for r in tis[("quality_report", -1)]["xcom"]["return_value"]}
    assert rows["sandbox.join.poor"]["quality"] == 41.0 and rows["sandbox.join.good"]["quality"] == 92.5


def test_quality_gates_fail_only_the_join_under_its_minimum(sandbox: Any, airflow_db: Path) -> None:
    gates = [{"advanced_join_external_id": "sandbox.join.good", "min_quality_score_percent": 90},
             {"advanced_join_external_id": "sandbox.join.poor", "min_quality_score_percent": 90}]
    proc = dags_test("cognite_quality_gates", conf={"gates": gates})
    assert proc.returncode == 1
    _, tis = latest_run("cognite_quality_gates")
    states = {join: v["state"] for join, v in mapped(tis, "estimate_quality").items()}
    assert states == {"sandbox.join.good": "success", "sandbox.join.poor": "failed"}
    assert tis[("quality_report", -1)]["state"] == "upstream_failed"
    assert "Quality gate not met for advanced join 'sandbox.join.poor'" in output(proc)
    assert "qualityScorePercent 41 < minimum 90" in output(proc)


def test_quality_gates_reject_unknown_keys_before_any_request(sandbox: Any, airflow_db: Path) -> None:
    gates = [{"advanced_join_external_id": "sandbox.join.good", "min_quality": 50}]
    proc = dags_test("cognite_quality_gates", conf={"gates": gates})
    assert proc.returncode == 1
    assert "gates[0] has unknown key(s) ['min_quality']" in output(proc)
    assert sandbox.requests(method="POST") == []


# --------------------------------------------------------------------------------------------
# edge_impulse_pipeline
# --------------------------------------------------------------------------------------------
def test_edge_impulse_pipeline_runs_and_publishes_its_summary(sandbox: Any, airflow_db: Path) -> None:
    proc = dags_test("edge_impulse_pipeline")
    assert proc.returncode == 0, output(proc)[-4000:]
    run, tis = latest_run("edge_impulse_pipeline")
    assert run["state"] == "success"
    [start] = sandbox.requests(method="POST", path=EI_START)
    assert start["path"] == "/v1/api/organizations/1/pipelines/12/run"
    assert "Pausing task as DEFERRED" in output(proc)
    summary = tis[("publish_summary", -1)]["xcom"]["return_value"]
    assert summary["run_id"] == tis[("run_pipeline", -1)]["xcom"]["run_id"]
    assert summary["state"] == "finished" and summary["steps"] == summary["steps_finished"] >= 1
    assert summary["items_after"] > summary["items_before"]
    # the summary is published as an event of the asset (its extra is the summary)
    events = query("SELECT extra FROM asset_event WHERE source_dag_id = ? AND source_run_id = ?",
                   "edge_impulse_pipeline", run["run_id"])
    assert [_json(e["extra"]) for e in events] == [summary]
    # Edge Impulse returns project keys on steps: they reach neither XCom nor the log
    text = output(proc) + json.dumps([t["xcom"] for t in tis.values()])
    assert "ei_project_secret" not in text and "ei_sandbox_0123456789abcdef" not in text


# --------------------------------------------------------------------------------------------
# here_pipeline_run_now
# --------------------------------------------------------------------------------------------
def test_here_run_now_uses_the_catalog_versions_from_params(sandbox: Any, airflow_db: Path) -> None:
    catalogs = {"weather": {"processingType": "reprocess", "version": 314}}
    proc = dags_test("here_pipeline_run_now",
                     conf={"input_catalogs": catalogs, "output_catalog": {"baseVersion": 7}})
    assert proc.returncode == 0, output(proc)[-4000:]
    run, tis = latest_run("here_pipeline_run_now")
    assert run["state"] == "success"
    [activate] = sandbox.requests(method="POST", path=HERE_ACTIVATE)
    assert activate["body"] == {"inputCatalogs": catalogs, "outputCatalog": {"baseVersion": 7}}
    result = tis[("run_now", -1)]["xcom"]["return_value"]
    assert result["run_now"] is True and result["job"]["state"] == "completed"
    assert "sandbox-access-key-secret" not in output(proc)


def test_here_run_now_without_output_catalog_and_failing_job(sandbox: Any, airflow_db: Path) -> None:
    proc = dags_test("here_pipeline_run_now", conf=HERE_FAILING)
    assert proc.returncode == 1
    _, tis = latest_run("here_pipeline_run_now")
    assert tis[("run_now", -1)]["state"] == "failed"
    [activate] = sandbox.requests(method="POST", path=HERE_ACTIVATE)
    assert HERE_FAILING["pipeline_version_id"] in activate["path"]
    # no output catalog param: the request carries only the default input catalog versions
    assert activate["body"] == {"inputCatalogs": {"weather": {"processingType": "changes", "version": 75,
                                                              "sinceVersion": 70}}}
