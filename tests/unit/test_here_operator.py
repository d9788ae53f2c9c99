"""HereSchedulePipelineVersionOperator against requests-mock: validation, both phases, reattach, kill."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import pytest

from airflow_provider_pipelines._compat import AIRFLOW_V_3_3_PLUS, AirflowException, TaskDeferred
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.here import DEFAULT_BASE_URL, DEFAULT_TOKEN_ENDPOINT_URL
from airflow_provider_pipelines.jobs.base import JobFailedError, JobTimeoutError, PollPolicy
from airflow_provider_pipelines.operators.here import HereSchedulePipelineVersionOperator, correlation_id_for
from airflow_provider_pipelines.triggers.here import HerePipelineJobTrigger, HerePipelineOperationTrigger

KEY_ID = "OPTESTKEYID"
SECRET = "op-test-secret-value-0042"
PID = "5f2b5b1e-0000-4000-8000-000000000001"
VID = "5f2b5b1e-0000-4000-8000-0000000000a1"
OPID = "0b7c9d6e-1111-4222-8333-444455556666"
JOB_ID = "9d9d9d9d-1111-4222-8333-444455556666"
OLD_JOB = "11111111-1111-4111-8111-111111111111"
VERSION_URL = f"{DEFAULT_BASE_URL}/v2/pipelines/{PID}/versions/{VID}"
OP_URL = f"{VERSION_URL}/operations/{OPID}"
CATALOGS = {"weather": {"processingType": "changes", "version": 75, "sinceVersion": 70}}
T0 = "2026-01-01T10:00:00.000+00:00"


#: Tests of the Airflow 3.3 task state store; older releases adopt the vendor's active run
#: instead (that side: tests/unit/test_version_compat.py).
state_store_only = pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS,
                                      reason="the task state store exists from Airflow 3.3")


def op_doc(state: str, message: str | None = None, request_type: str = "activate") -> dict[str, Any]:
    return {"id": OPID, "requestType": request_type, "state": state, "created": T0,
            **({"message": message} if message else {})}


def job_doc(state: str, job_id: str = JOB_ID, created: str = "2026-01-01T10:00:03+00:00") -> dict[str, Any]:
    return {"id": job_id, "state": state, "created": created, "executionMode": "on-demand",
            "loggingUrl": f"https://logs.example/{job_id}", "pipelineUIUrl": f"https://ui.example/{job_id}"}


def version_doc(state: str = "ready", latest_job: dict | None = None, latest_op: dict | None = None) -> dict:
    doc: dict[str, Any] = {"id": VID, "state": state, "loggingUrl": "https://logs.example/version",
                           "pipelineUIUrl": "https://ui.example/version"}
    if latest_job:
        doc["latestJob"] = latest_job
    if latest_op:
        doc["latestOperation"] = latest_op
    return doc


class FakeTI:
    dag_id, run_id, task_id, map_index, try_number = "here_dag", "manual__2026-01-01", "schedule", -1, 1

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)
        self.xcom[key] = value


class FakeStore:
    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        self.data = dict(initial or {})

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any, retention: Any = None) -> None:
        self.data[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def make_context(store: FakeStore | None = None) -> dict[str, Any]:
    return {"ti": FakeTI(), "task_state_store": store or FakeStore()}


@pytest.fixture(autouse=True)
def here_conn(conn_env):
    conn_env("here_default", conn_type="here_platform", login=KEY_ID, password=SECRET)


class Api:
    """Scripted HERE responses on requests-mock (each list's last answer repeats)."""

    def __init__(self, m: Any) -> None:
        self.m = m
        self.count = 0
        self.token = m.post(DEFAULT_TOKEN_ENDPOINT_URL, json=self._token)
        self.activate = m.post(f"{VERSION_URL}/operations/activate", status_code=202, json=op_doc("accepted"))
        self.cancel = m.post(f"{VERSION_URL}/operations/cancel", status_code=202,
                             json=op_doc("accepted", request_type="cancel"))
        self.deactivate = m.post(f"{VERSION_URL}/operations/deactivate", status_code=202,
                                 json=op_doc("accepted", request_type="deactivate"))

    def _token(self, request: Any, context: Any) -> dict[str, Any]:
        self.count += 1
        return {"access_token": f"op-token-{self.count}-abcdefgh", "expires_in": 3600}

    def versions(self, *docs: dict[str, Any]) -> Any:
        self.version = self.m.get(VERSION_URL, [{"json": d} for d in docs])
        return self.version

    def operations(self, *docs: dict[str, Any]) -> Any:
        self.operation = self.m.get(OP_URL, [{"json": d} for d in docs])
        return self.operation

    def jobs(self, *lists: list[dict[str, Any]]) -> Any:
        self.job_list = self.m.get(f"{VERSION_URL}/jobs", [{"json": j} for j in lists])
        return self.job_list


@pytest.fixture
def api(requests_mock):
    return Api(requests_mock)


def operator(**kwargs: Any) -> HereSchedulePipelineVersionOperator:
    params: dict[str, Any] = {"task_id": "schedule", "pipeline_id": PID, "pipeline_version_id": VID,
                              "poll_interval": 0.01, "deferrable": False}
    params.update(kwargs)
    return HereSchedulePipelineVersionOperator(**params)


# --------------------------------------------------------------------------------------------
# Validation before any request
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pipeline_id": "42"}, "pipeline_id must be a HERE UUID"),
        ({"pipeline_version_id": f"hrn:here:pipeline::org:{VID}"}, f"use {VID!r}"),
        ({"input_catalogs": {"weather": {"processingType": "diff", "version": 1}}},
         "['processingType'] must be one of changes, reprocess, no_changes, got 'diff'"),
        ({"input_catalogs": {"weather": {"processingType": "changes", "version": -1}}}, "between 0 and"),
        ({"input_catalogs": {"weather": {"processingType": "changes", "version": "x"}}}, "catalog version"),
        ({"input_catalogs": {"weather": {"processingType": "changes", "version": True}}}, "catalog version"),
        ({"input_catalogs": {"weather": {"processingType": "changes", "version": 1.5}}}, "catalog version"),
        ({"input_catalogs": {"weather": {"processingType": "changes", "version": 3, "sinceVersion": 4}}},
         "sinceVersion 4 is after version 3"),
        ({"input_catalogs": {"weather": {"processingType": "changes"}}}, "needs an integer 'version'"),
        ({"input_catalogs": {"weather": {"processingType": "changes", "version": 1, "sincVersion": 0}}},
         "unknown key(s) sincVersion"),
        ({"input_catalogs": {"bad id": {"processingType": "changes", "version": 1}}}, "symbolic id"),
        ({"input_catalogs": {}}, "at least one catalog"),
        ({"input_catalogs": ["weather"]}, "input_catalogs must be a dict"),
        ({"input_catalogs": CATALOGS, "output_catalog": {"baseVersion": "x"}}, "integer catalog version"),
        ({"input_catalogs": CATALOGS, "output_catalog": {"base": 1}}, "exactly {'baseVersion': <int>}"),
        ({"output_catalog": {"baseVersion": 1}}, "give input_catalogs too"),
        ({"run_as_id": "app/my-app"}, "run_as_id must be an app HRN"),
        ({"high_availability": "yes"}, "high_availability must be True, False or None"),
        ({"wait_for_job": True, "wait_for_completion": False}, "wait_for_job=True needs wait_for_completion"),
        ({"poll_interval": 0}, "poll_interval must be a positive"),
        ({"timeout": -5}, "timeout must be a positive"),
    ],
)
def test_bad_arguments_fail_at_construction(requests_mock, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        operator(**kwargs)
    assert requests_mock.call_count == 0


def test_templated_values_are_checked_after_rendering_before_any_request(requests_mock):
    op = operator(
        pipeline_id="{{ params.pid }}",
        input_catalogs={"weather": {"processingType": "{{ params.p }}", "version": "{{ params.v }}"}},
        output_catalog={"baseVersion": "{{ params.b }}"}, run_as_id="{{ params.r }}",
    )
    op.pipeline_id = PID
    op.input_catalogs = {"weather": {"processingType": "changes", "version": "-3"}}
    with pytest.raises(ValueError, match=r"input_catalogs\['weather'\]\['version'\] must be between 0"):
        op.execute(make_context())
    op.input_catalogs = {"weather": {"processingType": "nope", "version": "3"}}
    with pytest.raises(ValueError, match="must be one of"):
        op.execute(make_context())
    op.input_catalogs, op.output_catalog, op.run_as_id = CATALOGS, {"baseVersion": "7"}, "not-an-hrn"
    with pytest.raises(ValueError, match="run_as_id must be an app HRN"):
        op.execute(make_context())
    assert requests_mock.call_count == 0


def test_rendered_strings_become_the_documented_json(api):
    api.versions(version_doc(), version_doc("ready"))
    api.operations(op_doc("succeeded"))
    op = operator(input_catalogs='{"weather": {"processingType": "reprocess", "version": "12"}}',
                  output_catalog={"baseVersion": "4"}, run_as_id="hrn:here:account::myorg:app/my-app-id",
                  high_availability=True, wait_for_completion=False)
    op.execute(make_context())
    assert api.activate.last_request.json() == {
        "inputCatalogs": {"weather": {"processingType": "reprocess", "version": 12}},
        "outputCatalog": {"baseVersion": 4}, "runAsId": "hrn:here:account::myorg:app/my-app-id",
        "highAvailability": True,
    }


# --------------------------------------------------------------------------------------------
# Worker mode
# --------------------------------------------------------------------------------------------


def test_run_now_waits_for_the_operation_then_the_job(api):
    api.versions(
        version_doc("ready", latest_job=job_doc("completed", OLD_JOB, "2025-12-31T00:00:00Z")),
        # the new job is not visible yet
        version_doc("running", latest_job=job_doc("completed", OLD_JOB, "2025-12-31T00:00:00Z")),
        version_doc("running", latest_job=job_doc("running")),
        version_doc("ready", latest_job=job_doc("completed")),
    )
    api.operations(op_doc("accepted"), op_doc("being_processed"), op_doc("succeeded"))
    context = make_context()
    result = operator(input_catalogs=CATALOGS, output_catalog={"baseVersion": 42}).execute(context)

    assert api.activate.call_count == 1
    assert api.activate.last_request.json() == {"inputCatalogs": CATALOGS,
                                                "outputCatalog": {"baseVersion": 42}}
    assert result["run_now"] is True
    assert result["operation"]["operation_id"] == OPID and result["operation"]["state"] == "succeeded"
    assert result["job"]["job_id"] == JOB_ID and result["job"]["state"] == "completed"
    assert result["logging_url"] == f"https://logs.example/{JOB_ID}"
    assert result["pipeline_ui_url"] == f"https://ui.example/{JOB_ID}"
    xcom = context["ti"].xcom
    assert xcom == {"operation_id": OPID, "job_id": JOB_ID, "logging_url": f"https://logs.example/{JOB_ID}",
                    "pipeline_ui_url": f"https://ui.example/{JOB_ID}"}
    assert context["task_state_store"].data == {}  # forgotten once finished: a cleared task runs again
    json.dumps(result)


def test_schedule_only_succeeds_once_the_version_is_scheduled(api):
    api.versions(version_doc("ready"), version_doc("scheduled"))
    api.operations(op_doc("succeeded"))
    jobs = api.jobs([])
    context = make_context()
    result = operator().execute(context)
    assert api.activate.last_request.body is None  # no body: the version follows its scheduler configuration
    assert result["run_now"] is False and result["job"] is None and result["version_state"] == "scheduled"
    assert context["ti"].xcom["pipeline_ui_url"] == "https://ui.example/version"
    assert jobs.call_count == 0


def test_wait_for_job_follows_the_next_scheduled_job(api):
    api.versions(version_doc("ready", latest_job=job_doc("completed", OLD_JOB, "2026-01-01T09:59:59Z")),
                 version_doc("scheduled"))
    api.operations(op_doc("succeeded"))
    old = job_doc("completed", OLD_JOB, "2026-01-01T09:59:59Z")
    nxt = job_doc("running", "22222222-2222-4222-8222-222222222222", "2026-01-01T10:20:00Z")
    api.jobs([old], [old], [job_doc("running"), old], [nxt, job_doc("completed"), old])
    result = operator(wait_for_job=True).execute(make_context())
    assert result["job"]["job_id"] == JOB_ID and result["job"]["state"] == "completed"


def test_failed_operation_fails_the_task_with_its_message(api):
    api.versions(version_doc())
    api.operations(op_doc("being_processed"),
                   op_doc("failed", "Operation failed with error - Main class not found"))
    context = make_context()
    with pytest.raises(JobFailedError, match=f"activate operation {OPID} .* ended failed: Operation failed "
                                             "with "
                                             "error - Main class not found"):
        operator(input_catalogs=CATALOGS).execute(context)
    assert context["task_state_store"].data == {}


@pytest.mark.parametrize("state", ["failed", "canceled"])
def test_failed_or_cancelled_job_fails_the_task(api, state):
    api.versions(version_doc(), version_doc("running", latest_job=job_doc("running")),
                 version_doc("ready", latest_job=job_doc(state)))
    api.operations(op_doc("succeeded"))
    context = make_context()
    with pytest.raises(JobFailedError, match=f"job {JOB_ID} ended {state}; .*https://logs.example/{JOB_ID}"):
        operator(input_catalogs=CATALOGS).execute(context)
    assert context["ti"].xcom["logging_url"] == f"https://logs.example/{JOB_ID}"


def test_version_back_to_ready_without_a_job_fails(api):
    api.versions(version_doc(), version_doc("ready"))
    api.operations(op_doc("succeeded"))
    jobs = api.jobs([])
    with pytest.raises(JobFailedError, match="went back to ready without a job"):
        operator(input_catalogs=CATALOGS).execute(make_context())
    assert jobs.call_count >= 1  # the list was checked before concluding


# --------------------------------------------------------------------------------------------
# Busy versions, reattach, ambiguous answers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (version_doc("scheduled"), "is already scheduled (not 'ready'): it waits for its scheduler trigger"),
        (version_doc("running", latest_job=job_doc("running")),
         f"is already running (not 'ready'): it has an active job {JOB_ID} that this task did not start"),
        (version_doc("paused"), "resume it (operations/resume) or cancel it"),
        (version_doc("ready", latest_op=op_doc("being_processed", request_type="deactivate")),
         f"has operation {OPID} (deactivate, being_processed) in progress that this task did not start"),
    ],
)
def test_an_active_version_this_task_did_not_start_fails_clearly(api, doc, message):
    api.versions(doc)
    with pytest.raises(AirflowException, match=re.escape(message)):
        operator(input_catalogs=CATALOGS).execute(make_context())
    assert api.activate.call_count == 0


