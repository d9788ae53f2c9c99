"""``CogniteExtractionPipelineRunOperator`` and ``CogniteExtractionPipelineRunSensor`` (poke and deferrable).

HTTP goes to :class:`~tests.unit.test_cognite_extpipes.FakeExtpipes` behind ``requests-mock``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest
from airflow.exceptions import AirflowSensorTimeout
from airflow.sdk import DAG, PokeReturnValue

from airflow_provider_pipelines._compat import (
    AIRFLOW_V_3_3_PLUS,
    AirflowException,
    AirflowFailException,
    TaskDeferred,
    mask_secret,
)
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.cognite import TRUNCATION_MARKER, to_epoch_ms
from airflow_provider_pipelines.jobs.base import JobFailedError
from airflow_provider_pipelines.operators.cognite import CogniteExtractionPipelineRunOperator
from airflow_provider_pipelines.sensors.cognite import (
    CogniteExtractionPipelineRunSensor,
    ExtractionRunFailedError,
    default_created_after,
)
from airflow_provider_pipelines.triggers.cognite import CogniteExtractionPipelineRunTrigger
from tests.unit.test_cognite_extpipes import (
    ACCESS_TOKEN,
    CLIENT_SECRET,
    T0,
    XID,
    FakeExtpipes,
    install_fake,
    log_reader,
    no_check_delay,
)

INTERVAL_START = pendulum.datetime(2025, 1, 1, tz="UTC")
INTERVAL_END = pendulum.datetime(2025, 1, 2, tz="UTC")
STATE_KEY = CogniteExtractionPipelineRunOperator.STATE_KEY


#: Tests of the Airflow 3.3 task state store; older releases adopt the vendor's active run
#: instead (that side: tests/unit/test_version_compat.py).
state_store_only = pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS,
                                      reason="the task state store exists from Airflow 3.3")


@pytest.fixture(autouse=True)
def _no_check_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    no_check_delay(monkeypatch)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Any:
    return log_reader(caplog, capsys)


@pytest.fixture
def fake(requests_mock: Any, conn_env: Any) -> FakeExtpipes:
    return install_fake(requests_mock, conn_env)


class FakeStateStore:
    """Airflow 3.3's task state store: survives task retries (XCom does not)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        json.dumps(value)
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def context(store: FakeStateStore | None = None, **extra: Any) -> dict[str, Any]:
    ti = SimpleNamespace(try_number=1, xcom_push=lambda **kw: None)
    ctx: dict[str, Any] = {"ti": ti, "task_instance": ti, "data_interval_start": INTERVAL_START,
                           "data_interval_end": INTERVAL_END, "logical_date": INTERVAL_START,
                           "dag_run": SimpleNamespace(run_after=INTERVAL_END, start_date=INTERVAL_END)}
    if store is not None:
        ctx["task_state_store"] = store
    ctx.update(extra)
    return ctx


def render(task: Any, **values: Any) -> None:
    """Render the task's template fields the way Airflow does before ``execute``."""
    task.render_template_fields({"params": {}, **values})


# --------------------------------------------------------------------------------------------
# Operator
# --------------------------------------------------------------------------------------------


