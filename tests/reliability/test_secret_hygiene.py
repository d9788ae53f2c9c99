"""Secret hygiene: no credential ever reaches a log, an exception, an XCom, a rendered template field,
a trigger's kwargs or event, or a message sent to a vendor.

One test runs every operator, sensor, trigger and callback of the provider against the sandbox,
with credentials that appear nowhere else (the client secret, a static token, two API keys, the
HERE access key secret, the step keys Edge Impulse returns, wrong secrets on purpose, and the bearer
tokens the sandbox issues), through success and failure paths, in worker and deferred mode. Then it
scans everything the user or Airflow could see: captured logs at DEBUG (every logger), stdout and
stderr, exception texts with their tracebacks and causes, return values, pushed XComs, rendered
template fields, ``serialize()`` output of every trigger, trigger events, ``test_connection``
messages and the bodies the provider sent to the APIs.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_pipelines._compat import TaskDeferred
from airflow_provider_pipelines.callbacks.cognite import CogniteExtractionPipelineRunCallback
from airflow_provider_pipelines.hooks.cognite import CogniteHook
from airflow_provider_pipelines.hooks.edge_impulse import EdgeImpulseHook
from airflow_provider_pipelines.hooks.here import HerePipelineHook
from airflow_provider_pipelines.operators.cognite import (
    CogniteAdvancedJoinQualityOperator,
    CogniteEntityMatchingPipelineRunOperator,
    CogniteExtractionPipelineRunOperator,
)
from airflow_provider_pipelines.operators.edge_impulse import EdgeImpulseRunPipelineOperator
from airflow_provider_pipelines.operators.here import HereSchedulePipelineVersionOperator
from airflow_provider_pipelines.sandbox.config import (
    EI_PIPELINE_FAILING,
    EI_PIPELINE_NIGHTLY,
    HERE_PIPELINE_FAILING,
    HERE_PIPELINE_OK,
    HERE_VERSION_FAILING,
    HERE_VERSION_OK,
    JOIN_FAILING,
    JOIN_GOOD,
    JOIN_POOR,
)
from airflow_provider_pipelines.sandbox.server import SandboxServer
from airflow_provider_pipelines.sensors.cognite import (
    CogniteAdvancedJoinQualitySensor,
    CogniteEntityMatchingPipelineRunSensor,
    CogniteExtractionPipelineRunSensor,
)
from airflow_provider_pipelines.sensors.edge_impulse import EdgeImpulsePipelineRunSensor
from airflow_provider_pipelines.sensors.here import HerePipelineJobSensor
from tests.reliability.conftest import (
    COGNITE_SECRET,
    COGNITE_STATIC_TOKEN,
    SECRETS,
    Driver,
    connection_dicts,
    make_context,
    outcome_of,
    restore_trigger,
    scan_for_secrets,
)
from tests.reliability.test_fault_matrix import CATALOGS, EXTPIPE, MATCHER, Reporter, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WRONG_COGNITE_SECRET = "cog-WRONG-secret-Z19vQ"
WRONG_EI_KEY = "ei_WRONG_key_P44kd9"
WRONG_HERE_SECRET = "here-WRONG-secret-R55mx"
FAST = {"poll_interval": 0.05, "max_poll_interval": 0.2, "timeout": 30}
PARAMS = {"em": "1", "em_failing": "2", "join": JOIN_GOOD, "ei": str(EI_PIPELINE_NIGHTLY),
          "here_pipeline": HERE_PIPELINE_OK, "here_version": HERE_VERSION_OK, "extpipe": EXTPIPE}


class Seen:
    """Everything a user, a log reader or Airflow's database could see, by where it came from."""

    def __init__(self) -> None:
        self.items: dict[str, Any] = {}

    def add(self, where: str, value: Any) -> None:
        self.items[f"{len(self.items):03d} {where}"] = value

    def error(self, where: str, err: BaseException | None) -> None:
        if err is not None:
            self.add(f"{where}: exception", "".join(traceback.format_exception(err)) + repr(err))