def test_a_refused_activation_names_the_vendor_reason(api):
    api.versions(version_doc())
    api.m.post(f"{VERSION_URL}/operations/activate", status_code=400, headers={"X-Request-ID": "rq-400"},
               json={"status": 400, "code": "E1001", "message": "Cannot activate: sibling PipelineVersion x "
                                                               "of the same pipeline is in state running"})
    with pytest.raises(ApiError, match=r"HTTP 400: Cannot activate: sibling .* \(code E1001\) \[request id"):
        operator(input_catalogs=CATALOGS).execute(make_context())


def remembered(**extra: Any) -> FakeStore:
    run = {"pipeline_id": PID, "version_id": VID, "operation_id": OPID, "created_after": T0,
           "previous_job_id": OLD_JOB, "run_now": True, "needs_job": True, **extra}
    return FakeStore({HereSchedulePipelineVersionOperator.STATE_KEY: run})


@state_store_only
def test_retry_adopts_the_run_an_earlier_try_started(api):
    api.versions(version_doc("running", latest_job=job_doc("running")),
                 version_doc("running", latest_job=job_doc("running")),
                 version_doc("ready", latest_job=job_doc("completed")))
    api.operations(op_doc("succeeded"))
    context = make_context(remembered())
    result = operator(input_catalogs=CATALOGS).execute(context)
    assert api.activate.call_count == 0
    assert result["job"]["state"] == "completed" and context["ti"].xcom["operation_id"] == OPID