class TestOperatorConstruction:
    @pytest.mark.parametrize("kwargs, match", [
        ({"status": "ok"}, "status must be one of success, failure, seen"),
        ({"status": "Success"}, "lower case"),
        ({"external_id": ""}, "external_id"),
        ({"external_id": "x" * 256}, "at most 255"),
        ({"created_time": -5}, "must not be negative"),
        ({"created_time": datetime(2025, 1, 1)}, "timezone-aware"),
        ({"created_time": "tomorrow"}, "neither epoch milliseconds"),
        ({"message": {"rows": 3}}, "message must be a string"),
    ])
    def test_bad_input_fails_at_parse_time(self, kwargs: dict[str, Any], match: str) -> None:
        args = {"task_id": "report", "external_id": XID, "status": "success", **kwargs}
        with pytest.raises(ValueError, match=match):
            CogniteExtractionPipelineRunOperator(**args)

    def test_templates_are_checked_later(self) -> None:
        op = CogniteExtractionPipelineRunOperator(
            task_id="report", external_id="{{ params.xid }}", status="{{ params.status }}",
            created_time="{{ data_interval_end }}", message="{{ ti.task_id }} done")
        assert op.template_fields == ("external_id", "status", "message", "created_time", "cognite_conn_id")

    def test_bad_rendered_status_fails_before_any_request(
        self, fake: FakeExtpipes, requests_mock: Any
    ) -> None:
        with DAG("d", schedule=None, start_date=INTERVAL_START):
            op = CogniteExtractionPipelineRunOperator(task_id="report", external_id=XID,
                                                      status="{{ params.status }}")
        render(op, params={"status": "done"})
        with pytest.raises(ValueError, match="status must be one of success, failure, seen, got 'done'"):
            op.execute(context())
        assert requests_mock.request_history == []

    def test_bad_rendered_created_time_fails_before_any_request(
        self, fake: FakeExtpipes, requests_mock: Any
    ) -> None:
        with DAG("d", schedule=None, start_date=INTERVAL_START):
            op = CogniteExtractionPipelineRunOperator(task_id="report", external_id=XID, status="success",
                                                      created_time="{{ params.when }}")
        render(op, params={"when": "next tuesday"})
        with pytest.raises(ValueError, match="created_time 'next tuesday' is neither"):
            op.execute(context())
        assert requests_mock.request_history == []


