"""Bad input fails before any remote call, with a message that says what to fix.

Literal arguments are checked when the operator is built (at DAG parse time); templated ones after
rendering, before the first request; connection fields when the hook resolves its connection,
before the first request. ``requests_mock`` has nothing registered, so any request would fail the
test with ``NoMockAddress``; each test also asserts that none was attempted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from airflow_provider_pipelines._compat import AirflowException
from airflow_provider_pipelines.callbacks.cognite import CogniteExtractionPipelineRunCallback
from airflow_provider_pipelines.operators.cognite import (
    CogniteAdvancedJoinQualityOperator,
    CogniteEntityMatchingPipelineRunOperator,
    CogniteExtractionPipelineRunOperator,
)
from airflow_provider_pipelines.operators.edge_impulse import EdgeImpulseRunPipelineOperator
from airflow_provider_pipelines.operators.here import HereSchedulePipelineVersionOperator
from airflow_provider_pipelines.sensors.cognite import (
    CogniteAdvancedJoinQualitySensor,
    CogniteEntityMatchingPipelineRunSensor,
    CogniteExtractionPipelineRunSensor,
)
from airflow_provider_pipelines.sensors.edge_impulse import EdgeImpulsePipelineRunSensor
from airflow_provider_pipelines.sensors.here import HerePipelineJobSensor
from tests.reliability.conftest import make_context

P = "5f2b5b1e-0000-4000-8000-000000000001"
V = "5f2b5b1e-0000-4000-8000-0000000000a1"
MATCHER = {"type": "raw", "dbName": "db", "tableName": "t", "fromColumnKey": "f", "toColumnKey": "t"}
CATALOGS = {"weather": {"processingType": "changes", "version": 75}}
LONG = "x" * 256


def em(**kw: Any) -> Any:
    return CogniteEntityMatchingPipelineRunOperator(task_id="t", **{"pipeline_id": 1, **kw})


def em_sensor(**kw: Any) -> Any:
    return CogniteEntityMatchingPipelineRunSensor(task_id="t", **{"pipeline_id": 1, "job_id": 5, **kw})


def eq(**kw: Any) -> Any:
    return CogniteAdvancedJoinQualityOperator(
        task_id="t", **{"advanced_join_external_id": "my.join", "matcher": MATCHER, **kw})


def eq_sensor(**kw: Any) -> Any:
    return CogniteAdvancedJoinQualitySensor(task_id="t", **{"job_id": "2c6f0000-uuid", **kw})


def report(**kw: Any) -> Any:
    return CogniteExtractionPipelineRunOperator(
        task_id="t", **{"external_id": "pipe", "status": "success", **kw})


def report_sensor(**kw: Any) -> Any:
    return CogniteExtractionPipelineRunSensor(task_id="t", **{"external_id": "pipe", **kw})


def callback(**kw: Any) -> Any:
    return CogniteExtractionPipelineRunCallback(**{"external_id": "pipe", **kw})


def ei(**kw: Any) -> Any:
    return EdgeImpulseRunPipelineOperator(task_id="t", **{"organization_id": 1, "pipeline_id": 12, **kw})


def ei_sensor(**kw: Any) -> Any:
    return EdgeImpulsePipelineRunSensor(
        task_id="t", **{"organization_id": 1, "pipeline_id": 12, "run_id": 1001, **kw})


def here(**kw: Any) -> Any:
    return HereSchedulePipelineVersionOperator(
        task_id="t", **{"pipeline_id": P, "pipeline_version_id": V, **kw})


def here_sensor(**kw: Any) -> Any:
    return HerePipelineJobSensor(task_id="t", **{"pipeline_id": P, "pipeline_version_id": V, **kw})


#: (id, builder, expected message) — each fails when the task is built
AT_CONSTRUCTION: list[tuple[str, Callable[[], Any], str]] = [
    # intervals and timeouts, on every kind of task
    *[(f"{name}-poll_interval-{value}", lambda b=b, v=value: b(poll_interval=v),
       r"poll_interval must be a positive number of seconds, got")
      for name, b in (("em", em), ("eq", eq), ("ei", ei), ("here", here))
      for value in (0, -5, "10", float("nan"))],
    ("em-max_poll_interval", lambda: em(max_poll_interval=-1),
     r"max_poll_interval must be a positive number"),
    ("em-timeout-zero", lambda: em(timeout=0), r"timeout must be a positive number of seconds, got 0"),
    ("ei-timeout-negative", lambda: ei(timeout=timedelta(seconds=-3)), r"timeout must be a positive number"),
    *[(f"{name}-poke_interval-{value}", lambda b=b, v=value: b(poke_interval=v),
       r"poke_interval must be a positive number of seconds")
      for name, b in (("em_sensor", em_sensor), ("eq_sensor", eq_sensor), ("report_sensor", report_sensor),
                      ("ei_sensor", ei_sensor), ("here_sensor", here_sensor)) for value in (0, -1)],
    ("here_sensor-timeout", lambda: here_sensor(timeout=0), r"timeout must be a positive number of seconds"),
    # Cognite entity matching ids
    ("em-pipeline_id-text", lambda: em(pipeline_id="abc"), r"pipeline_id must be an integer id, got 'abc'"),
    ("em-pipeline_id-zero", lambda: em(pipeline_id=0), r"pipeline_id must be between 1 and 9007199254740991"),
    ("em-pipeline_id-bool", lambda: em(pipeline_id=True), r"pipeline_id must be an integer id, got True"),
    ("em-pipeline_id-huge", lambda: em(pipeline_id=2**53), r"pipeline_id must be between 1 and"),
    ("em_sensor-job_id", lambda: em_sensor(job_id="run-5"), r"job_id must be an integer id, got 'run-5'"),
    # Cognite advanced joins: external id, matcher, minimum scores
    ("eq-external_id-empty", lambda: eq(advanced_join_external_id=""),
     r"advanced_join_external_id must be a non-empty string"),
    ("eq-external_id-blank", lambda: eq(advanced_join_external_id="   "),
     r"advanced_join_external_id must be a non-empty string"),
    ("eq-external_id-oversized", lambda: eq(advanced_join_external_id=LONG),
     r"advanced_join_external_id must be at most 255 characters, got 256"),
    ("eq-matcher-list", lambda: eq(matcher=["raw"]), r"matcher must be a dict like \{'type': 'raw'"),
    ("eq-matcher-bad-json", lambda: eq(matcher="{bad json"), r"matcher must be a dict \(or a JSON object\)"),
    ("eq-matcher-type", lambda: eq(matcher={**MATCHER, "type": "sql"}),
     r"matcher\['type'\] must be 'raw' \(the only matcher CDF documents\), got 'sql'"),
    ("eq-matcher-missing", lambda: eq(matcher={"type": "raw", "dbName": "db"}),
     r"matcher is missing non-empty string field\(s\) tableName, fromColumnKey, toColumnKey"),
    ("eq-matcher-empty-field", lambda: eq(matcher={**MATCHER, "tableName": " "}),
     r"missing non-empty string field\(s\) tableName"),
    ("eq-matcher-unknown", lambda: eq(matcher={**MATCHER, "where": "x"}),
     r"matcher has unknown field\(s\) where; allowed: type, dbName"),
    ("eq-min-over-100", lambda: eq(min_quality_score_percent=101),
     r"min_quality_score_percent must be between 0 and 100, got 101"),
    ("eq-min-negative", lambda: eq(min_confidence_percent=-1),
     r"min_confidence_percent must be between 0 and 100"),
    ("eq-min-text", lambda: eq(min_contextualization_score_percent="high"),
     r"min_contextualization_score_percent must be a number between 0 and 100, got 'high'"),
    ("eq-min-bool", lambda: eq(min_quality_score_percent=True),
     r"must be a number between 0 and 100, got True"),
    ("eq-gate-without-wait", lambda: eq(min_quality_score_percent=50, wait_for_completion=False),
     r"Minimum scores need wait_for_completion=True"),
    ("eq_sensor-job_id-empty", lambda: eq_sensor(job_id=""), r"job_id must be a non-empty string"),
    ("eq_sensor-min", lambda: eq_sensor(min_quality_score_percent=250),
     r"must be between 0 and 100, got 250"),
    # Cognite extraction pipelines: external id, status, message, created time
    ("report-external_id-empty", lambda: report(external_id=""),
     r"external_id must be the extraction pipeline's external id \(a non-empty string\)"),
    ("report-external_id-oversized", lambda: report(external_id=LONG),
     r"external_id must be at most 255 characters, got 256"),
    ("report-status-unknown", lambda: report(status="done"),
     r"status must be one of success, failure, seen, got 'done'"),
    ("report-status-case", lambda: report(status="SUCCESS"), r"CDF takes them in lower case: 'success'"),
    ("report-message-type", lambda: report(message=123),
     r"message must be a string \(or a template\), got int"),
    ("report-created-naive", lambda: report(created_time=datetime(2025, 1, 1)),
     r"created_time must be timezone-aware"),
    ("report-created-text", lambda: report(created_time="yesterday"),
     r"created_time 'yesterday' is neither epoch milliseconds nor an ISO-8601 date-time"),
    ("report-created-negative", lambda: report(created_time=-1), r"created_time must not be negative"),
    ("report_sensor-statuses-empty", lambda: report_sensor(statuses=[]),
     r"statuses must name at least one run status"),
    ("report_sensor-statuses-unknown", lambda: report_sensor(statuses=["done"]),
     r"statuses must be one of success, failure, seen, got 'done'"),
    ("report_sensor-overlap", lambda: report_sensor(statuses=["success", "failure"]),
     r"statuses and failure_statuses must not share a status; both contain \['failure'\]"),
    ("report_sensor-failure_statuses", lambda: report_sensor(failure_statuses=["broken"]),
     r"failure_statuses must be one of success, failure, seen, got 'broken'"),
    ("report_sensor-created_after", lambda: report_sensor(created_after="last week"),
     r"created_after 'last week' is neither epoch milliseconds nor an ISO-8601 date-time"),
    ("callback-external_id", lambda: callback(external_id=" "),
     r"external_id must be the extraction pipeline"),
    ("callback-status", lambda: callback(status="ok"), r"status must be one of success, failure, seen"),
    ("callback-exception_chars", lambda: callback(exception_chars=0),
     r"exception_chars must be a positive integer"),
    ("callback-conn_id", lambda: callback(cognite_conn_id=""), r"cognite_conn_id must be a connection id"),
    # Edge Impulse
    ("ei-organization_id-text", lambda: ei(organization_id="acme"),
     r"organization_id must be a positive integer id, got 'acme'"),
    ("ei-organization_id-zero", lambda: ei(organization_id=0), r"organization_id must be between 1 and"),
    ("ei-pipeline_id-negative", lambda: ei(pipeline_id=-12),
     r"pipeline_id must be between 1 and 9007199254740991, got -12"),
    ("ei-pipeline_id-float", lambda: ei(pipeline_id=12.5),
     r"pipeline_id must be a positive integer id, got 12.5"),
    ("ei-if_running", lambda: ei(if_running="sometimes"),
     r"if_running must be one of 'wait', 'fail', 'start_new', got 'sometimes'"),
    ("ei-ignore_last", lambda: ei(ignore_last_successful_run="maybe"),
     r"ignore_last_successful_run must be True or False"),
    ("ei-fail_on_import_errors", lambda: ei(fail_on_import_errors="yes"),
     r"fail_on_import_errors must be True or False, got 'yes'"),
    ("ei-cancel_on_kill", lambda: ei(cancel_on_kill=1), r"cancel_on_kill must be True or False, got 1"),
    ("ei_sensor-run_id", lambda: ei_sensor(run_id="latest"),
     r"run_id must be a positive integer id, got 'latest'"),
    # HERE: ids, catalog versions, runAsId
    ("here-pipeline_id", lambda: here(pipeline_id="weather-batch"),
     r"pipeline_id must be a HERE UUID like '00112233-4455-6677-8899-aabbccddeeff', got 'weather-batch'"),
    ("here-pipeline_id-hrn", lambda: here(pipeline_id=f"hrn:here:pipeline::org:{P}"),
     rf"pipeline_id must be the UUID, not the HRN: use '{P}'"),
    ("here-version_id", lambda: here(pipeline_version_id="v2"), r"pipeline_version_id must be a HERE UUID"),
    ("here-catalogs-empty", lambda: here(input_catalogs={}),
     r"input_catalogs must name at least one catalog"),
    ("here-catalogs-list", lambda: here(input_catalogs=["weather"]), r"input_catalogs must be a dict like"),
    ("here-catalogs-bad-json", lambda: here(input_catalogs="{weather"),
     r"input_catalogs must be a dict \(or a JSON object\)"),
    ("here-catalog-id", lambda: here(input_catalogs={"my catalog": CATALOGS["weather"]}),
     r"a catalog id is the template's symbolic id \(letters, digits, _ and -\)"),
    ("here-processing-type",
     lambda: here(input_catalogs={"weather": {"processingType": "full", "version": 1}}),
     r"\['processingType'\] must be one of changes, reprocess, no_changes, got 'full'"),
    ("here-version-missing", lambda: here(input_catalogs={"weather": {"processingType": "changes"}}),
     r"needs an integer 'version'"),
    ("here-version-negative",
     lambda: here(input_catalogs={"weather": {"processingType": "changes", "version": -1}}),
     r"\['version'\] must be between 0 and 9223372036854775807, got -1"),
    ("here-version-float",
     lambda: here(input_catalogs={"weather": {"processingType": "changes", "version": 7.5}}),
     r"\['version'\] must be an integer catalog version, got 7.5"),
    ("here-since-after-version", lambda: here(input_catalogs={
        "weather": {"processingType": "changes", "version": 5, "sinceVersion": 9}}),
     r"sinceVersion 9 is after version 5"),
    ("here-catalog-unknown-key", lambda: here(input_catalogs={
        "weather": {"processingType": "changes", "version": 5, "latest": True}}),
     r"has unknown key\(s\) latest; allowed: processingType, version, sinceVersion"),
    ("here-output-without-input", lambda: here(output_catalog={"baseVersion": 1}),
     r"output_catalog only applies to a one-time run: give input_catalogs too"),
    ("here-output-keys", lambda: here(input_catalogs=CATALOGS, output_catalog={"base": 1}),
     r"output_catalog must be exactly \{'baseVersion': <int>\}, got keys \['base'\]"),
    ("here-output-negative", lambda: here(input_catalogs=CATALOGS, output_catalog={"baseVersion": -2}),
     r"output_catalog\['baseVersion'\] must be between 0 and"),
    ("here-run_as_id", lambda: here(run_as_id="me"), r"run_as_id must be an app HRN like"),
    ("here-high_availability", lambda: here(high_availability="yes"),
     r"high_availability must be True, False or None, got 'yes'"),
    ("here-wait_for_job", lambda: here(wait_for_job=True, wait_for_completion=False),
     r"wait_for_job=True needs wait_for_completion=True"),
    ("here_sensor-job_id", lambda: here_sensor(job_id="latest"), r"job_id must be a HERE UUID"),
]


@pytest.mark.parametrize(("build", "message"), [pytest.param(b, m, id=i) for i, b, m in AT_CONSTRUCTION])
def test_rejected_when_the_task_is_built(requests_mock: Any, build: Callable[[], Any], message: str) -> None:
    with pytest.raises((ValueError, AirflowException), match=message):
        build()
    assert requests_mock.request_history == []


#: (id, builder with templated arguments, rendered params, expected message): rejected after rendering
AFTER_RENDERING: list[tuple[str, Callable[[], Any], dict[str, Any], str]] = [
    ("em-pipeline_id", lambda: em(pipeline_id="{{ params.v }}"), {"v": "abc"},
     r"pipeline_id must be an integer id, got 'abc'"),
    ("em_sensor-job_id", lambda: em_sensor(job_id="{{ params.v }}"), {"v": ""},
     r"job_id must be an integer id"),
    ("eq-external_id", lambda: eq(advanced_join_external_id="{{ params.v }}"), {"v": LONG},
     r"advanced_join_external_id must be at most 255 characters"),
    ("eq-matcher", lambda: eq(matcher="{{ params.v }}"), {"v": json.dumps({"type": "raw"})},
     r"matcher is missing non-empty string field\(s\) dbName"),
    ("eq-threshold", lambda: eq(min_quality_score_percent="{{ params.v }}"), {"v": "lots"},
     r"min_quality_score_percent must be a number between 0 and 100, got 'lots'"),
    ("report-status", lambda: report(status="{{ params.v }}"), {"v": "Failed"},
     r"status must be one of success, failure, seen, got 'Failed'"),
    ("report-external_id", lambda: report(external_id="{{ params.v }}"), {"v": ""},
     r"external_id must be the extraction pipeline's external id"),
    ("report-created_time", lambda: report(created_time="{{ params.v }}"), {"v": "soon"},
     r"created_time 'soon' is neither epoch milliseconds nor an ISO-8601 date-time"),
    ("report_sensor-created_after", lambda: report_sensor(created_after="{{ params.v }}"), {"v": "never"},
     r"created_after 'never' is neither epoch milliseconds"),
    ("ei-pipeline_id", lambda: ei(pipeline_id="{{ params.v }}"), {"v": "nightly"},
     r"pipeline_id must be a positive integer id, got 'nightly'"),
    ("ei-ignore_last", lambda: ei(ignore_last_successful_run="{{ params.v }}"), {"v": "perhaps"},
     r"ignore_last_successful_run must be True or False"),
    ("ei_sensor-run_id", lambda: ei_sensor(run_id="{{ params.v }}"), {"v": "None"},
     r"run_id must be a positive integer id, got 'None'"),
    ("here-version_id", lambda: here(pipeline_version_id="{{ params.v }}"), {"v": "v7"},
     r"pipeline_version_id must be a HERE UUID"),
    ("here-catalogs", lambda: here(input_catalogs="{{ params.v }}"),
     {"v": json.dumps({"weather": {"processingType": "changes", "version": "-4"}})},
     r"must be between 0 and 9223372036854775807, got '-4'"),
    ("here-catalog-version", lambda: here(input_catalogs={
        "weather": {"processingType": "changes", "version": "{{ params.v }}"}}), {"v": "latest"},
     r"\['version'\] must be an integer catalog version, got 'latest'"),
    ("here-run_as_id", lambda: here(run_as_id="{{ params.v }}"), {"v": "someone"},
     r"run_as_id must be an app HRN"),
    ("here_sensor-job_id", lambda: here_sensor(job_id="{{ params.v }}"), {"v": "the-last-one"},
     r"job_id must be a HERE UUID"),
]


@pytest.fixture
def https_connections(conn_env: Any) -> None:
    """Valid connections to hosts that do not exist: any request would be a bug of the test subject."""
    conn_env("cognite_default", conn_type="cognite", host="https://cdf.invalid", login="id",
             password="bad-input-client-secret",
             extra={"project": "p", "token_url": "https://login.invalid/t/oauth2/v2.0/token"})
    conn_env("edge_impulse_default", conn_type="edge_impulse", host="https://studio.invalid",
             password="ei_key")
    conn_env("here_default", conn_type="here_platform", host="https://pipelines.invalid/pipeline-service",
             login="AKID", password="bad-input-here-secret",
             extra={"token_endpoint_url": "https://account.invalid/oauth2/token"})


@pytest.mark.parametrize(("build", "params", "message"),
                         [pytest.param(b, p, m, id=i) for i, b, p, m in AFTER_RENDERING])
def test_rejected_after_rendering_before_any_request(
    requests_mock: Any, https_connections: None, build: Callable[[], Any], params: dict[str, Any],
    message: str,
) -> None:
    task = build()  # a template is accepted when the DAG is parsed
    ctx = {**make_context(), "params": params}
    task.render_template_fields(ctx)
    with pytest.raises((ValueError, AirflowException), match=message):
        task.execute(ctx)
    assert requests_mock.request_history == []


def test_callback_with_a_bad_rendered_value_reports_nothing(
    requests_mock: Any, https_connections: None, capfd: pytest.CaptureFixture[str]
) -> None:
    """A callback never raises: a value that renders badly is logged, and nothing is sent."""
    notify = callback(external_id="{{ params.v }}")
    notify({"params": {"v": LONG}, "ti": type("TI", (), {"state": "success"})()})
    assert "external_id must be at most 255 characters" in capfd.readouterr().out
    assert requests_mock.request_history == []


@pytest.mark.parametrize(("event", "message"), [
    (None, r"Unexpected trigger event for a entity matching pipeline run: None"),
    ({"status": "finished"}, r"Unexpected trigger event .*'finished'"),
    ("success", r"Unexpected trigger event"),
])
def test_unknown_trigger_event_is_rejected(requests_mock: Any, event: Any, message: str) -> None:
    """An event the operator does not know (e.g. from a triggerer running another version) fails clearly."""
    with pytest.raises(AirflowException, match=message):
        em().execute_complete(make_context(), event)
    assert requests_mock.request_history == []


#: (id, connection JSON fields, expected message): rejected when the hook resolves the connection
BAD_CONNECTIONS: list[tuple[str, Callable[[], Any], dict[str, Any], str]] = [
    ("cognite-http-host", em, {"conn_type": "cognite", "host": "http://cdf.example.com", "password": "s",
                               "extra": {"project": "p", "token": "t"}},
     r"host 'http://cdf.example.com' must use https://"),
    ("cognite-http-token_url", em, {"conn_type": "cognite", "host": "https://cdf.example.com", "login": "id",
                                    "password": "s", "extra": {"project": "p", "token_url": "http://login.example.com/t"}},
     r"token_url 'http://login.example.com/t' must use https://"),
    ("cognite-no-project", em,
     {"conn_type": "cognite", "host": "https://cdf.example.com", "extra": {"token": "t"}},
     r"has no project in its extra. Add \{\"project\": \"<your CDF project>\"\}"),
    ("cognite-no-secret", em, {"conn_type": "cognite", "host": "https://cdf.example.com", "login": "id",
                               "extra": {"project": "p", "token_url": "https://login.example.com/t"}},
     r"has no client secret \(password\)"),
    ("cognite-read_timeout", em, {"conn_type": "cognite", "host": "https://cdf.example.com",
                                  "extra": {"project": "p", "token": "t", "read_timeout": -1}},
     r"extra 'read_timeout' must be > 0, got -1"),
    ("cognite-max_attempts", em, {"conn_type": "cognite", "host": "https://cdf.example.com",
                                  "extra": {"project": "p", "token": "t", "max_attempts": 2.5}},
     r"extra 'max_attempts' must be an integer, got 2.5"),
    ("cognite-verify_ssl", em, {"conn_type": "cognite", "host": "https://cdf.example.com",
                                "extra": {"project": "p", "token": "t", "verify_ssl": "maybe"}},
     r"extra 'verify_ssl' must be true or false, got 'maybe'"),
    ("cognite-ca_bundle", em, {"conn_type": "cognite", "host": "https://cdf.example.com",
                               "extra": {"project": "p", "token": "t", "ca_bundle": 42}},
     r"extra 'ca_bundle' must be the path of a CA bundle file, got 42"),
    ("ei-http-host", ei,
     {"conn_type": "edge_impulse", "host": "http://studio.example.com", "password": "ei_k"},
     r"host 'http://studio.example.com' must use https://"),
    ("ei-no-key", ei, {"conn_type": "edge_impulse", "host": "https://studio.example.com"},
     r"has no API key \(password\)"),
    ("ei-organization_id", ei,
     {"conn_type": "edge_impulse", "password": "ei_k", "extra": {"organization_id": "x"}},
     r"extra organization_id must be a positive integer id, got 'x'"),
    ("here-http-host", here, {"conn_type": "here_platform", "host": "http://pipelines.example.com/pipeline-service",
                              "login": "AK", "password": "s"},
     r"host 'http://pipelines.example.com/pipeline-service' must use https://"),
    ("here-http-token", here, {"conn_type": "here_platform", "login": "AK", "password": "s",
                               "extra": {"token_endpoint_url": "http://account.example.com/oauth2/token"}},
     r"token_endpoint_url 'http://account.example.com/oauth2/token' must use https://"),
    ("here-no-secret", here, {"conn_type": "here_platform", "login": "AK"},
     r"has no access key secret \(password\)"),
    ("here-backoff", here, {"conn_type": "here_platform", "login": "AK", "password": "s",
                            "extra": {"backoff_max": "soon"}},
     r"extra 'backoff_max' must be a number, got 'soon'"),
]


@pytest.mark.parametrize(("build", "conn", "message"),
                         [pytest.param(b, c, m, id=i) for i, b, c, m in BAD_CONNECTIONS])
def test_bad_connection_fails_before_any_request(
    requests_mock: Any, conn_env: Any, build: Callable[[], Any], conn: dict[str, Any], message: str
) -> None:
    conn_id = {"cognite": "cognite_default", "edge_impulse": "edge_impulse_default",
               "here_platform": "here_default"}[conn["conn_type"]]
    conn_env(conn_id, **conn)
    with pytest.raises(AirflowException, match=message):
        build().execute(make_context())
    assert requests_mock.request_history == []


def test_oversized_run_message_is_cut_not_sent_whole(requests_mock: Any, https_connections: None) -> None:
    """A run message over CDF's (inferred) 1,000-character limit is shortened with a visible marker."""
    requests_mock.post("https://login.invalid/t/oauth2/v2.0/token",
                       json={"access_token": "tok", "expires_in": 60})
    runs = requests_mock.post("https://cdf.invalid/api/v1/projects/p/extpipes/runs", status_code=201,
                              json={"items": [{"id": 1, "status": "success", "createdTime": 1}]})
    report(message="é" * 5000, created_time=1).execute(make_context())
    sent = runs.last_request.json()["items"][0]["message"]
    assert len(sent) == 1000 and sent.endswith(" …[truncated]")