@state_store_only
def test_retry_adopts_an_operation_still_in_progress(api):
    api.versions(version_doc("ready", latest_op=op_doc("being_processed")), version_doc("running"),
                 version_doc("ready", latest_job=job_doc("completed")))
    api.operations(op_doc("being_processed"), op_doc("being_processed"), op_doc("succeeded"))
    api.jobs([])  # no latestJob yet: the list is checked
    result = operator(input_catalogs=CATALOGS).execute(make_context(remembered()))
    assert api.activate.call_count == 0 and result["job"]["job_id"] == JOB_ID


@state_store_only
def test_retry_after_a_failed_run_starts_a_new_one(api):
    failed = version_doc("ready", latest_job=job_doc("failed"))
    api.versions(failed, failed,
                 version_doc("running"),
                 version_doc("ready", latest_job=job_doc("completed", "33333333-3333-4333-8333-333333333333",
                                                         "2026-01-01T11:00:00Z")))
    api.operations(op_doc("succeeded"))
    api.activate = api.m.post(f"{VERSION_URL}/operations/activate", status_code=202,
                              json={**op_doc("accepted"), "created": "2026-01-01T10:59:00Z"})
    api.jobs([])
    store = remembered()
    result = operator(input_catalogs=CATALOGS).execute(make_context(store))
    assert api.activate.call_count == 1
    assert result["job"]["job_id"] == "33333333-3333-4333-8333-333333333333"