class TestOperatorExecute:
    def test_reports_and_returns_the_run(self, fake: FakeExtpipes) -> None:
        op = CogniteExtractionPipelineRunOperator(task_id="report", external_id=XID, status="success",
                                                  message="loaded 12 rows", created_time=T0)
        run = op.execute(context())
        assert run == {"externalId": XID, "id": 100, "status": "success", "message": "loaded 12 rows",
                       "createdTime": T0}
        json.dumps(run)
        assert fake.calls_to("create") == [{"items": [{"externalId": XID, "status": "success",
                                                       "message": "loaded 12 rows", "createdTime": T0}]}]

    def test_backfill_reports_its_own_interval_end(self, fake: FakeExtpipes) -> None:
        with DAG("d", schedule=None, start_date=INTERVAL_START):
            op = CogniteExtractionPipelineRunOperator(
                task_id="report", external_id="{{ params.xid }}", status="{{ params.status }}",
                message="interval {{ data_interval_start }} - {{ data_interval_end }}",
                created_time="{{ data_interval_end }}")
        render(op, params={"xid": XID, "status": "seen"}, data_interval_start=INTERVAL_START,
               data_interval_end=INTERVAL_END)
        op.execute(context())
        sent = fake.calls_to("create")[0]["items"][0]
        assert sent["createdTime"] == to_epoch_ms(INTERVAL_END) == T0 + 86_400_000
        assert sent["status"] == "seen"
        assert sent["message"] == "interval 2025-01-01 00:00:00+00:00 - 2025-01-02 00:00:00+00:00"

    def test_native_rendering_gives_a_datetime(self, fake: FakeExtpipes) -> None:
        with DAG("d", schedule=None, start_date=INTERVAL_START, render_template_as_native_obj=True):
            op = CogniteExtractionPipelineRunOperator(task_id="report", external_id=XID, status="success",
                                                      created_time="{{ data_interval_end }}")
        render(op, data_interval_end=INTERVAL_END)
        assert isinstance(op.created_time, datetime)
        op.execute(context())
        assert fake.calls_to("create")[0]["items"][0]["createdTime"] == T0 + 86_400_000

    def test_default_created_time_is_explicit_now(self, fake: FakeExtpipes) -> None:
        before = to_epoch_ms(datetime.now(timezone.utc))
        op = CogniteExtractionPipelineRunOperator(task_id="r", external_id=XID, status="success")
        op.execute(context())
        sent = fake.calls_to("create")[0]["items"][0]
        assert before <= sent["createdTime"] <= to_epoch_ms(datetime.now(timezone.utc))
        assert "message" not in sent

    def test_long_message_is_truncated_visibly(self, fake: FakeExtpipes) -> None:
        op = CogniteExtractionPipelineRunOperator(task_id="r", external_id=XID, status="failure",
                                                  message="trace line\n" * 500, created_time=T0)
        run = op.execute(context())
        sent = fake.calls_to("create")[0]["items"][0]["message"]
        assert len(sent) == 1000 and sent.endswith(TRUNCATION_MARKER) and run["message"] == sent

    @pytest.mark.parametrize("action", ["503+created", "timeout+created"])
    def test_lost_answer_is_not_doubled(self, fake: FakeExtpipes, action: str) -> None:
        fake.create_script = [action]
        store = FakeStateStore()
        op = CogniteExtractionPipelineRunOperator(task_id="r", external_id=XID, status="success",
                                                  created_time=T0)
        run = op.execute(context(store))
        assert len(fake.runs[XID]) == 1 and len(fake.calls_to("create")) == 1 and run["id"] == 100
        assert store.values == {}  # settled: nothing left for a retry to check

    @pytest.mark.parametrize("action", ["503", "timeout"])
    def test_lost_request_is_not_lost(self, fake: FakeExtpipes, action: str) -> None:
        fake.create_script = [action]
        op = CogniteExtractionPipelineRunOperator(task_id="r", external_id=XID, status="failure",
                                                  created_time=T0)
        op.execute(context())
        assert len(fake.runs[XID]) == 1 and len(fake.calls_to("create")) == 2

    @state_store_only
    def test_retry_checks_the_earlier_try_first(self, fake: FakeExtpipes) -> None:
        # try 1: the create times out after CDF recorded it, and the check fails too -> unknown
        fake.create_script = ["timeout+created"]
        fake.list_script = ["500"]
        store = FakeStateStore()
        op = CogniteExtractionPipelineRunOperator(task_id="r", external_id=XID, status="success", message="m")
        with pytest.raises(AirflowException, match="is unknown"):
            op.execute(context(store))
        pending = store.values[STATE_KEY]
        assert pending["status"] == "success" and pending["createdTime"] == fake.runs[XID][0]["createdTime"]
        # try 2 (a new operator instance, as after a real retry): finds it, sends nothing
        op2 = CogniteExtractionPipelineRunOperator(task_id="r", external_id=XID, status="success",
                                                   message="m")
        run = op2.execute(context(store))
        assert run["id"] == fake.runs[XID][0]["id"]
        assert len(fake.calls_to("create")) == 1 and len(fake.runs[XID]) == 1
        assert store.values == {}

    @state_store_only
    def test_retry_sends_with_the_same_created_time_when_absent(self, fake: FakeExtpipes) -> None:
        store = FakeStateStore()
        store.set(STATE_KEY, {"externalId": XID, "status": "success", "createdTime": T0})
        op = CogniteExtractionPipelineRunOperator(task_id="r", external_id=XID, status="success")
        op.execute(context(store))
        assert fake.calls_to("create")[0]["items"][0]["createdTime"] == T0
        assert len(fake.calls_to("list")) == 1  # checked first

    def test_a_different_report_is_not_confused_with_a_pending_one(self, fake: FakeExtpipes) -> None:
        store = FakeStateStore()
        store.set(STATE_KEY, {"externalId": XID, "status": "failure", "createdTime": T0})
        op = CogniteExtractionPipelineRunOperator(task_id="r", external_id=XID, status="success")
        op.execute(context(store))
        assert fake.calls_to("list") == [] and fake.calls_to("create")[0]["items"][0]["createdTime"] != T0

    def test_refusal_fails_and_forgets(self, fake: FakeExtpipes) -> None:
        fake.create_script = ["400"]
        store = FakeStateStore()
        op = CogniteExtractionPipelineRunOperator(task_id="r", external_id=XID, status="success")
        with pytest.raises(ApiError, match="HTTP 400: Extraction pipeline refused the run"):
            op.execute(context(store))
        assert store.values == {}

    def test_secrets_never_leak(self, fake: FakeExtpipes, logs: Any) -> None:
        variable_secret = "db-password-4417aa"
        mask_secret(variable_secret)
        fake.create_script = ["503", "503", "503"]
        op = CogniteExtractionPipelineRunOperator(task_id="r", external_id=XID, status="failure",
                                                  message=f"login failed with {variable_secret}")
        with pytest.raises(AirflowException) as info:
            op.execute(context())
        sent = fake.calls_to("create")[0]["items"][0]["message"]
        assert sent == "login failed with ***"
        fake.create_script = []
        run = op.execute(context())
        text = logs()
        assert "Reported the 'failure' run of extraction pipeline 'extractor'" in text  # the log is captured
        for secret in (CLIENT_SECRET, ACCESS_TOKEN, variable_secret):
            assert secret not in text
            assert secret not in str(info.value)
            assert secret not in json.dumps(run)
            assert secret not in json.dumps({f: str(getattr(op, f)) for f in op.template_fields
                                             if f != "message"})