def run_task(
    seen: Seen, name: str, build: Callable[[], Any], mode: str, *, expect_error: bool, ctx: dict[str, Any],
    fields: bool = True,
) -> Any:
    """Render and run one task like Airflow (re-rendering the instance that resumes), recording all.

    ``fields=False``: a task whose arguments hold a secret on purpose; its rendered fields show what
    the user wrote (Airflow's masker redacts them when it stores them), so they are not scanned.
    """

    def make() -> Any:
        task = build()
        task.render_template_fields(ctx)
        if fields:
            seen.add(f"{name}: rendered template fields", {f: getattr(task, f) for f in task.template_fields})
        return task

    run = Driver(make, ctx, mode)
    result, err = outcome_of(run.run)
    assert (err is not None) == expect_error, f"{name}: {err!r}"
    seen.add(f"{name}: return value", result)
    seen.error(name, err)
    seen.add(f"{name}: xcom", ctx["ti"].xcom)
    seen.add(f"{name}: trigger kwargs", run.serialized)
    seen.add(f"{name}: trigger events", run.events)
    if mode == "deferred":
        assert run.serialized, f"{name} did not defer"
    return result


def context() -> dict[str, Any]:
    ctx = make_context()
    ctx["params"] = PARAMS
    return ctx


class FailedTI:
    """A task instance as Airflow hands it to an ``on_failure_callback``."""

    dag_id, task_id, run_id, try_number, state = "reliability", "load", "manual__1", 2, "failed"