def test_an_unanswered_activation_is_looked_up_before_failing(api):
    previous = {**op_doc("succeeded"), "id": "00000000-0000-4000-8000-00000000dead"}
    api.versions(version_doc("ready", latest_op=previous), version_doc("ready", latest_op=op_doc("accepted")),
                 version_doc("ready", latest_job=job_doc("completed")))
    api.activate = api.m.post(f"{VERSION_URL}/operations/activate", status_code=503, json={"message": "busy"})
    api.operations(op_doc("succeeded"))
    result = operator(input_catalogs=CATALOGS).execute(make_context())
    assert api.activate.call_count == 1  # a POST is never blindly repeated
    assert result["operation"]["operation_id"] == OPID and result["job"]["state"] == "completed"


def test_an_unanswered_activation_that_did_not_happen_fails(api):
    api.versions(version_doc("ready"))
    api.activate = api.m.post(f"{VERSION_URL}/operations/activate", status_code=504,
                              json={"message": "gateway"})
    with pytest.raises(ApiError, match="HTTP 504") as info:
        operator(input_catalogs=CATALOGS).execute(make_context())
    assert info.value.ambiguous and api.activate.call_count == 1


# --------------------------------------------------------------------------------------------
# Deferrable mode: two deferrals, one deadline
# --------------------------------------------------------------------------------------------


