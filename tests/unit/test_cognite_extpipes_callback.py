"""``CogniteExtractionPipelineRunCallback``: deciding the status, the message, never raising, no secrets.

HTTP goes to :class:`~tests.unit.test_cognite_extpipes.FakeExtpipes` behind ``requests-mock``.
The real Airflow callback paths (a failing task and its DAG under ``airflow dags test``) are in
``tests/integration/test_cognite_extpipes_sandbox.py``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

try:  # Airflow >= 3.1
    from airflow.sdk import DagRunState, TaskInstanceState
except ImportError:  # Airflow 3.0
    from airflow.utils.state import DagRunState, TaskInstanceState  # type: ignore[no-redef]

from airflow_provider_pipelines._compat import BaseNotifier, mask_secret
from airflow_provider_pipelines.callbacks.cognite import (
    CogniteExtractionPipelineRunCallback,
    decide_status,
    describe_context,
)
from airflow_provider_pipelines.get_provider_info import get_provider_info
from airflow_provider_pipelines.hooks.cognite import to_epoch_ms
from tests.unit.test_cognite_extpipes import (
    ACCESS_TOKEN,
    CLIENT_SECRET,
    XID,
    FakeExtpipes,
    install_fake,
    log_reader,
    no_check_delay,
)

LOGICAL = pendulum.datetime(2025, 1, 1, tz="UTC")
ETL = DAG("etl", schedule=None, start_date=LOGICAL)


@pytest.fixture(autouse=True)
def _no_check_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    no_check_delay(monkeypatch)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Any:
    return log_reader(caplog, capsys)


@pytest.fixture
def fake(requests_mock: Any, conn_env: Any) -> FakeExtpipes:
    return install_fake(requests_mock, conn_env)


def task_context(state: Any = "success", exception: BaseException | None = None, try_number: int = 2,
                 **extra: Any) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="etl", task_id="extract", run_id="scheduled__2025-01-01",
                         try_number=try_number, state=state)
    ctx: dict[str, Any] = {"ti": ti, "task_instance": ti, "run_id": ti.run_id, "logical_date": LOGICAL,
                           "dag": ETL, "exception": exception,
                           "dag_run": SimpleNamespace(dag_id="etl", run_id=ti.run_id, logical_date=LOGICAL,
                                                      state="running")}
    ctx.update(extra)
    return ctx


def dag_context(reason: str, last_state: str = "failed") -> dict[str, Any]:
    ctx = task_context(state=last_state, reason=reason)
    ctx.pop("exception")
    return ctx


class TestDecideStatus:
    @pytest.mark.parametrize("ctx, expected", [
        (task_context("success"), "success"),
        (task_context(TaskInstanceState.SUCCESS), "success"),
        (task_context("failed", ValueError("x")), "failure"),
        (task_context(TaskInstanceState.UP_FOR_RETRY, ValueError("x")), "failure"),
        (task_context("failed"), "failure"),
        (task_context("upstream_failed"), "failure"),
        (task_context(TaskInstanceState.RUNNING), "seen"),  # on_execute_callback
        (task_context("skipped"), "seen"),  # on_skipped_callback
        (dag_context("success", last_state="success"), "success"),
        (dag_context("task_failure"), "failure"),
        (dag_context("timed_out", last_state="success"), "failure"),
        (dag_context("all_tasks_deadlocked"), "failure"),
        ({"dag_run": SimpleNamespace(state=DagRunState.FAILED)}, "failure"),
        ({"dag_run": SimpleNamespace(state="success")}, "success"),
        ({}, None),
        ({"ti": SimpleNamespace(state="queued")}, None),
    ])
    def test_decide(self, ctx: dict[str, Any], expected: str | None) -> None:
        assert decide_status(ctx) == expected

    def test_task_callback_from_the_dag_processor(self) -> None:
        # a heartbeat timeout: the DAG processor runs on_failure_callback with a task instance that has
        # no state, and the context has no exception key (the worker always sets one)
        ctx = task_context(None)
        del ctx["exception"]
        assert decide_status(ctx) == "failure"
        assert describe_context(ctx, "failure").endswith(
            "2025-01-01T00:00:00+00:00): the task ended without reporting an outcome (e.g. killed, or it "
            "stopped heartbeating)")
        # the worker's on_execute_callback has no exception key either, but a running task instance
        running = task_context("running")
        del running["exception"]
        assert decide_status(running) == "seen"


class TestDescribe:
    def test_task_failure(self) -> None:
        text = describe_context(task_context("failed", ValueError("bad row 17\n  in file.csv")), "failure")
        assert text == ("Airflow task etl.extract failed (run scheduled__2025-01-01, try 2, logical date "
                        "2025-01-01T00:00:00+00:00): ValueError: bad row 17 in file.csv")

    def test_retry_and_exception_shortening(self) -> None:
        ctx = task_context(TaskInstanceState.UP_FOR_RETRY, RuntimeError("x" * 2000))
        text = describe_context(ctx, "failure", exception_chars=40)
        assert "failed (will retry)" in text
        assert text.endswith(": RuntimeError: " + "x" * 25 + "…")  # 40 characters in all

    def test_task_success_start_and_skip(self) -> None:
        text = describe_context(task_context("success"), "success")
        assert text.startswith("Airflow task etl.extract succeeded (")
        assert " started (" in describe_context(task_context("running"), "seen")
        assert " was skipped (" in describe_context(task_context("skipped"), "seen")

    def test_no_logical_date(self) -> None:
        ctx = task_context("success", logical_date=None)
        ctx["dag_run"].logical_date = None
        assert describe_context(ctx, "success").endswith("try 2, no logical date)")

    def test_dag_callbacks(self) -> None:
        assert describe_context(dag_context("task_failure"), "failure") == (
            "Airflow DAG etl failed (run scheduled__2025-01-01, reason: task_failure, failed task: extract, "
            "logical date 2025-01-01T00:00:00+00:00)")
        assert describe_context(dag_context("success", "success"), "success") == (
            "Airflow DAG etl succeeded (run scheduled__2025-01-01, logical date 2025-01-01T00:00:00+00:00)")
        deadlocked = dag_context("all_tasks_deadlocked", last_state="scheduled")
        text = describe_context(deadlocked, "failure")
        assert "reason: all_tasks_deadlocked, blocked task: extract, logical" in text
        minimal = {"dag": ETL, "run_id": "manual__1", "reason": "timed_out"}
        assert describe_context(minimal, "failure") == (
            "Airflow DAG etl failed (run manual__1, reason: timed_out, no logical date)")


class TestConstruction:
    @pytest.mark.parametrize("kwargs, match", [
        ({"external_id": ""}, "external_id"),
        ({"status": "ok"}, "status must be one of"),
        ({"created_time": -1}, "must not be negative"),
        ({"message": 5}, "message must be a string"),
        ({"exception_chars": 0}, "exception_chars"),
        ({"cognite_conn_id": ""}, "cognite_conn_id"),
    ])
    def test_bad_input_fails_at_parse_time(self, kwargs: dict[str, Any], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            CogniteExtractionPipelineRunCallback(**{"external_id": XID, **kwargs})

    def test_is_an_airflow_notifier_listed_by_the_provider(self) -> None:
        assert isinstance(CogniteExtractionPipelineRunCallback(XID), BaseNotifier)
        assert get_provider_info()["notifications"] == [
            "airflow_provider_pipelines.callbacks.cognite.CogniteExtractionPipelineRunCallback"]

    def test_usable_as_task_and_dag_callbacks(self) -> None:
        from airflow.providers.standard.operators.empty import EmptyOperator

        callback = CogniteExtractionPipelineRunCallback(XID)
        with DAG("d", schedule=None, on_success_callback=callback, on_failure_callback=callback) as dag:
            EmptyOperator(task_id="t", on_success_callback=callback, on_failure_callback=callback,
                          on_execute_callback=callback)
        assert dag.has_on_failure_callback and dag.has_on_success_callback


class TestReport:
    def test_failure_report(self, fake: FakeExtpipes) -> None:
        CogniteExtractionPipelineRunCallback(XID)(task_context("failed", KeyError("order_id")))
        sent = fake.calls_to("create")[0]["items"][0]
        assert sent["status"] == "failure"
        assert sent["message"].startswith("Airflow task etl.extract failed (run scheduled__2025-01-01, try 2")
        assert sent["message"].endswith("KeyError: 'order_id'")
        assert isinstance(sent["createdTime"], int)
        assert len(fake.runs[XID]) == 1

    def test_success_report_and_seen_heartbeat(self, fake: FakeExtpipes) -> None:
        callback = CogniteExtractionPipelineRunCallback(XID)
        callback(task_context(TaskInstanceState.RUNNING))
        callback(task_context("success"))
        assert [r["status"] for r in fake.runs[XID]] == ["seen", "success"]

    def test_forced_status_message_and_time(self, fake: FakeExtpipes) -> None:
        callback = CogniteExtractionPipelineRunCallback(
            "{{ params.pipe }}", status="seen", message="{{ ti.task_id }} of {{ dag.dag_id }} is alive",
            created_time="{{ logical_date }}")
        callback(task_context("failed", ValueError("ignored"), params={"pipe": XID}))
        sent = fake.calls_to("create")[0]["items"][0]
        assert sent == {"externalId": XID, "status": "seen", "message": "extract of etl is alive",
                        "createdTime": to_epoch_ms(LOGICAL)}
        # rendering happened on a copy: the same object serves the next task or run unchanged
        assert callback.external_id == "{{ params.pipe }}" and callback.message.startswith("{{ ti.task_id }}")

    def test_renders_when_the_context_dag_cannot(self, fake: FakeExtpipes) -> None:
        # ``airflow dags test`` hands DAG callbacks the scheduler's serialized DAG (no Jinja environment)
        ctx = dag_context("task_failure")
        ctx["dag"] = SimpleNamespace(dag_id="etl")
        CogniteExtractionPipelineRunCallback(XID, message="{{ dag.dag_id }}: {{ reason }}")(ctx)
        assert fake.calls_to("create")[0]["items"][0]["message"] == "etl: task_failure"

    def test_lost_answer_is_neither_lost_nor_doubled(self, fake: FakeExtpipes) -> None:
        fake.create_script = ["503+created"]
        CogniteExtractionPipelineRunCallback(XID)(task_context("failed", ValueError("x")))
        assert len(fake.runs[XID]) == 1 and len(fake.calls_to("create")) == 1
        fake.create_script = ["timeout"]
        CogniteExtractionPipelineRunCallback(XID)(task_context("failed", ValueError("y")))
        assert len(fake.runs[XID]) == 2 and len(fake.calls_to("create")) == 3

    def test_undecidable_reports_nothing(self, fake: FakeExtpipes, logs: Any) -> None:
        CogniteExtractionPipelineRunCallback(XID)({"ti": SimpleNamespace(state="queued")})
        assert fake.calls == []
        assert "Pass status='success', 'failure' or 'seen' to force one" in logs()


class TestNeverRaises:
    def test_cdf_refusal_is_logged(self, fake: FakeExtpipes, logs: Any) -> None:
        fake.create_script = ["400"]
        CogniteExtractionPipelineRunCallback(XID)(task_context("success"))
        text = logs()
        assert "Could not report the run to CDF extraction pipeline extractor" in text
        assert "HTTP 400" in text

    def test_missing_connection_is_logged(self, requests_mock: Any, logs: Any) -> None:
        CogniteExtractionPipelineRunCallback(XID, cognite_conn_id="no_such_conn")(task_context("success"))
        text = logs()
        assert "Could not report the run" in text and "no_such_conn" in text
        assert requests_mock.request_history == []

    def test_bad_template_is_logged(self, fake: FakeExtpipes, logs: Any) -> None:
        CogniteExtractionPipelineRunCallback(XID, created_time="{{ params.when }}")(
            task_context("success", params={"when": "soon"}))
        assert fake.calls == [] and "created_time 'soon'" in logs()

    def test_wrong_call_is_logged(self, fake: FakeExtpipes, logs: Any) -> None:
        CogniteExtractionPipelineRunCallback(XID)("dag", [], [], [])
        assert fake.calls == [] and "expects to be called with the Airflow context" in logs()


class TestSecrets:
    def test_secrets_in_the_exception_are_not_sent(self, fake: FakeExtpipes, logs: Any) -> None:
        masked = "warehouse-pass-9d1e"
        mask_secret(masked)
        error = RuntimeError(f"auth failed: client_secret={CLIENT_SECRET} pwd {masked} token {ACCESS_TOKEN}")
        CogniteExtractionPipelineRunCallback(XID)(task_context("failed", error))
        message = fake.calls_to("create")[0]["items"][0]["message"]
        text = logs()
        assert "Reported 'failure' to CDF extraction pipeline 'extractor'" in text
        for secret in (CLIENT_SECRET, masked, ACCESS_TOKEN):
            assert secret not in message
            assert secret not in text
        assert "***" in message

    def test_failed_report_log_has_no_secrets(self, fake: FakeExtpipes, logs: Any) -> None:
        fake.create_script = ["503", "503", "503"]
        CogniteExtractionPipelineRunCallback(XID)(task_context("failed", ValueError(CLIENT_SECRET)))
        text = logs()
        assert "Could not report" in text
        assert CLIENT_SECRET not in text and ACCESS_TOKEN not in text