def test_no_secret_anywhere(
    sb: SandboxServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    seen = Seen()
    conns = connection_dicts(sb.url)
    static = copy.deepcopy(conns["cognite_default"])
    static["extra"]["token"] = COGNITE_STATIC_TOKEN
    for conn_id, fields in {
        "cognite_static": static,
        "cognite_wrong": {**conns["cognite_default"], "password": WRONG_COGNITE_SECRET},
        "edge_impulse_wrong": {**conns["edge_impulse_default"], "password": WRONG_EI_KEY},
        "here_wrong": {**conns["here_default"], "password": WRONG_HERE_SECRET},
    }.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
    reporters: list[Reporter] = []
    try:
        run_everything(sb, seen, reporters, caplog, capfd)
    finally:
        for reporter in reporters:
            reporter.cancel()


def run_everything(
    sb: SandboxServer, seen: Seen, reporters: list[Reporter], caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # ---- Cognite: entity matching ------------------------------------------------------------------
    run_task(seen, "em operator, worker", lambda: CogniteEntityMatchingPipelineRunOperator(
        task_id="em", pipeline_id="{{ params.em }}", deferrable=False, **FAST), "worker",
        expect_error=False, ctx=(em_ctx := context()))
    run_task(seen, "em operator, deferred, failing", lambda: CogniteEntityMatchingPipelineRunOperator(
        task_id="em", pipeline_id="{{ params.em_failing }}", deferrable=True, **FAST), "deferred",
        expect_error=True, ctx=context())
    run_task(seen, "em operator, static token, deferred", lambda: CogniteEntityMatchingPipelineRunOperator(
        task_id="em", pipeline_id=1, cognite_conn_id="cognite_static", deferrable=True, **FAST), "deferred",
        expect_error=False, ctx=context())
    run_task(seen, "em operator, wrong secret", lambda: CogniteEntityMatchingPipelineRunOperator(
        task_id="em", pipeline_id=1, cognite_conn_id="cognite_wrong", **FAST), "worker",
        expect_error=True, ctx=context())
    fresh = CogniteHook().run_pipeline(1)
    run_task(seen, "em sensor, deferred", lambda: CogniteEntityMatchingPipelineRunSensor(
        task_id="em_wait", pipeline_id=1, job_id=str(fresh["jobId"]), deferrable=True,
        poke_interval=0.05, timeout=30), "deferred", expect_error=False, ctx=context())
    run_task(seen, "em sensor, poke", lambda: CogniteEntityMatchingPipelineRunSensor(
        task_id="em_wait", pipeline_id=1, job_id=str(em_ctx["ti"].xcom["job_id"]), poke_interval=0.05,
        timeout=30), "worker", expect_error=False, ctx=context())

    # ---- Cognite: estimate quality --------------------------------------------------------------------
    eq_ctx = context()
    run_task(seen, "quality operator, deferred", lambda: CogniteAdvancedJoinQualityOperator(
        task_id="eq", advanced_join_external_id="{{ params.join }}", matcher=MATCHER,
        min_quality_score_percent=80, deferrable=True, **FAST), "deferred", expect_error=False, ctx=eq_ctx)
    run_task(seen, "quality operator, gate not met", lambda: CogniteAdvancedJoinQualityOperator(
        task_id="eq", advanced_join_external_id=JOIN_POOR, matcher=MATCHER, min_quality_score_percent=80,
        **FAST), "worker", expect_error=True, ctx=context())
    run_task(seen, "quality operator, failing job", lambda: CogniteAdvancedJoinQualityOperator(
        task_id="eq", advanced_join_external_id=JOIN_FAILING, matcher=MATCHER, **FAST), "worker",
        expect_error=True, ctx=context())
    run_task(seen, "quality sensor, poke", lambda: CogniteAdvancedJoinQualitySensor(
        task_id="eq_wait", job_id=eq_ctx["ti"].xcom["job_id"], min_quality_score_percent=95,
        poke_interval=0.05, timeout=30), "worker", expect_error=True, ctx=context())

    # ---- Cognite: extraction pipelines ----------------------------------------------------------------
    reporters.append(Reporter(sb, "failure", 0.3, "extractor crashed"))
    run_task(seen, "report sensor, deferred, failure reported", lambda: CogniteExtractionPipelineRunSensor(
        task_id="report_wait", external_id=EXTPIPE, created_after="{{ ts }}", deferrable=True,
        poke_interval=0.05, timeout=30), "deferred", expect_error=True,
        ctx={**context(), "ts": "2020-01-01T00:00:00+00:00"})
    run_task(seen, "report operator", lambda: CogniteExtractionPipelineRunOperator(
        task_id="report", external_id="{{ params.extpipe }}", status="seen", message="{{ params.em }} rows"),
        "worker", expect_error=False, ctx=context())
    run_task(seen, "report operator, a secret in the message", lambda: CogniteExtractionPipelineRunOperator(
        task_id="report", external_id=EXTPIPE, status="success",
        message=f"loaded; the password was {COGNITE_SECRET}"),
        "worker", expect_error=False, ctx=context(), fields=False)  # the message sent to CDF is scanned below
    run_task(seen, "report operator, unknown pipeline", lambda: CogniteExtractionPipelineRunOperator(
        task_id="report", external_id="no-such-pipeline", status="failure"), "worker", expect_error=True,
        ctx=context())
    run_task(seen, "report sensor, poke", lambda: CogniteExtractionPipelineRunSensor(
        task_id="report_wait", external_id=EXTPIPE, created_after=0, failure_statuses=(), poke_interval=0.05,
        timeout=30), "worker", expect_error=False, ctx=context())
    callback = CogniteExtractionPipelineRunCallback(external_id="{{ params.extpipe }}")
    for name, cb_ctx in {
        "callback, success": {"ti": type("TI", (), {"state": "success", "task_id": "load", "dag_id": "d"})(),
                              "params": PARAMS, "run_id": "manual__1"},
        "callback, failure with a secret in the exception": {
            "ti": FailedTI(), "params": PARAMS, "run_id": "manual__1",
            "exception": RuntimeError(f"login failed with secret {COGNITE_SECRET}")},
    }.items():
        rendered = copy.copy(callback)
        rendered.render_template_fields(cb_ctx)
        seen.add(f"{name}: rendered template fields",
                 {f: getattr(rendered, f) for f in callback.template_fields})
        callback(cb_ctx)  # never raises
    assert len(sb.requests(method="POST", path="*/extpipes/runs")) >= 4  # the callbacks did report

    # ---- Edge Impulse ----------------------------------------------------------------------------------
    ei_ctx = context()
    run_task(seen, "ei operator, deferred", lambda: EdgeImpulseRunPipelineOperator(
        task_id="ei", organization_id=1, pipeline_id="{{ params.ei }}", deferrable=True, **FAST), "deferred",
        expect_error=False, ctx=ei_ctx)
    run_task(seen, "ei operator, failing", lambda: EdgeImpulseRunPipelineOperator(
        task_id="ei", organization_id=1, pipeline_id=EI_PIPELINE_FAILING, **FAST), "worker",
        expect_error=True,
        ctx=context())
    run_task(seen, "ei operator, wrong key", lambda: EdgeImpulseRunPipelineOperator(
        task_id="ei", organization_id=1, pipeline_id=EI_PIPELINE_NIGHTLY,
        edge_impulse_conn_id="edge_impulse_wrong",
        **FAST), "worker", expect_error=True, ctx=context())
    run_task(seen, "ei sensor, poke", lambda: EdgeImpulsePipelineRunSensor(
        task_id="ei_wait", organization_id=1, pipeline_id=EI_PIPELINE_NIGHTLY,
        run_id=ei_ctx["ti"].xcom["run_id"], poke_interval=0.05, timeout=30), "worker", expect_error=False,
        ctx=context())
    sb.configure_resource("edge_impulse", "pipelines", EI_PIPELINE_NIGHTLY, transform=None)
    kill = Driver(lambda: EdgeImpulseRunPipelineOperator(
        task_id="ei", organization_id=1, pipeline_id=EI_PIPELINE_NIGHTLY, deferrable=True, **FAST),
        context(), "deferred")
    with pytest.raises(TaskDeferred) as deferred:
        kill.run(stop_at=1)
    seen.add("ei kill: trigger kwargs", kill.serialized)
    asyncio.run(restore_trigger(deferred.value.trigger).on_kill())
    assert len(sb.requests(method="POST", path="*/pipelines/*/stop")) == 1

    # ---- HERE ------------------------------------------------------------------------------------------
    here_ctx = context()
    run_task(seen, "here operator, deferred", lambda: HereSchedulePipelineVersionOperator(
        task_id="here", pipeline_id="{{ params.here_pipeline }}",
        pipeline_version_id="{{ params.here_version }}",
        input_catalogs=CATALOGS, deferrable=True, **FAST), "deferred", expect_error=False, ctx=here_ctx)
    run_task(seen, "here operator, failing job", lambda: HereSchedulePipelineVersionOperator(
        task_id="here", pipeline_id=HERE_PIPELINE_FAILING, pipeline_version_id=HERE_VERSION_FAILING,
        input_catalogs=CATALOGS, **FAST), "worker", expect_error=True, ctx=context())
    run_task(seen, "here operator, wrong secret", lambda: HereSchedulePipelineVersionOperator(
        task_id="here", pipeline_id=HERE_PIPELINE_OK, pipeline_version_id=HERE_VERSION_OK,
        input_catalogs=CATALOGS, here_conn_id="here_wrong", **FAST), "worker", expect_error=True,
        ctx=context())
    run_task(seen, "here sensor, poke", lambda: HerePipelineJobSensor(
        task_id="here_wait", pipeline_id=HERE_PIPELINE_OK, pipeline_version_id=HERE_VERSION_OK,
        job_id=here_ctx["ti"].xcom["job_id"], poke_interval=0.05, timeout=30), "worker",
        expect_error=False, ctx=context())
    sb.configure_resource("here", "versions", HERE_VERSION_OK, job_running=1.0)
    here = HerePipelineHook()
    here.schedule_pipeline_version(HERE_PIPELINE_OK, HERE_VERSION_OK, {"inputCatalogs": CATALOGS})
    wait_until(lambda: len(here.list_jobs(HERE_PIPELINE_OK, HERE_VERSION_OK)) == 2, what="the second job")
    job_id = here.list_jobs(HERE_PIPELINE_OK, HERE_VERSION_OK)[-1]["id"]
    run_task(seen, "here sensor, deferred", lambda: HerePipelineJobSensor(
        task_id="here_wait", pipeline_id="{{ params.here_pipeline }}", pipeline_version_id=HERE_VERSION_OK,
        job_id=job_id, deferrable=True, poke_interval=0.05, timeout=30), "deferred",
        expect_error=False, ctx=context())

    # ---- connection tests ------------------------------------------------------------------------------
    hooks = {"cognite_default": CogniteHook(), "cognite_wrong": CogniteHook("cognite_wrong"),
             "edge_impulse_wrong": EdgeImpulseHook("edge_impulse_wrong"), "here_default": HerePipelineHook(),
             "here_wrong": HerePipelineHook("here_wrong")}
    for conn_id, hook in hooks.items():
        seen.add(f"test_connection {conn_id}", hook.test_connection())

    # ---- the scan -------------------------------------------------------------------------------------
    issued = [*sb.state.cognite.tokens, *sb.state.here.tokens]  # bearer tokens the sandbox handed out
    assert issued
    secrets = (*SECRETS, WRONG_COGNITE_SECRET, WRONG_EI_KEY, WRONG_HERE_SECRET, *issued)
    out, err = capfd.readouterr()
    seen.add("captured logs", "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}"
                                        for r in caplog.records))
    seen.add("stdout", out)
    seen.add("stderr", err)
    # what the provider sent to the APIs, other than the credentials themselves (redacted by the sandbox)
    seen.add("request bodies", [entry["body"] for entry in sb.requests()])
    logs = out + "\n".join(r.getMessage() for r in caplog.records)
    for expected in ("Reported 'success'", "Started Edge Impulse pipeline", "quality:"):
        assert expected in logs  # the capture did see the provider's own log lines
    assert scan_for_secrets(seen.items, secrets) == []