# --------------------------------------------------------------------------------------------
# Sensor
# --------------------------------------------------------------------------------------------


def sensor(**kwargs: Any) -> CogniteExtractionPipelineRunSensor:
    args: dict[str, Any] = {"task_id": "wait", "external_id": XID, "poke_interval": 5, "timeout": 60}
    args.update(kwargs)
    return CogniteExtractionPipelineRunSensor(**args)


class TestSensorConstruction:
    @pytest.mark.parametrize("kwargs, match", [
        ({"statuses": ["done"]}, "statuses must be one of"),
        ({"statuses": []}, "at least one run status"),
        ({"failure_statuses": ["failed"]}, "failure_statuses must be one of"),
        ({"statuses": ["success"], "failure_statuses": ["success"]}, "must not share"),
        ({"created_after": "soon"}, "created_after 'soon' is neither"),
        ({"external_id": ""}, "external_id"),
        ({"poke_interval": 0}, "poke_interval"),
        ({"timeout": -1}, "timeout"),
    ])
    def test_bad_input_fails_at_parse_time(self, kwargs: dict[str, Any], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            sensor(**kwargs)

    def test_single_status_string(self) -> None:
        assert sensor(statuses="seen", failure_statuses=()).statuses == ["seen"]


class TestSensorPoke:
    def test_waits_then_returns_the_run(self, fake: FakeExtpipes) -> None:
        s = sensor()
        assert s.poke(context()) is False
        fake.add_run("success", to_epoch_ms(INTERVAL_START) + 10, "done")
        result = s.poke(context())
        assert isinstance(result, PokeReturnValue) and result.is_done
        assert result.xcom_value == {"externalId": XID, "id": 100, "status": "success",
                                     "createdTime": to_epoch_ms(INTERVAL_START) + 10, "message": "done"}

    def test_runs_before_the_data_interval_do_not_count(self, fake: FakeExtpipes) -> None:
        fake.add_run("success", to_epoch_ms(INTERVAL_START) - 1)
        assert sensor().poke(context()) is False
        assert fake.calls_to("list")[0]["filter"]["createdTime"] == {"min": to_epoch_ms(INTERVAL_START)}

    def test_failure_first_fails_fast_without_retry(self, fake: FakeExtpipes) -> None:
        fake.add_run("failure", to_epoch_ms(INTERVAL_START) + 1, "source unreachable")
        fake.add_run("success", to_epoch_ms(INTERVAL_START) + 2)
        expected = r"reported 'failure' .* source unreachable"
        with pytest.raises(ExtractionRunFailedError, match=expected) as info:
            sensor().poke(context())
        assert isinstance(info.value, AirflowFailException) and isinstance(info.value, JobFailedError)

    def test_failure_through_execute_and_soft_fail(self, fake: FakeExtpipes) -> None:
        from airflow_provider_pipelines._compat import AirflowSkipException

        fake.add_run("failure", to_epoch_ms(INTERVAL_START) + 1, "boom")
        with pytest.raises(ExtractionRunFailedError):
            sensor().execute(context())
        with pytest.raises(AirflowSkipException):
            sensor(soft_fail=True).execute(context())

    def test_explicit_and_templated_created_after(self, fake: FakeExtpipes) -> None:
        with DAG("d", schedule=None, start_date=INTERVAL_START):
            s = sensor(created_after="{{ data_interval_end }}", external_id="{{ params.xid }}")
        render(s, params={"xid": XID}, data_interval_end=INTERVAL_END)
        s.poke(context())
        assert fake.calls_to("list")[0]["filter"]["createdTime"] == {"min": to_epoch_ms(INTERVAL_END)}
        sensor(created_after=T0 + 5).poke(context())
        assert fake.calls_to("list")[1]["filter"]["createdTime"] == {"min": T0 + 5}

    def test_bad_rendered_values_fail_before_any_request(
        self, fake: FakeExtpipes, requests_mock: Any
    ) -> None:
        with DAG("d", schedule=None, start_date=INTERVAL_START):
            s = sensor(created_after="{{ params.since }}")
        render(s, params={"since": "None"})
        with pytest.raises(ValueError, match="created_after 'None'"):
            s.poke(context())
        assert requests_mock.request_history == []

    def test_default_created_after(self) -> None:
        assert default_created_after(context()) == INTERVAL_START
        no_interval = context(data_interval_start=None)
        assert default_created_after(no_interval) == INTERVAL_START  # the logical date
        run_only = context(data_interval_start=None, logical_date=None)
        assert default_created_after(run_only) == INTERVAL_END  # dag_run.run_after
        with pytest.raises(ValueError, match="set created_after"):
            default_created_after({"dag_run": None})

    def test_manual_run_without_logical_date_does_not_count_old_runs(self, fake: FakeExtpipes) -> None:
        fake.add_run("success", T0)  # long before the run was due
        ctx = context(data_interval_start=None, logical_date=None)
        assert sensor().poke(ctx) is False


class TestSensorDeferrable:
    def test_defers_with_json_kwargs_and_no_secrets(self, fake: FakeExtpipes) -> None:
        s = sensor(deferrable=True, poke_interval=7, timeout=120)
        with pytest.raises(TaskDeferred) as info:
            s.execute(context())
        trigger = info.value.trigger
        assert isinstance(trigger, CogniteExtractionPipelineRunTrigger)
        assert info.value.method_name == "execute_complete" and info.value.timeout is None
        path, kwargs = trigger.serialize()
        assert path == "airflow_provider_pipelines.triggers.cognite.CogniteExtractionPipelineRunTrigger"
        assert kwargs["ref"] == {"external_id": XID, "statuses": ["success"], "failure_statuses": ["failure"],
                                 "created_after": to_epoch_ms(INTERVAL_START)}
        assert kwargs["conn_id"] == "cognite_default" and kwargs["poll_interval"] == 7
        text = json.dumps(kwargs)
        assert CLIENT_SECRET not in text and ACCESS_TOKEN not in text

    def test_already_reported_does_not_defer(self, fake: FakeExtpipes) -> None:
        fake.add_run("success", to_epoch_ms(INTERVAL_START) + 3)
        assert sensor(deferrable=True).execute(context())["id"] == 100

    def test_execute_complete(self) -> None:
        s = sensor(deferrable=True)
        r = {"external_id": XID, "statuses": ["success"], "failure_statuses": ["failure"],
             "created_after": T0}
        run = {"externalId": XID, "id": 9, "status": "success", "createdTime": T0 + 1}
        ok = {"status": "success", "kind": "cognite.extraction_pipeline_report", "ref": r, "state": "success",
              "message": None, "result": {"external_id": XID, "run": run}}
        assert s.execute_complete(context(), ok) == run
        failed = {**ok, "status": "failed", "state": "failure", "message": "disk full",
                  "result": {"external_id": XID, "run": {**run, "status": "failure"}}}
        with pytest.raises(ExtractionRunFailedError, match="disk full"):
            s.execute_complete(context(), failed)
        with pytest.raises(AirflowSensorTimeout, match="Timed out"):
            s.execute_complete(context(), {**ok, "status": "timeout", "message": "Timed out after 60 s"})
        with pytest.raises(AirflowException, match="HTTP 403"):
            s.execute_complete(context(), {**ok, "status": "error", "message": "Cognite API: HTTP 403"})
        with pytest.raises(AirflowException, match="Unexpected trigger event"):
            s.execute_complete(context(), {"status": "weird"})
