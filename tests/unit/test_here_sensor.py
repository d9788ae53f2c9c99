"""HerePipelineJobSensor: validation, poke, deferral."""

from __future__ import annotations

import re
from typing import Any

import pytest
from airflow.sdk import PokeReturnValue

from airflow_provider_pipelines._compat import TaskDeferred
from airflow_provider_pipelines.hooks.here import DEFAULT_BASE_URL, DEFAULT_TOKEN_ENDPOINT_URL
from airflow_provider_pipelines.jobs.base import JobFailedError
from airflow_provider_pipelines.operators.here import correlation_id_for
from airflow_provider_pipelines.sensors.here import HerePipelineJobSensor
from airflow_provider_pipelines.triggers.here import HerePipelineJobTrigger

PID = "5f2b5b1e-0000-4000-8000-000000000001"
VID = "5f2b5b1e-0000-4000-8000-0000000000a1"
JOB_ID = "9d9d9d9d-1111-4222-8333-444455556666"
OTHER = "22222222-2222-4222-8222-222222222222"
VERSION_URL = f"{DEFAULT_BASE_URL}/v2/pipelines/{PID}/versions/{VID}"


class FakeTI:
    dag_id, run_id, task_id, map_index, try_number = "d", "r", "wait", -1, 1

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


@pytest.fixture(autouse=True)
def api(conn_env, requests_mock):
    conn_env("here_default", conn_type="here_platform", login="SENSORKEY", password="sensor-secret-123")
    requests_mock.post(DEFAULT_TOKEN_ENDPOINT_URL,
                       json={"access_token": "sensor-token-abcdef", "expires_in": 3600})
    return requests_mock


def job(state: str, job_id: str = JOB_ID) -> dict[str, Any]:
    return {"id": job_id, "state": state, "created": "2026-01-01T10:00:00Z",
            "loggingUrl": f"https://logs/{job_id}", "pipelineUIUrl": f"https://ui/{job_id}"}


def sensor(**kwargs: Any) -> HerePipelineJobSensor:
    params: dict[str, Any] = {"task_id": "wait", "pipeline_id": PID, "pipeline_version_id": VID,
                              "poke_interval": 1, "timeout": 60}
    params.update(kwargs)
    return HerePipelineJobSensor(**params)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"pipeline_id": "p"}, "pipeline_id must be a HERE UUID"),
     ({"job_id": 42}, "job_id must be a HERE UUID"),
     ({"poke_interval": 0}, "poke_interval must be a positive"), ({"timeout": -1}, "timeout")],
)
def test_bad_arguments_fail_at_construction(api, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        sensor(**kwargs)
    assert api.call_count == 0


def test_templates_are_accepted_then_checked(api):
    s = sensor(job_id="{{ ti.xcom_pull('run', key='job_id') }}")
    s.job_id = "None"  # what an empty XCom renders to
    with pytest.raises(ValueError, match="job_id must be a HERE UUID"):
        s.poke({"ti": FakeTI()})
    assert api.call_count == 0


def test_poke_waits_for_the_latest_job_then_returns_it(api):
    api.get(VERSION_URL, [{"json": {"state": "running", "latestJob": job("running")}},
                          {"json": {"state": "scheduled", "latestJob": job("completed")}}])
    context = {"ti": FakeTI()}
    s = sensor()
    assert s.poke(context) is False
    done = s.poke(context)
    assert isinstance(done, PokeReturnValue) and done.is_done
    assert done.xcom_value["job_id"] == JOB_ID and done.xcom_value["state"] == "completed"
    assert context["ti"].xcom == {"pipeline_ui_url": f"https://ui/{JOB_ID}", "logging_url": f"https://logs/{JOB_ID}"}


def test_a_given_job_that_is_not_the_latest_is_found_in_the_list(api):
    api.get(VERSION_URL, json={"state": "running", "latestJob": job("running", OTHER)})
    jobs = api.get(f"{VERSION_URL}/jobs", json=[job("running", OTHER), job("failed")])
    with pytest.raises(JobFailedError,
                       match=f"HERE pipeline job {JOB_ID} .* ended failed: job {JOB_ID} ended failed"):
        sensor(job_id=JOB_ID).poke({"ti": FakeTI()})
    assert jobs.call_count == 1


def test_deferrable_sensor_defers_with_the_try_correlation_id(api):
    api.get(VERSION_URL, json={"state": "running", "latestJob": job("running")})
    context = {"ti": FakeTI()}
    with pytest.raises(TaskDeferred) as info:
        sensor(deferrable=True, job_id=JOB_ID).execute(context)
    trigger = info.value.trigger
    assert isinstance(trigger, HerePipelineJobTrigger)
    _, kwargs = trigger.serialize()
    assert kwargs["ref"] == {"pipeline_id": PID, "version_id": VID, "job_id": JOB_ID}
    assert kwargs["hook_params"] == {"correlation_id": correlation_id_for(context)}
    assert kwargs["cancel_on_kill"] is False  # a sensor never cancels
    assert api.request_history[-1].headers["X-Correlation-ID"] == correlation_id_for(context)


def test_deferred_timeout_is_a_sensor_timeout():
    from airflow_provider_pipelines._compat import AirflowSensorTimeout

    with pytest.raises(AirflowSensorTimeout, match="left running"):
        sensor(deferrable=True).execute_complete({"ti": FakeTI()}, event={
            "status": "timeout", "kind": "here.pipeline_job", "message": "Timed out; left running."})