def test_deferrable_defers_twice_with_one_deadline_and_no_secrets(api):
    api.versions(version_doc(), version_doc("running"))
    api.operations(op_doc("accepted"))
    api.jobs([])
    op = operator(input_catalogs=CATALOGS, deferrable=True, timeout=600, poll_interval=5)
    context = make_context()
    before = time.time()
    with pytest.raises(TaskDeferred) as first:
        op.execute(context)
    trigger = first.value.trigger
    assert isinstance(trigger, HerePipelineOperationTrigger)
    assert first.value.method_name == "execute_operation_complete" and first.value.timeout is None
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_pipelines.triggers.here.HerePipelineOperationTrigger"
    deadline = first.value.kwargs["deadline"]
    assert before + 600 <= deadline <= time.time() + 600 and kwargs["deadline"] == deadline
    assert {k: v for k, v in kwargs["ref"].items() if k != "resume"} == {
        "pipeline_id": PID, "version_id": VID, "operation_id": OPID}
    assert kwargs["ref"]["resume"] == first.value.kwargs  # the resume state also travels in the event
    assert kwargs["cancel_on_kill"] is True
    assert kwargs["hook_params"] == {"correlation_id": correlation_id_for(context)}
    dumped = json.dumps([kwargs, first.value.kwargs])
    assert SECRET not in dumped and "op-token" not in dumped

    resumed = operator(input_catalogs=CATALOGS, deferrable=True, timeout=600, poll_interval=5)
    event = {"status": "success", "kind": "here.pipeline_operation", "ref": kwargs["ref"],
             "state": "succeeded", "message": None,
             "result": {"operation_id": OPID, "state": "succeeded", "request_type": "activate"}}
    with pytest.raises(TaskDeferred) as second:
        resumed.execute_operation_complete(context, event=event, **first.value.kwargs)
    assert isinstance(second.value.trigger, HerePipelineJobTrigger)
    assert second.value.method_name == "execute_complete"
    assert second.value.kwargs["deadline"] == deadline == second.value.trigger.serialize()[1]["deadline"]
    job_ref = second.value.trigger.serialize()[1]["ref"]
    assert job_ref["created_after"] == T0 and job_ref["single_job"] is True and job_ref["job_id"] is None

    final = operator(input_catalogs=CATALOGS, deferrable=True)
    job_event = {"status": "success", "kind": "here.pipeline_job", "ref": job_ref, "state": "completed",
                 "message": None, "result": {"job_id": JOB_ID, "state": "completed",
                                             "logging_url": "https://logs.example/j"}}
    result = final.execute_complete(context, event=job_event, **second.value.kwargs)
    assert result["job"]["job_id"] == JOB_ID and result["operation"]["operation_id"] == OPID
    assert context["ti"].xcom["job_id"] == JOB_ID and context["ti"].xcom["logging_url"] == "https://logs.example/j"


