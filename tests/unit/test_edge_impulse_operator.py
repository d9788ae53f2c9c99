"""EdgeImpulseRunPipelineOperator and EdgeImpulsePipelineRunSensor against a stateful fake Studio.

The fake follows the inferred Edge Impulse behaviour (edge-impulse.md A.2): a started run shows as
``currentRun`` until it ends, then becomes ``lastRun`` with ``finished`` set; ``stop`` ends the
current run with a failed step; a second ``run`` while one is in progress is refused with
``success: false`` (unconfirmed: edge-impulse.md A.1 says it could also be a 4xx).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from airflow_provider_pipelines._compat import AIRFLOW_V_3_3_PLUS, AirflowException, TaskDeferred
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.jobs.base import JobFailedError, JobTimeoutError
from airflow_provider_pipelines.operators.edge_impulse import EdgeImpulseRunPipelineOperator
from airflow_provider_pipelines.sensors.edge_impulse import EdgeImpulsePipelineRunSensor
from airflow_provider_pipelines.triggers.edge_impulse import EdgeImpulsePipelineRunTrigger

API_KEY = "ei_operator_test_key_0123456789"
PROJECT_KEY = "ei_project_key_SECRET_9f8e7d6c5b"
PROJECT_HMAC = "hmac_SECRET_0a1b2c3d4e5f"
SECRETS = (API_KEY, PROJECT_KEY, PROJECT_HMAC)
STUDIO = "https://studio.example.com"
BASE = f"{STUDIO}/v1/api/organizations/1/pipelines/12"


#: Tests of the Airflow 3.3 task state store; older releases adopt the vendor's active run
#: instead (that side: tests/unit/test_version_compat.py).
state_store_only = pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS,
                                      reason="the task state store exists from Airflow 3.3")


def _step(name: str, status: str, transform: str, upload: str, succeeded: int = 10) -> dict[str, Any]:
    return {"name": name, "uploadType": "project", "category": "split", "projectId": 501,
            "projectApiKey": PROJECT_KEY, "projectHmacKey": PROJECT_HMAC,
            "transformationJob": {"id": 77, "status": status, "transformJobStatus": transform,
                                  "uploadJobStatus": upload, "inProgress": status == "started",
                                  "transformationSummary": {"startedCount": 10, "succeededCount": succeeded,
                                                            "finishedCount": 10, "totalFileCount": 10}}}


class FakeStudioState:
    """One Edge Impulse pipeline: answers GET pipeline / POST run / POST stop as ``(status, body)``."""

    def __init__(self) -> None:
        self.current: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None
        self.start_error: str | None = None
        self.next_id = 1234
        #: GETs that see the current run before it ends (None: never ends by itself)
        self.finish_after: int | None = 1
        self.outcome = "success"  # "success" | "failure" | "import_errors"
        self.refuse_run: str | None = None
        self.calls: list[str] = []
        self._seen = 0
        self.lock = threading.Lock()

    def start_foreign_run(self, run_id: int = 555) -> None:
        self.current = self._new_run(run_id)

    def _new_run(self, run_id: int) -> dict[str, Any]:
        return {"id": run_id, "created": "2025-02-21T18:00:00Z", "finished": None,
                "steps": [_step("Import into project", "started", "started", "waiting")],
                "itemCountBefore": {"itemCount": 100, "itemCountChecklistOK": 98,
                                    "itemCountChecklistFailed": 2},
                "itemCountAfter": None, "itemCountImportIntoProjectFailed": None}

    def _finish(self, failed: bool = False) -> None:
        assert self.current is not None
        run = dict(self.current)
        if failed or self.outcome == "failure":
            run["steps"] = [_step("Import into project", "failed", "failed", "waiting", succeeded=7)]
            run["itemCountImportIntoProjectFailed"] = 0
        else:
            run["steps"] = [_step("Import into project", "finished", "finished", "finished")]
            run["itemCountImportIntoProjectFailed"] = 3 if self.outcome == "import_errors" else 0
        run["finished"] = "2025-02-21T18:30:00Z"
        run["itemCountAfter"] = {"itemCount": 110, "itemCountChecklistOK": 108, "itemCountChecklistFailed": 2}
        self.last, self.current, self._seen = run, None, 0

    def get(self) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append("GET")
            body = {"success": True, "pipeline": {
                "id": 12, "name": "nightly", "steps": [], "currentRun": self.current, "lastRun": self.last,
                "lastRunStartError": self.start_error, "emailRecipientUids": []}}
            text = json.loads(json.dumps(body))
            if self.current is not None and self.finish_after is not None:
                self._seen += 1
                if self._seen > self.finish_after:
                    self._finish()
                    text = self.get_body()
            return 200, text

    def get_body(self) -> dict[str, Any]:
        return {"success": True, "pipeline": {"id": 12, "currentRun": self.current, "lastRun": self.last,
                                              "lastRunStartError": self.start_error}}

    def run(self) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append("RUN")
            if self.refuse_run:
                return 200, {"success": False, "error": self.refuse_run}
            if self.current is not None:
                message = f"Pipeline 12 is already running (run {self.current['id']})"
                return 200, {"success": False, "error": message}
            run = self._new_run(self.next_id)
            self.next_id += 1
            if self.start_error:
                return 200, {"success": True, "pipelineRun": run}
            self.current = run
            return 200, {"success": True, "error": None, "pipelineRun": run}

    def stop(self) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append("STOP")
            if self.current is None:
                return 200, {"success": False, "error": "Pipeline 12 has no run in progress"}
            self._finish(failed=True)
            return 200, {"success": True}


@pytest.fixture
def studio(conn_env, requests_mock) -> FakeStudioState:
    conn_env("edge_impulse_default", conn_type="edge_impulse", host=STUDIO, password=API_KEY,
             extra={"backoff_base": 0.001, "backoff_max": 0.001})
    state = FakeStudioState()

    def responder(fn):
        def callback(request, context):
            status, body = fn()
            context.status_code = status
            return body
        return callback

    requests_mock.get(BASE, json=responder(state.get))
    requests_mock.post(f"{BASE}/run", json=responder(state.run))
    requests_mock.post(f"{BASE}/stop", json=responder(state.stop))
    return state


class FakeTI:
    def __init__(self, studio: FakeStudioState) -> None:
        self.studio = studio
        self.xcom: dict[str, Any] = {}
        self.pushed_after: dict[str, list[str]] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value
        self.pushed_after[key] = list(self.studio.calls)


class FakeStateStore:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.data.get(key, default)))

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self.data[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


@pytest.fixture
def context(studio) -> dict[str, Any]:
    return {"ti": FakeTI(studio), "task_state_store": FakeStateStore()}


def make_op(**kwargs: Any) -> EdgeImpulseRunPipelineOperator:
    params: dict[str, Any] = {"task_id": "run_pipeline", "organization_id": 1, "pipeline_id": 12,
                              "poll_interval": 0.01, "deferrable": False}
    params.update(kwargs)
    return EdgeImpulseRunPipelineOperator(**params)


@pytest.fixture
def logs(caplog, capfd):
    """Everything logged (stdlib records and Airflow's structlog output on the terminal streams)."""
    caplog.set_level("DEBUG")

    def _text() -> str:
        out, err = capfd.readouterr()
        return caplog.text + out + err

    return _text


def assert_no_secrets(*texts: Any) -> None:
    for text in texts:
        dumped = text if isinstance(text, str) else json.dumps(text, default=str)
        for secret in SECRETS:
            assert secret not in dumped


# ---- construction-time validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"organization_id": "acme"}, "organization_id must be a positive integer id"),
        ({"organization_id": 0}, "organization_id must be between 1"),
        ({"pipeline_id": None}, "pipeline_id must be a positive integer id"),
        ({"pipeline_id": 12.5}, "pipeline_id must be a positive integer id"),
        ({"pipeline_id": True}, "pipeline_id must be a positive integer id"),
        ({"if_running": "queue"}, "if_running must be one of 'wait', 'fail', 'start_new'"),
        ({"poll_interval": 0}, "poll_interval must be a positive"),
        ({"poll_interval": -5}, "poll_interval must be a positive"),
        ({"max_poll_interval": 0}, "max_poll_interval must be a positive"),
        ({"timeout": -1}, "timeout must be a positive"),
        ({"ignore_last_successful_run": "maybe"}, "ignore_last_successful_run must be True or False"),
        ({"fail_on_import_errors": "no"}, "fail_on_import_errors must be True or False"),
        ({"cancel_on_kill": 1}, "cancel_on_kill must be True or False"),
        ({"deferrable": "yes"}, "deferrable must be True or False"),
    ],
)
def test_bad_arguments_fail_at_construction(studio, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_op(**kwargs)
    assert studio.calls == []


def test_templated_ids_are_checked_after_rendering_before_any_request(studio, context, requests_mock):
    op = make_op(organization_id="{{ params.org }}", pipeline_id="{{ params.pipeline }}")
    op.organization_id, op.pipeline_id = "1", "twelve"  # what rendering produced
    with pytest.raises(ValueError, match="pipeline_id must be a positive integer id, got 'twelve'"):
        op.execute(context)
    assert requests_mock.call_count == 0


def test_rendered_ignore_flag(studio, context, requests_mock):
    op = make_op(ignore_last_successful_run="{{ params.full }}")
    op.ignore_last_successful_run = "true"
    op.execute(context)
    run_request = next(r for r in requests_mock.request_history if r.method == "POST")
    assert run_request.qs == {"ignorelastsuccessfulrun": ["true"]}


# ---- success and failures (worker mode) -------------------------------------------------------------


def test_success_pushes_xcom_before_waiting_and_returns_summary(studio, context, logs):
    result = make_op().execute(context)
    ti = context["ti"]

    assert studio.calls[:2] == ["GET", "RUN"]
    assert ti.xcom["run_id"] == 1234
    assert ti.xcom["pipeline_url"] == f"{STUDIO}/organization/1/pipelines"
    assert ti.pushed_after["run_id"] == ["GET", "RUN"]  # before any status poll
    assert result["run_id"] == 1234 and result["state"] == "finished"
    assert result["created"] == "2025-02-21T18:00:00Z" and result["finished"] == "2025-02-21T18:30:00Z"
    assert result["item_count_before"]["itemCount"] == 100 and result["item_count_after"]["itemCount"] == 110
    assert result["steps"][0]["name"] == "Import into project"
    assert result["steps"][0]["upload_job_status"] == "finished"
    text = logs()
    assert "Started Edge Impulse pipeline 12 (organization 1): run 1234." in text  # the scan sees the logs
    assert_no_secrets(text, result, ti.xcom)
    assert context["task_state_store"].data == {}  # forgotten once the run is over


def test_failed_step_fails_the_task_with_reasons(studio, context, logs):
    studio.outcome = "failure"
    with pytest.raises(JobFailedError) as info:
        make_op().execute(context)
    message = str(info.value)
    assert message.startswith("Edge Impulse pipeline 12 run 1234 (organization 1) failed: ")
    assert "step 1 'Import into project' failed (status=failed, transformJobStatus=failed)" in message
    assert "3 of 10 files failed" in message
    assert context["ti"].xcom["run_id"] == 1234  # pushed although the task failed
    assert_no_secrets(logs(), message)


def test_import_errors_fail_by_default_and_warn_when_disabled(studio, context, logs):
    studio.outcome = "import_errors"
    with pytest.raises(JobFailedError, match=r"3 data item\(s\) failed to import into the project"):
        make_op().execute(context)
    studio.outcome, studio.current = "import_errors", None
    result = make_op(fail_on_import_errors=False).execute(context)
    assert result["warnings"] == ["3 data item(s) failed to import into the project "
                                  "(itemCountImportIntoProjectFailed)"]
    assert "failed to import into the project" in logs()


def test_start_error_fails_the_task(studio, context):
    """Inferred: POST run answers success:true, the run never appears, lastRunStartError says why."""
    studio.start_error = "Failed to start pipeline: transformation block 57 has been deleted"
    with pytest.raises(JobFailedError, match="start_failed: the run could not start: Failed to start"):
        make_op().execute(context)


def test_success_false_on_start_fails_with_the_vendor_message(studio, context):
    studio.refuse_run = "Your organization has exceeded its compute time limit"
    with pytest.raises(ApiError) as info:
        make_op().execute(context)
    assert info.value.status == 200
    assert ("run organizational pipeline (organization 1 pipeline 12) failed: HTTP 200: Your organization "
            "has exceeded its compute time limit") in str(info.value)
    assert studio.calls == ["GET", "RUN", "GET"]  # re-read to look for a run to adopt; none, so no polling


def test_wait_for_completion_false_returns_after_start(studio, context):
    result = make_op(wait_for_completion=False).execute(context)
    assert result["run_id"] == 1234 and result["state"] == "started"
    assert studio.calls == ["GET", "RUN"]
    assert_no_secrets(result)


@state_store_only
def test_timeout_leaves_the_run_running_by_default(studio, context):
    studio.finish_after = None
    with pytest.raises(JobTimeoutError) as info:
        make_op(timeout=0.3).execute(context)
    assert "The remote job was left running." in str(info.value)
    assert "EdgeImpulsePipelineRunSensor(organization_id=1, pipeline_id=12, run_id=1234)" in str(info.value)
    assert "STOP" not in studio.calls
    # still remembered, so a retry reattaches instead of starting another run
    assert context["task_state_store"].data["edge_impulse_pipeline_run"]["run_id"] == 1234


def test_timeout_with_cancel_on_timeout_stops_our_run(studio, context):
    studio.finish_after = None
    with pytest.raises(JobTimeoutError, match=r"The run was stopped \(cancel_on_timeout=True\)"):
        make_op(timeout=0.3, cancel_on_timeout=True).execute(context)
    assert studio.calls[-1] == "STOP"


# ---- reattach -----------------------------------------------------------------------------------------


def test_if_running_wait_adopts_the_current_run(studio, context, logs):
    studio.start_foreign_run(555)
    result = make_op().execute(context)
    assert "RUN" not in studio.calls
    assert result["run_id"] == 555 and context["ti"].xcom["run_id"] == 555
    assert "already has run 555 in progress; adopting it" in logs()


def test_if_running_fail_fails_before_starting(studio, context):
    studio.start_foreign_run(555)
    with pytest.raises(AirflowException, match="already has run 555 in progress and if_running='fail'"):
        make_op(if_running="fail").execute(context)
    assert studio.calls == ["GET"]


def test_if_running_start_new_asks_for_a_new_run(studio, context):
    """Unconfirmed: what Edge Impulse does then; the fake (like the sandbox) refuses with success:false."""
    studio.start_foreign_run(555)
    with pytest.raises(ApiError, match="Pipeline 12 is already running"):
        make_op(if_running="start_new").execute(context)
    assert studio.calls == ["GET", "RUN"]  # no adoption in start_new mode


def test_if_running_start_new_starts_when_allowed(studio, context, requests_mock):
    """If Edge Impulse accepts a second run, start_new waits for the new one."""
    studio.start_foreign_run(555)
    requests_mock.post(f"{BASE}/run", json={"success": True, "pipelineRun": {"id": 600, "steps": []}})
    requests_mock.get(BASE, [
        {"json": {"success": True, "pipeline": {"id": 12, "currentRun": studio.current}}},
        {"json": {"success": True, "pipeline": {"id": 12, "currentRun": None,
                                                "lastRun": {"id": 600, "steps": [],
                                                            "finished": "2025-01-01"}}}},
    ])
    assert make_op(if_running="start_new").execute(context)["run_id"] == 600


def test_refused_start_race_adopts_the_run_that_won(studio, context, requests_mock):
    """A run that appeared between our check and our start (success:false 'already running') is adopted."""
    foreign = studio._new_run(777)
    requests_mock.get(BASE, [
        {"json": {"success": True, "pipeline": {"id": 12, "currentRun": None}}},
        {"json": {"success": True, "pipeline": {"id": 12, "currentRun": foreign}}},
        {"json": {"success": True, "pipeline": {"id": 12, "currentRun": None,
                                                "lastRun": {**foreign, "finished": "2025-01-01"}}}},
    ])
    requests_mock.post(f"{BASE}/run", json={"success": False, "error": "Pipeline 12 is already running"})
    op = make_op()
    assert op.execute(context)["run_id"] == 777
    assert op._started_by_us is False


def test_ambiguous_start_adopts_instead_of_starting_twice(studio, context, requests_mock):
    """A start that timed out may have worked: the run that appeared is adopted, never a second POST."""
    requests_mock.post(f"{BASE}/run", status_code=504, text="gateway timeout")
    requests_mock.get(BASE, [
        {"json": {"success": True, "pipeline": {"id": 12, "currentRun": None}}},
        {"json": {"success": True, "pipeline": {"id": 12, "currentRun": studio._new_run(901)}}},
        {"json": {"success": True, "pipeline": {"id": 12,
                                                "lastRun": {"id": 901, "steps": [], "finished": "x"}}}},
    ])
    assert make_op().execute(context)["run_id"] == 901
    assert sum(1 for r in requests_mock.request_history if r.method == "POST") == 1


@state_store_only
@pytest.mark.parametrize("if_running", ["wait", "fail", "start_new"])
def test_retry_reattaches_to_its_own_run_in_every_mode(studio, context, if_running):
    """Airflow 3.3+ task state store: the earlier try's run is adopted, never duplicated."""
    first = make_op(if_running=if_running, wait_for_completion=False)
    first.execute(context)
    assert studio.calls == ["GET", "RUN"]

    retry = make_op(if_running=if_running)
    result = retry.execute(context)
    assert studio.calls.count("RUN") == 1
    assert result["run_id"] == 1234
    assert retry._started_by_us is True  # still ours: a kill may stop it


@state_store_only
def test_retry_after_our_run_succeeded_returns_its_result(studio, context):
    make_op(wait_for_completion=False).execute(context)
    studio._finish()
    result = make_op().execute(context)
    assert result["run_id"] == 1234 and result["state"] == "finished"
    assert studio.calls.count("RUN") == 1


def test_retry_after_our_run_failed_starts_a_new_run(studio, context):
    studio.outcome = "failure"
    make_op(wait_for_completion=False).execute(context)
    studio._finish()
    studio.outcome = "success"
    result = make_op().execute(context)
    assert studio.calls.count("RUN") == 2
    assert result["run_id"] == 1235


# ---- kill ---------------------------------------------------------------------------------------------


def _execute_in_thread(op: EdgeImpulseRunPipelineOperator, context: dict[str, Any]) -> dict[str, Any]:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = op.execute(context)
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    outcome["thread"] = thread
    return outcome


def _wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "condition not reached"
        time.sleep(0.01)


def test_on_kill_stops_our_run(studio, context):
    studio.finish_after = None
    op = make_op(poll_interval=0.05)
    outcome = _execute_in_thread(op, context)
    _wait_for(lambda: studio.calls.count("GET") >= 3)
    op.on_kill()
    outcome["thread"].join(5)
    assert "STOP" in studio.calls
    assert isinstance(outcome.get("error"), JobFailedError)  # the stopped run ends failed


def test_on_kill_does_not_stop_an_adopted_run(studio, context):
    studio.start_foreign_run(555)
    studio.finish_after = None
    op = make_op(timeout=2)
    outcome = _execute_in_thread(op, context)
    _wait_for(lambda: studio.calls.count("GET") >= 3)
    op.on_kill()
    assert "STOP" not in studio.calls
    studio.finish_after = 0
    outcome["thread"].join(5)


def test_on_kill_does_not_stop_a_run_that_replaced_ours(studio, context):
    make_op(wait_for_completion=False).execute(context)
    op = make_op(wait_for_completion=False)
    op.execute(context)  # reattached: ours
    studio._finish()
    studio.start_foreign_run(556)
    op.on_kill()
    assert "STOP" not in studio.calls


def test_on_kill_respects_cancel_on_kill_false(studio, context):
    op = make_op(wait_for_completion=False, cancel_on_kill=False)
    op.execute(context)
    op.on_kill()
    assert "STOP" not in studio.calls


def test_on_kill_before_execute_does_nothing(studio):
    make_op().on_kill()
    assert studio.calls == []


# ---- deferrable ---------------------------------------------------------------------------------------


def test_deferrable_defers_with_a_secret_free_trigger(studio, context):
    studio.finish_after = None
    with pytest.raises(TaskDeferred) as info:
        make_op(deferrable=True, timeout=600).execute(context)
    deferred = info.value
    trigger = deferred.trigger
    assert isinstance(trigger, EdgeImpulsePipelineRunTrigger)
    assert deferred.method_name == "execute_complete"
    assert deferred.kwargs == {"started_by_us": True}
    assert deferred.timeout is None  # the trigger sends its own timeout event
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_pipelines.triggers.edge_impulse.EdgeImpulsePipelineRunTrigger"
    assert kwargs["ref"]["run_id"] == 1234 and kwargs["ref"]["pipeline_id"] == 12
    assert kwargs["cancel_on_kill"] is True
    assert kwargs["conn_id"] == "edge_impulse_default"
    assert time.time() + 590 < kwargs["deadline"] <= time.time() + 600
    json.dumps(kwargs)
    assert_no_secrets(kwargs)


def test_deferrable_adopted_run_is_not_cancelled_on_kill(studio, context):
    studio.start_foreign_run(555)
    studio.finish_after = None
    with pytest.raises(TaskDeferred) as info:
        make_op(deferrable=True).execute(context)
    assert info.value.trigger.serialize()[1]["cancel_on_kill"] is False
    assert info.value.kwargs == {"started_by_us": False}


def test_deferrable_does_not_defer_a_run_that_is_already_over(studio, context):
    studio.finish_after = 0
    assert make_op(deferrable=True).execute(context)["state"] == "finished"


def _event(status: str, **extra: Any) -> dict[str, Any]:
    ref = {"organization_id": 1, "pipeline_id": 12, "run_id": 1234, "fail_on_import_errors": True,
           "started_at": time.time()}
    return {"status": status, "kind": "edge_impulse.pipeline_run", "ref": ref,
            "state": extra.pop("state", None), "message": extra.pop("message", None),
            "result": extra.pop("result", {}), **extra}


def test_execute_complete_success(context):
    result = {"run_id": 1234, "state": "finished", "steps": [], "warnings": []}
    assert make_op().execute_complete(context, _event("success", state="finished", result=result)) == result


def test_execute_complete_failed(context):
    with pytest.raises(JobFailedError, match=r"run 1234 \(organization 1\) failed: step 1 'A' failed"):
        make_op().execute_complete(context, _event("failed", state="failed", message="step 1 'A' failed"))


def test_execute_complete_error(context):
    with pytest.raises(AirflowException, match="HTTP 401: Invalid API key"):
        event = _event("error", message="Edge Impulse API: HTTP 401: Invalid API key")
        make_op().execute_complete(context, event)


@pytest.mark.parametrize("started_by_us", [True, False])
def test_execute_complete_timeout_with_cancel_on_timeout(studio, context, started_by_us):
    studio.start_foreign_run(1234)  # the run in the event is the current one
    with pytest.raises(JobTimeoutError):
        make_op(cancel_on_timeout=True).execute_complete(
            context, _event("timeout", message="Timed out ... The remote job was left running."),
            started_by_us=started_by_us)
    assert ("STOP" in studio.calls) is started_by_us


def test_execute_complete_rejects_unknown_events(context):
    with pytest.raises(AirflowException, match="Unexpected trigger event"):
        make_op().execute_complete(context, {"status": "weird"})


# ---- sensor ----------------------------------------------------------------------------------------------


def make_sensor(**kwargs: Any) -> EdgeImpulsePipelineRunSensor:
    params: dict[str, Any] = {"task_id": "wait", "organization_id": 1, "pipeline_id": 12, "run_id": 1234,
                              "poke_interval": 0.01, "timeout": 5, "deferrable": False}
    params.update(kwargs)
    return EdgeImpulsePipelineRunSensor(**params)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"run_id": "abc"}, "run_id must be a positive integer id"),
     ({"pipeline_id": -3}, "pipeline_id must be"),
     ({"poke_interval": 0}, "poke_interval must be a positive"),
     ({"fail_on_import_errors": None}, "fail_on_import_errors must be True or False")],
)
def test_sensor_validation(studio, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_sensor(**kwargs)
    assert studio.calls == []


def test_sensor_poke(studio, context):
    studio.start_foreign_run(1234)
    sensor = make_sensor()
    assert sensor.poke(context) is False
    done = sensor.poke(context)
    assert done.is_done and done.xcom_value["state"] == "finished"
    assert_no_secrets(done.xcom_value)


def test_sensor_fails_on_failed_run(studio, context):
    studio.start_foreign_run(1234)
    studio.outcome = "failure"
    with pytest.raises(JobFailedError, match=r"run 1234\) ended failed: step 1 'Import into project' failed"):
        make_sensor().execute(context)


def test_sensor_unknown_run_fails(studio, context):
    with pytest.raises(JobFailedError, match="run 999 is neither the current nor the last run"):
        make_sensor(run_id=999).execute(context)


def test_sensor_deferrable(studio, context):
    studio.start_foreign_run(1234)
    studio.finish_after = None
    with pytest.raises(TaskDeferred) as info:
        make_sensor(deferrable=True).execute(context)
    kwargs = info.value.trigger.serialize()[1]
    assert kwargs["cancel_on_kill"] is False  # a sensor never stops a run
    assert kwargs["ref"]["started_at"] is None
