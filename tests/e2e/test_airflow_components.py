"""The example DAGs on real Airflow components: api-server, scheduler, dag-processor, triggerer.

LocalExecutor with a SQLite metadata DB (what ``airflow standalone`` uses in Airflow 3), and
the sandbox as a subprocess. In order, against one running stack:

1. every example DAG, triggered through the REST API: deferred tasks are handed to the
   triggerer (state ``deferred`` seen, their triggers assigned to the live triggerer job) and
   every run succeeds, with one start request per task;
2. the triggerer is SIGKILLed while tasks are deferred and a new one started: the runs still
   succeed, the new triggerer took the triggers over, and the sandbox saw exactly one start
   request per task (no duplicate remote runs);
3. a three-day backfill of ``cognite_contextualization``: three successful runs and three
   extraction-run reports, each dated at the end of its own day;
4. a remote job made to fail (sandbox control API): the task fails with the vendor's message in
   its log and the failure report reaches the sandbox.

The module stops itself within its budget (every wait is bounded by one deadline) and kills
every process group it started.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import AirflowStack, Watch

#: The whole module, stack start-up included, must finish within this many seconds.
BUDGET = 480
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(BUDGET)]

TRIGGERS = "airflow_provider_pipelines.triggers."
CDF = "/api/v1/projects/sandbox"
EM_START = f"{CDF}/context/entitymatching/pipelines/*/runs"
ESTIMATE_START = f"{CDF}/advancedjoins/estimatequality"
EXTPIPE_REPORT = f"{CDF}/extpipes/runs"
EI_START = "/v1/api/organizations/*/pipelines/*/run"
HERE_ACTIVATE = "/pipeline-service/v2/pipelines/*/versions/*/operations/activate"
DAGS = ("cognite_contextualization", "edge_impulse_pipeline", "here_pipeline_run_now",
        "cognite_quality_gates")
#: The tasks that start a remote job and defer, per DAG: (task_id, map_index).
DEFERRING = {
    "cognite_contextualization": [("run_entity_matching", -1), ("estimate_join_quality", -1)],
    "edge_impulse_pipeline": [("run_pipeline", -1)],
    "here_pipeline_run_now": [("run_now", -1)],
    "cognite_quality_gates": [("estimate_quality", 0), ("estimate_quality", 1)],
}


def durations(job: float) -> dict[str, Any]:
    """Sandbox job durations of about ``job`` seconds for every remote job the DAGs start.

    Not shorter than ~10 s: in Airflow 3.3.2 a trigger that fires within seconds of the deferral
    can race the executor's late report of the deferring process, and the scheduler then fails
    the task ("finished with state success, but the task instance's state attribute is queued",
    apache/airflow#67287, #71580, #72716). Real remote jobs take minutes.
    """
    step = job / 2 - 1.5  # Edge Impulse: two steps of waiting + created + transform + upload
    return {
        "cognite": {"entity_matching": {"default": {"queued": 1.0, "running": job - 1}},
                    "estimate_quality": {"default": {"queued": 1.0, "running": job - 1}}},
        "edge_impulse": {"default": {"waiting": 0.5, "created": 0.5, "transform": step, "upload": 0.5}},
        "here": {"default": {"operation_accepted": 1.0, "operation_processing": job - 1, "job_starting": 1.0,
                             "job_running": job - 1}},
    }


QUICK = durations(10.0)
#: long enough that every first deferral is still waiting when the triggerer is killed
SLOW = durations(20.0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    airflow = AirflowStack(Path(tmp_path_factory.mktemp("e2e-airflow")), budget=BUDGET - 20)
    try:
        airflow.start(QUICK)
        airflow.unpause(*DAGS)
        yield airflow
    finally:
        airflow.stop()


def day(days_ago: int, hour: int = 0) -> datetime:
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago) + timedelta(hours=hour)


def ms(value: str | datetime) -> int:
    when = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    return int(when.timestamp() * 1000)


def trigger_all(stack: AirflowStack, days_ago: int) -> dict[str, str]:
    """One run of every example DAG; the daily DAG gets a logical date (so it has a data interval)."""
    runs = {}
    for dag_id in DAGS:
        logical = day(days_ago, hour=6).isoformat() if dag_id == "cognite_contextualization" else None
        runs[dag_id] = stack.trigger(dag_id, logical_date=logical)
    return runs


def reports(stack: AirflowStack, status: str) -> list[dict[str, Any]]:
    """The extraction pipeline runs reported to the sandbox (accepted ``POST /extpipes/runs`` items)."""
    accepted = [e for e in stack.sandbox_requests("POST", EXTPIPE_REPORT) if e["status"] == 201]
    items = [e["body"]["items"][0] for e in accepted]
    return [item for item in items if item["status"] == status]


def start_counts(stack: AirflowStack) -> dict[str, int]:
    return {name: len(stack.sandbox_requests("POST", path)) for name, path in (
        ("entity_matching", EM_START), ("estimate_quality", ESTIMATE_START), ("edge_impulse", EI_START),
        ("here", HERE_ACTIVATE))}


def assert_all_succeeded(stack: AirflowStack, watch: Watch) -> None:
    failed = {key: run["state"] for key, run in watch.run_states.items() if run["state"] != "success"}
    details = {f"{d}.{t}[{m}]": v.states for (d, _, t, m), v in watch.tis.items()
               if v.final.get("state") != "success"}
    assert not failed, f"runs not successful: {failed}; task states: {details}\n{stack.log_tails()}"


def assert_deferred_to_triggerer(stack: AirflowStack, watch: Watch, dag_id: str, task_id: str, map_index: int,
                                 triggerer_jobs: set[int]) -> None:
    view = watch.ti(dag_id, task_id, map_index)
    assert view.saw("deferred"), f"{dag_id}.{task_id}[{map_index}] was never seen deferred: {view.states}"
    assert view.triggers and all(c.startswith(TRIGGERS) for c in view.triggers.values()), view.triggers
    assigned = {job for trigger_id in view.triggers for job in watch.assigned.get(trigger_id, [])}
    assert assigned & triggerer_jobs, (f"{dag_id}.{task_id}: its triggers {view.triggers} were never "
                                       f"assigned to a triggerer job {triggerer_jobs} (saw {assigned})")


# --------------------------------------------------------------------------------------------
def test_example_dags_defer_to_the_triggerer_and_succeed(stack: AirflowStack) -> None:
    stack.sandbox("POST", "reset", {"config": QUICK})
    triggerers = set(stack.alive_triggerer_jobs())
    runs = trigger_all(stack, days_ago=40)
    watch = stack.watch_runs(runs.items(), timeout=200)

    assert_all_succeeded(stack, watch)
    for dag_id, tasks in DEFERRING.items():
        for task_id, map_index in tasks:
            assert_deferred_to_triggerer(stack, watch, dag_id, task_id, map_index, triggerers)
    # one remote run per task: entity matching 1, estimate quality 1 + 2 mapped, EI 1, HERE 1
    assert start_counts(stack) == {"entity_matching": 1, "estimate_quality": 3, "edge_impulse": 1, "here": 1}
    cognite_run = runs["cognite_contextualization"]
    quality = stack.xcom("cognite_contextualization", cognite_run, "estimate_join_quality")
    assert quality["qualityScorePercent"] == 92.5
    summary = stack.xcom("edge_impulse_pipeline", runs["edge_impulse_pipeline"], "publish_summary")
    assert summary["state"] == "finished" and summary["steps"] == summary["steps_finished"]
    [success] = reports(stack, "success")
    assert success["createdTime"] == ms(day(40))  # the end of the run's data interval


def test_triggerer_killed_while_tasks_are_deferred(stack: AirflowStack) -> None:
    stack.sandbox("POST", "reset", {"config": SLOW})
    runs = trigger_all(stack, days_ago=30)
    first_deferrals = [(dag_id, tasks[0]) for dag_id, tasks in DEFERRING.items()]
    first_deferrals.append(("cognite_quality_gates", DEFERRING["cognite_quality_gates"][1]))
    killed: dict[str, Any] = {}
    running_triggerers = set(stack.alive_triggerer_jobs())

    def kill_when_all_deferred(watch: Watch) -> None:
        """Kill the triggerer once every first deferral's trigger runs in it."""
        if killed:
            return
        views = [watch.tis.get((d, runs[d], t, m)) for d, (t, m) in first_deferrals]
        if not all(v is not None and v.final.get("state") == "deferred" and v.triggers for v in views):
            return
        triggers = {tid for v in views if v is not None for tid in v.triggers}
        if not all(set(watch.assigned.get(tid, [])[-1:]) & running_triggerers for tid in triggers):
            return
        killed["jobs"], killed["triggers"] = running_triggerers, triggers
        stack.kill_triggerer()
        killed["at"] = time.time()
        stack.start_triggerer()

    watch = stack.watch_runs(runs.items(), timeout=300, on_poll=kill_when_all_deferred)

    assert killed, "the tasks never were all deferred at once, so the triggerer was not killed"
    assert_all_succeeded(stack, watch)
    # the new triggerer took over every trigger the killed one was running
    for trigger_id in killed["triggers"]:
        history = watch.assigned.get(trigger_id, [])
        assert len(history) >= 2 and history[0] in killed["jobs"] and history[-1] not in killed["jobs"], (
            f"trigger {trigger_id} was not taken over by a new triggerer: {history} "
            f"(killed {killed['jobs']})")
    # ...and went on polling the remote jobs (nothing else polls a deferred task's job)
    polls_after = [e for e in stack.sandbox_requests("GET") if e["wall_time"] > killed["at"]]
    for fragment in ("/context/entitymatching/pipelines/1/runs/", "/advancedjoins/estimatequality/",
                     "/v1/api/organizations/1/pipelines/12", "/pipeline-service/v2/pipelines/"):
        assert any(fragment in e["path"] for e in polls_after), f"no poll of {fragment} after the kill"
    # no duplicate remote runs: exactly one start request per task
    assert start_counts(stack) == {"entity_matching": 1, "estimate_quality": 3, "edge_impulse": 1, "here": 1}
    assert len(reports(stack, "success")) == 1


def test_backfill_of_three_days_reports_each_day(stack: AirflowStack) -> None:
    stack.sandbox("POST", "reset", {"config": QUICK})
    stack.backfill("cognite_contextualization", day(12).isoformat(), day(10).isoformat())
    backfill_runs = stack.wait_for(lambda: (r := stack.backfill_runs("cognite_contextualization"))
                                   and len(r) == 3 and r, "the backfill's three runs", timeout=60)
    watch = stack.watch_runs([("cognite_contextualization", r["dag_run_id"]) for r in backfill_runs],
                             timeout=200)

    assert_all_succeeded(stack, watch)
    runs = [watch.run_states[("cognite_contextualization", r["dag_run_id"])] for r in backfill_runs]
    days = sorted(r["data_interval_start"][:10] for r in runs)
    assert days == [day(n).date().isoformat() for n in (12, 11, 10)]
    # each run reported its own day: createdTime = the end of its data interval
    assert sorted(r["createdTime"] for r in reports(stack, "success")) == sorted(
        ms(r["data_interval_end"]) for r in runs)
    assert sorted(ms(r["data_interval_end"]) for r in runs) == [ms(day(n)) for n in (11, 10, 9)]
    assert start_counts(stack)["entity_matching"] == 3


def test_failed_remote_job_fails_the_task_and_reports_the_failure(stack: AirflowStack) -> None:
    message = "E2E: entity matching failed on purpose (no target assets in data set 9000)"
    stack.sandbox("POST", "reset", {"config": QUICK})
    stack.sandbox("POST", "config", {"cognite": {"entity_matching": {"pipelines": {
        "sandbox.em.assets": {"outcome": "failure", "error_message": message}}}}})
    run_id = stack.trigger("cognite_contextualization", logical_date=day(20, hour=6).isoformat())
    watch = stack.watch_runs([("cognite_contextualization", run_id)], timeout=150)

    assert watch.run_states[("cognite_contextualization", run_id)]["state"] == "failed"
    states = {t: watch.ti("cognite_contextualization", t).final["state"] for t in
              ("wait_for_extractor", "run_entity_matching", "estimate_join_quality", "report_success")}
    assert states == {"wait_for_extractor": "success", "run_entity_matching": "failed",
                      "estimate_join_quality": "upstream_failed", "report_success": "upstream_failed"}
    assert watch.ti("cognite_contextualization", "run_entity_matching").saw("deferred")
    log = stack.task_log("cognite_contextualization", run_id, "run_entity_matching")
    assert message in log and "JobFailedError" in log
    # the failure callback's report reached the sandbox, with the vendor's message and the run's day
    [failure] = reports(stack, "failure")
    assert failure["externalId"] == "sandbox-contextualization" and message in failure["message"]
    assert failure["createdTime"] == ms(day(20))
    assert reports(stack, "success") == [] and stack.sandbox_requests("POST", ESTIMATE_START) == []