def test_resuming_from_the_event_alone_as_airflow_dags_test_does(api):
    """``airflow dags test`` (Airflow 3.3.2) resumes with ``{"event": ...}`` only: the ref has the rest."""
    api.versions(version_doc(), version_doc("running"))
    api.operations(op_doc("accepted"))
    api.jobs([])
    context = make_context()
    with pytest.raises(TaskDeferred) as first:
        operator(input_catalogs=CATALOGS, deferrable=True, timeout=600).execute(context)
    ref = first.value.trigger.serialize()[1]["ref"]
    event = {"status": "success", "kind": "here.pipeline_operation", "ref": ref, "state": "succeeded",
             "message": None, "result": {"operation_id": OPID, "state": "succeeded"}}
    with pytest.raises(TaskDeferred) as second:
        operator(input_catalogs=CATALOGS, deferrable=True).execute_operation_complete(context, event=event)
    assert second.value.kwargs["deadline"] == first.value.kwargs["deadline"]
    job_ref = second.value.trigger.serialize()[1]["ref"]
    job_event = {"status": "success", "kind": "here.pipeline_job", "ref": job_ref, "state": "completed",
                 "message": None, "result": {"job_id": JOB_ID, "state": "completed"}}
    result = operator(input_catalogs=CATALOGS, deferrable=True).execute_complete(context, event=job_event)
    assert result["operation"]["operation_id"] == OPID and result["job"]["job_id"] == JOB_ID
    with pytest.raises(AirflowException, match="Resumed without the run"):
        operator(deferrable=True).execute_complete(context, event={**job_event, "ref": {}})


def run_kwargs() -> dict[str, Any]:
    run = {"pipeline_id": PID, "version_id": VID, "operation_id": OPID, "created_after": T0,
           "previous_job_id": None, "run_now": True, "needs_job": True}
    return {"run": run, "deadline": time.time() + 60}


@pytest.mark.parametrize(
    ("event", "error", "message"),
    [
        ({"status": "failed", "kind": "here.pipeline_operation", "state": "failed",
          "message": "Main class not found", "result": {"request_type": "activate"}},
         JobFailedError, "ended failed: Main class not found"),
        ({"status": "timeout", "kind": "here.pipeline_operation", "message": "Timed out ... left running."},
         JobTimeoutError, "left running"),
        ({"status": "error", "kind": "here.pipeline_operation", "message": "HERE API: get operation failed"},
         AirflowException, "get operation failed"),
        ({"status": "success", "kind": "here.pipeline_job"}, AirflowException,
         "got one for 'here.pipeline_job'"),
        ({"status": "weird"}, AirflowException, "Unexpected trigger event"),
    ],
)
def test_operation_events_that_end_the_task(api, event, error, message):
    with pytest.raises(error, match=re.escape(message)):
        operator(deferrable=True).execute_operation_complete(make_context(), event=event, **run_kwargs())
    assert api.cancel.call_count == 0


def test_timeout_event_with_cancel_on_timeout_cancels_the_run(api):
    api.versions(version_doc("running", latest_job=job_doc("running")))
    event = {"status": "timeout", "kind": "here.pipeline_job", "message": "Timed out", "state": "running"}
    with pytest.raises(JobTimeoutError, match="cancel_on_timeout=True, so this task requested cancel"):
        operator(deferrable=True, cancel_on_timeout=True).execute_complete(
            make_context(), event=event, operation={}, **run_kwargs())
    assert api.cancel.call_count == 1


def test_worker_timeout_leaves_the_run_running_by_default(api):
    api.versions(version_doc(), version_doc("running", latest_job=job_doc("running")))
    api.operations(op_doc("succeeded"))
    with pytest.raises(JobTimeoutError, match=r"left running.*HerePipelineJobSensor\(pipeline_id="):
        operator(input_catalogs=CATALOGS, timeout=0.2).execute(make_context())
    assert api.cancel.call_count == 0 and api.deactivate.call_count == 0


def test_worker_timeout_with_cancel_on_timeout_deactivates_a_scheduled_version(api):
    api.versions(version_doc(), version_doc("scheduled"))
    api.operations(op_doc("succeeded"))
    api.jobs([])
    with pytest.raises(JobTimeoutError, match="requested deactivate"):
        operator(wait_for_job=True, timeout=0.2, cancel_on_timeout=True).execute(make_context())
    assert api.deactivate.call_count == 1 and api.cancel.call_count == 0


# --------------------------------------------------------------------------------------------
# on_kill and secrets
# --------------------------------------------------------------------------------------------


def test_on_kill_cancels_the_run_this_task_started(api):
    api.versions(version_doc("running", latest_job=job_doc("running")))
    op = operator(input_catalogs=CATALOGS)
    op.on_kill()  # nothing started yet: nothing to cancel
    assert api.m.call_count == 0
    op._make_hook(make_context())
    op._active_run = run_kwargs()["run"]
    op.on_kill()
    assert api.cancel.call_count == 1
    assert api.cancel.last_request.headers["X-Correlation-ID"] == op._hook.correlation_id


def test_on_kill_waits_for_an_operation_in_progress_then_cancels(api, monkeypatch):
    monkeypatch.setattr("airflow_provider_pipelines.jobs.here._stop_policy",
                        lambda: PollPolicy(interval=0.01))
    api.versions(version_doc("ready", latest_op=op_doc("being_processed")),
                 version_doc("running", latest_job=job_doc("starting")))
    api.operations(op_doc("being_processed"), op_doc("succeeded"))
    op = operator(input_catalogs=CATALOGS)
    op._make_hook(make_context())
    op._active_run = run_kwargs()["run"]
    op.on_kill()
    assert api.cancel.call_count == 1


def test_on_kill_does_nothing_when_disabled(api):
    op = operator(input_catalogs=CATALOGS, cancel_on_kill=False)
    op._make_hook(make_context())
    op._active_run = run_kwargs()["run"]
    op.on_kill()
    assert api.m.call_count == 0


def test_secrets_stay_out_of_logs_xcom_and_results(api, caplog):
    caplog.set_level(logging.DEBUG)
    api.versions(version_doc(), version_doc("ready", latest_job=job_doc("completed")))
    api.operations(op_doc("succeeded"))
    context = make_context()
    op = operator(input_catalogs=CATALOGS)
    result = op.execute(context)
    tokens = [f"op-token-{i}-abcdefgh" for i in range(1, api.count + 1)]
    rendered = {name: getattr(op, name) for name in op.template_fields}
    for text in (caplog.text, json.dumps(result), json.dumps(context["ti"].xcom), json.dumps(rendered)):
        assert SECRET not in text
        assert not any(token in text for token in tokens)


def test_correlation_id_is_stable_per_try():
    ti = FakeTI()
    a, b = correlation_id_for({"ti": ti}), correlation_id_for({"ti": ti})
    ti.try_number = 2
    assert a == b != correlation_id_for({"ti": ti})
    assert re.fullmatch(r"[0-9a-f-]{36}", a)
