"""The fault-injection matrix: every job kind, in worker and deferred mode, against the sandbox.

Each test injects one fault (or one remote behaviour) and asserts what the user sees (the
task's outcome and its message) and the remote calls that matter, read from the sandbox's request
log: runs started (start requests answered 2xx), token requests, requests hit by the fault, and
cancel requests. The expected cell of every (scenario, job kind) pair is in :data:`EXPECTED`;
``docs/reliability.md`` shows the same table (``test_docs_show_the_asserted_matrix`` keeps the
two equal).

Faults hit the job's *wait*, never its start (start faults have their own rows): a fault is armed
with ``skip=reads_before_wait``, the number of status reads a task makes before its wait loop
(worker) or its trigger (deferred) starts polling.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_pipelines._compat import AirflowException, AirflowSensorTimeout, TaskDeferred
from airflow_provider_pipelines.hooks.cognite import CogniteHook
from airflow_provider_pipelines.hooks.edge_impulse import EdgeImpulseHook
from airflow_provider_pipelines.hooks.here import HerePipelineHook
from airflow_provider_pipelines.jobs.base import JobFailedError, JobTimeoutError
from airflow_provider_pipelines.operators.cognite import (
    CogniteAdvancedJoinQualityOperator,
    CogniteEntityMatchingPipelineRunOperator,
)
from airflow_provider_pipelines.operators.edge_impulse import EdgeImpulseRunPipelineOperator
from airflow_provider_pipelines.operators.here import HereSchedulePipelineVersionOperator
from airflow_provider_pipelines.sandbox.config import (
    EI_PIPELINE_FAILING,
    EI_PIPELINE_NIGHTLY,
    EM_PIPELINE_ASSETS_ID,
    EM_PIPELINE_ASSETS_XID,
    EM_PIPELINE_FAILING_ID,
    HERE_PIPELINE_FAILING,
    HERE_PIPELINE_OK,
    HERE_VERSION_FAILING,
    HERE_VERSION_OK,
    JOIN_FAILING,
    JOIN_GOOD,
)
from airflow_provider_pipelines.sandbox.server import SandboxServer
from airflow_provider_pipelines.sensors.cognite import CogniteExtractionPipelineRunSensor
from tests.reliability.conftest import (
    COGNITE_STATIC_TOKEN,
    Driver,
    TcpForwarder,
    make_context,
    outcome_of,
    restore_trigger,
    set_connections,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

POLL = 0.05
MAX_POLL = 0.2
#: a job left active on purpose (retry and kill rows) runs this long
SLOW = 1.2
ORG = 1
UUID = "?" * 36  # one path segment of a HERE id (``*`` would also cross "/")
EM_PATH = "/api/v1/projects/sandbox/context/entitymatching/pipelines"
EQ_PATH = "/api/v1/projects/sandbox/advancedjoins/estimatequality"
EXTPIPE_RUNS = "/api/v1/projects/sandbox/extpipes/runs"
EI_PATH = f"/v1/api/organizations/{ORG}/pipelines"
HERE_VERSION = f"/pipeline-service/v2/pipelines/{UUID}/versions/{UUID}"
COGNITE_TOKEN = "/sandbox-tenant/oauth2/v2.0/token"
HERE_TOKEN = "/oauth2/token"
MATCHER = {"type": "raw", "dbName": "sandbox_db", "tableName": "known_matches", "fromColumnKey": "from",
           "toColumnKey": "to"}
CATALOGS = {"weather": {"processingType": "changes", "version": 75, "sinceVersion": 70}}
EXTPIPE = "sandbox-contextualization"
EXTRACTOR_FAILURE = "extractor crashed: disk full on host x1"


# ---- the job kinds ----------------------------------------------------------------------------------


class Reporter:
    """The external extractor a sensor waits for: reports one run after ``delay`` seconds, and not
    before the sensor's first status read was answered (under load that read may come later than
    ``delay``; reporting before it would let the sensor succeed without ever waiting)."""

    def __init__(self, sb: SandboxServer, status: str, delay: float, message: str | None = None) -> None:
        self.sb, self.status, self.message = sb, status, message
        self.timer = threading.Timer(delay, self._post)
        self.timer.daemon = True
        self.timer.start()

    def _first_read_answered(self) -> bool:
        reads = self.sb.requests(method="POST", path=f"{EXTPIPE_RUNS}/list")
        return bool(reads) and reads[0]["status"] is not None

    def _post(self) -> None:
        deadline = time.monotonic() + 10
        while not self._first_read_answered() and time.monotonic() < deadline:
            time.sleep(0.005)
        item: dict[str, Any] = {"externalId": EXTPIPE, "status": self.status,
                                "createdTime": int(time.time() * 1000)}
        if self.message:
            item["message"] = self.message
        requests.post(f"{self.sb.url}{EXTPIPE_RUNS}", json={"items": [item]}, timeout=5,
                      headers={"Authorization": f"Bearer {COGNITE_STATIC_TOKEN}"})

    def cancel(self) -> None:
        self.timer.cancel()


@dataclass(frozen=True)
class Case:
    """One job kind: how to build its task, where it polls, what counts as its remote calls."""

    name: str
    title: str
    status_method: str
    status_path: str
    #: status reads before the wait loop / trigger polls (faults skip them)
    reads_before_wait: int
    #: the start request (``None``: a sensor, which starts nothing)
    start_path: str | None
    token_path: str | None
    #: cancel requests (``None``: the API has no cancel)
    cancel_path: str | None
    #: which deferral of the task waits for this kind
    phase: int
    build: Callable[..., Any]
    prepare: Callable[[SandboxServer, str], Reporter | None]

    @property
    def sensor(self) -> bool:
        return self.start_path is None


def _deferrable(mode: str) -> bool:
    return mode == "deferred"


def build_em(mode: str, variant: str, **kw: Any) -> Any:
    return CogniteEntityMatchingPipelineRunOperator(
        task_id="task", pipeline_id=EM_PIPELINE_FAILING_ID if variant == "fail" else EM_PIPELINE_ASSETS_ID,
        deferrable=_deferrable(mode), poll_interval=POLL, max_poll_interval=MAX_POLL, **{"timeout": 20, **kw})


def prepare_em(sb: SandboxServer, variant: str) -> None:
    if variant in ("never", "slow"):
        sb.configure_resource("cognite", "entity_matching", EM_PIPELINE_ASSETS_XID,
                              running=None if variant == "never" else SLOW)


def build_eq(mode: str, variant: str, **kw: Any) -> Any:
    return CogniteAdvancedJoinQualityOperator(
        task_id="task", advanced_join_external_id=JOIN_FAILING if variant == "fail" else JOIN_GOOD,
        matcher=MATCHER, min_quality_score_percent=80, deferrable=_deferrable(mode), poll_interval=POLL,
        max_poll_interval=MAX_POLL, **{"timeout": 20, **kw})


def prepare_eq(sb: SandboxServer, variant: str) -> None:
    if variant in ("never", "slow"):
        sb.configure_resource("cognite", "estimate_quality", JOIN_GOOD,
                              running=None if variant == "never" else SLOW)


def build_ext(mode: str, variant: str, **kw: Any) -> Any:
    return CogniteExtractionPipelineRunSensor(
        task_id="task", external_id=EXTPIPE, created_after=int(time.time() * 1000) - 1000,
        deferrable=_deferrable(mode), poke_interval=POLL, mode="poke", **{"timeout": 20, **kw})


def prepare_ext(sb: SandboxServer, variant: str) -> Reporter | None:
    if variant == "never":
        return None
    if variant == "fail":
        return Reporter(sb, "failure", 0.3, EXTRACTOR_FAILURE)
    return Reporter(sb, "success", SLOW if variant == "slow" else 0.3, "extracted 42 rows")


def build_ei(mode: str, variant: str, **kw: Any) -> Any:
    return EdgeImpulseRunPipelineOperator(
        task_id="task", organization_id=ORG,
        pipeline_id=EI_PIPELINE_FAILING if variant == "fail" else EI_PIPELINE_NIGHTLY,
        deferrable=_deferrable(mode), poll_interval=POLL, max_poll_interval=MAX_POLL, **{"timeout": 20, **kw})


def prepare_ei(sb: SandboxServer, variant: str) -> None:
    if variant in ("never", "slow"):
        sb.configure_resource("edge_impulse", "pipelines", EI_PIPELINE_NIGHTLY,
                              transform=None if variant == "never" else SLOW / 2)


def build_here_op(mode: str, variant: str, **kw: Any) -> Any:
    return HereSchedulePipelineVersionOperator(
        task_id="task", pipeline_id=HERE_PIPELINE_OK, pipeline_version_id=HERE_VERSION_OK,
        input_catalogs=None,
        deferrable=_deferrable(mode), poll_interval=POLL, max_poll_interval=MAX_POLL, **{"timeout": 20, **kw})


def prepare_here_op(sb: SandboxServer, variant: str) -> None:
    if variant == "fail":
        sb.configure_resource("here", "versions", HERE_VERSION_OK, operation_outcome="failure")
    elif variant in ("never", "slow"):
        sb.configure_resource("here", "versions", HERE_VERSION_OK,
                              operation_processing=None if variant == "never" else SLOW)


def build_here_job(mode: str, variant: str, **kw: Any) -> Any:
    failing = variant == "fail"
    return HereSchedulePipelineVersionOperator(
        task_id="task", pipeline_id=HERE_PIPELINE_FAILING if failing else HERE_PIPELINE_OK,
        pipeline_version_id=HERE_VERSION_FAILING if failing else HERE_VERSION_OK, input_catalogs=CATALOGS,
        deferrable=_deferrable(mode), poll_interval=POLL, max_poll_interval=MAX_POLL, **{"timeout": 20, **kw})


def prepare_here_job(sb: SandboxServer, variant: str) -> None:
    if variant in ("never", "slow"):
        sb.configure_resource("here", "versions", HERE_VERSION_OK,
                              job_running=None if variant == "never" else SLOW)


CASES = {
    case.name: case
    for case in (
        Case("em_run", "Cognite entity matching run", "GET", f"{EM_PATH}/*/runs/*", 1, f"{EM_PATH}/*/runs",
             COGNITE_TOKEN, None, 1, build_em, prepare_em),
        Case("estimate_quality", "Cognite estimate-quality", "GET", f"{EQ_PATH}/*", 1, EQ_PATH,
             COGNITE_TOKEN, None, 1, build_eq, prepare_eq),
        Case("extraction_report", "Cognite extraction report (sensor)", "POST", f"{EXTPIPE_RUNS}/list", 1,
             None,
             COGNITE_TOKEN, None, 1, build_ext, prepare_ext),
        Case("ei_run", "Edge Impulse pipeline run", "GET", f"{EI_PATH}/*", 2, f"{EI_PATH}/*/run",
             None, f"{EI_PATH}/*/stop", 1, build_ei, prepare_ei),
        Case("here_operation", "HERE operation", "GET", f"{HERE_VERSION}/operations/{UUID}", 1,
             f"{HERE_VERSION}/operations/activate", HERE_TOKEN, f"{HERE_VERSION}/operations/[cd]*", 1,
             build_here_op, prepare_here_op),
        Case("here_job", "HERE job", "GET", HERE_VERSION, 2, f"{HERE_VERSION}/operations/activate",
             HERE_TOKEN, f"{HERE_VERSION}/operations/[cd]*", 2, build_here_job, prepare_here_job),
    )
}
MODES = ("worker", "deferred")
KIND_MODES = [pytest.param(kind, mode, id=f"{kind}-{mode}") for kind in CASES for mode in MODES]
START_KINDS = [pytest.param(kind, id=kind) for kind, case in CASES.items() if not case.sensor]


# ---- what a cell of the matrix holds ------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """The outcome and the remote calls of one scenario for one job kind (``None``: not applicable)."""

    outcome: str
    runs: int | None
    tokens: int | None
    faulted: int
    cancels: int | None = None

    def render(self) -> str:
        """``outcome (runs/tokens/faulted[/cancels])``, ``-`` where not applicable."""
        counts = [self.runs, self.tokens, self.faulted] + ([] if self.cancels is None else [self.cancels])
        return f"{self.outcome} ({'/'.join('-' if c is None else str(c) for c in counts)})"


def measure(sb: SandboxServer, case: Case, outcome: str, *, cancels: bool = False) -> Cell:
    runs = None
    if case.start_path is not None:
        runs = sum(1 for e in sb.requests(method="POST", path=case.start_path)
                   if e["status"] is not None and 200 <= e["status"] < 300)
    tokens = len(sb.requests(method="POST", path=case.token_path)) if case.token_path else None
    faulted = sum(1 for e in sb.requests() if e["fault"])
    cancel_count = None
    if cancels:
        cancel_count = len(sb.requests(method="POST", path=case.cancel_path)) if case.cancel_path else 0
    return Cell(outcome, runs, tokens, faulted, cancel_count)


def check(scenario: str, kind: str, mode: str, cell: Cell) -> None:
    expected = EXPECTED[scenario][kind]
    if isinstance(expected, dict):  # the sensor differs between poke and deferred mode
        expected = expected["poke" if mode == "worker" else "deferred"]
    assert cell == expected, f"{scenario} / {kind} / {mode}: measured {cell.render()!r}"


# ---- helpers ---------------------------------------------------------------------------------------------


@pytest.fixture
def reporters() -> Any:
    started: list[Reporter] = []
    yield started
    for reporter in started:
        reporter.cancel()


def start(sb: SandboxServer, case: Case, variant: str, reporters: list[Reporter]) -> None:
    reporter = case.prepare(sb, variant)
    if reporter is not None:
        reporters.append(reporter)


def driver(
    case: Case, mode: str, variant: str = "ok", ctx: dict[str, Any] | None = None, **kw: Any
) -> Driver:
    return Driver(lambda: case.build(mode, variant, **kw), ctx if ctx is not None else make_context(), mode)


def arm(sb: SandboxServer, case: Case, action: str, times: int | None = 1, **params: Any) -> None:
    """A fault on the job's status reads, skipping the reads made before the wait starts."""
    sb.inject_fault(method=case.status_method, path=case.status_path, action=action, times=times,
                    skip=case.reads_before_wait, **params)


def assert_success(case: Case, result: Any) -> None:
    assert isinstance(result, dict), result
    if case.name == "em_run":
        assert result["status"] == "Completed" and result["matches_count"] == 3
    elif case.name == "estimate_quality":
        assert result["status"] == "Completed" and result["qualityScorePercent"] == 92.5
    elif case.name == "extraction_report":
        assert result["status"] == "success" and result["externalId"] == EXTPIPE
    elif case.name == "ei_run":
        assert result["state"] == "finished" and len(result["steps"]) == 2
    elif case.name == "here_operation":
        assert result["operation"]["state"] == "succeeded" and result["job"] is None
    else:
        assert result["job"]["state"] == "completed"


def poll_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if "will poll again" in r.getMessage())


def wait_until(condition: Callable[[], Any], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def status_reads_answered(sb: SandboxServer, case: Case, count: int) -> bool:
    entries = sb.requests(method=case.status_method, path=case.status_path)
    return len(entries) >= count and all(e["status"] is not None for e in entries[:count])


# ---- the matrix: faults while waiting --------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "mode"), KIND_MODES)
def test_429_with_retry_after_is_waited_out(sb: SandboxServer, reporters: Any, kind: str, mode: str) -> None:
    case = CASES[kind]
    start(sb, case, "ok", reporters)
    arm(sb, case, "status", status=429, retry_after=1)
    assert_success(case, driver(case, mode).run())
    log = sb.requests(method=case.status_method, path=case.status_path)
    hit = next(i for i, e in enumerate(log) if e["fault"])
    assert log[hit]["status"] == 429
    assert log[hit + 1]["wall_time"] - log[hit]["wall_time"] >= 0.95  # Retry-After: 1 honoured
    check("429_retry_after", kind, mode, measure(sb, case, "success"))


@pytest.mark.parametrize(("kind", "mode"), KIND_MODES)
def test_burst_of_502_503_504_is_retried(sb: SandboxServer, reporters: Any, kind: str, mode: str) -> None:
    case = CASES[kind]
    start(sb, case, "ok", reporters)
    for status in (502, 503, 504):
        arm(sb, case, "status", status=status)
    assert_success(case, driver(case, mode).run())
    statuses = [e["status"] for e in sb.requests(method=case.status_method, path=case.status_path)]
    assert [502, 503, 504, 200] == statuses[case.reads_before_wait:case.reads_before_wait + 4]
    check("5xx_burst", kind, mode, measure(sb, case, "success"))


@pytest.mark.parametrize(("kind", "mode"), KIND_MODES)
def test_failed_first_read_is_tolerated(sb: SandboxServer, reporters: Any, kind: str, mode: str) -> None:
    """The read right before the wait (worker) or the deferral fails after all its attempts: a poll error."""
    case = CASES[kind]
    start(sb, case, "ok", reporters)
    sb.inject_fault(method=case.status_method, path=case.status_path, action="status", status=503, times=5,
                    skip=case.reads_before_wait - 1)
    result, err = outcome_of(driver(case, mode).run)
    if case.sensor and mode == "worker":  # poke mode: a failed poke fails the sensor (Airflow semantics)
        assert isinstance(err, AirflowException) and "after 5 attempts" in str(err), err
        outcome = "fails: HTTP 503 after 1 poke x 5 attempts"
    else:
        assert err is None, err
        assert_success(case, result)
        outcome = "success"
    check("first_read_fails", kind, mode, measure(sb, case, outcome))


@pytest.mark.parametrize(("kind", "mode"), KIND_MODES)
def test_persistent_500_fails_at_once(sb: SandboxServer, reporters: Any, kind: str, mode: str) -> None:
    case = CASES[kind]
    start(sb, case, "ok", reporters)
    arm(sb, case, "status", status=500, times=None)
    began = time.monotonic()
    _, err = outcome_of(driver(case, mode).run)
    assert isinstance(err, AirflowException) and time.monotonic() - began < 10
    text = str(err)
    assert "HTTP 500" in text and "sandbox fault injection" in text  # status and the vendor's message
    if case.name != "ei_run":  # Edge Impulse documents no request id header
        assert "request id" in text
    check("500_persistent", kind, mode, measure(sb, case, "fails: HTTP 500"))


@pytest.mark.parametrize(("kind", "mode"), KIND_MODES)
def test_persistent_503_fails_within_the_bound(
    sb: SandboxServer, reporters: Any, caplog: pytest.LogCaptureFixture, kind: str, mode: str
) -> None:
    case = CASES[kind]
    start(sb, case, "ok", reporters)
    arm(sb, case, "status", status=503, times=None)
    _, err = outcome_of(driver(case, mode).run)
    assert isinstance(err, AirflowException)
    assert "HTTP 503" in str(err) and "after 5 attempts" in str(err)
    polls = poll_warnings(caplog) + 1
    what = "poke" if polls == 1 else "polls"
    check("503_persistent", kind, mode,
          measure(sb, case, f"fails: HTTP 503 after {polls} {what} x 5 attempts"))


@pytest.mark.parametrize(("kind", "mode"), KIND_MODES)
def test_read_timeout_is_retried(
    sb: SandboxServer, reporters: Any, monkeypatch: pytest.MonkeyPatch, kind: str, mode: str
) -> None:
    case = CASES[kind]
    set_connections(monkeypatch, sb.url, read_timeout=0.5)
    start(sb, case, "ok", reporters)
    arm(sb, case, "delay", seconds=1.5)
    began = time.monotonic()
    assert_success(case, driver(case, mode).run())
    assert time.monotonic() - began < 10
    check("read_timeout", kind, mode, measure(sb, case, "success"))


@pytest.mark.parametrize(("kind", "mode"), KIND_MODES)
def test_connection_refused_fails_within_the_bound(
    sb: SandboxServer, reporters: Any, forwarder: TcpForwarder, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, kind: str, mode: str,
) -> None:
    """The API host goes away mid-wait: every attempt from then on is refused."""
    case = CASES[kind]
    set_connections(monkeypatch, forwarder.url)
    start(sb, case, "ok", reporters)
    run = driver(case, mode)
    if mode == "worker":
        def cut() -> None:
            wait_until(lambda: status_reads_answered(sb, case, case.reads_before_wait),
                       what="the first reads")
            time.sleep(0.01)  # let the last answer through the forwarder
            forwarder.close()

        threading.Thread(target=cut, daemon=True).start()
        _, err = outcome_of(run.run)
    else:
        _, err = outcome_of(lambda: run.run(
            on_defer=lambda n, _: forwarder.close() if n == case.phase else None))
    assert isinstance(err, AirflowException), err
    assert "could not connect" in str(err) and "after 5 attempts" in str(err)
    polls = poll_warnings(caplog) + 1
    what = "poke" if polls == 1 else "polls"
    check("connection_refused", kind, mode,
          measure(sb, case, f"fails: could not connect after {polls} {what} x 5 attempts"))


@pytest.mark.parametrize(("kind", "mode"), KIND_MODES)
def test_dropped_connection_is_retried(sb: SandboxServer, reporters: Any, kind: str, mode: str) -> None:
    case = CASES[kind]
    start(sb, case, "ok", reporters)
    arm(sb, case, "drop")
    assert_success(case, driver(case, mode).run())
    dropped = [e for e in sb.requests() if e["fault"] == "drop"]
    assert len(dropped) == 1 and dropped[0]["status"] is None
    check("dropped_connection", kind, mode, measure(sb, case, "success"))


@pytest.mark.parametrize(("kind", "mode"), KIND_MODES)
def test_malformed_json_is_retried(sb: SandboxServer, reporters: Any, kind: str, mode: str) -> None:
    case = CASES[kind]
    start(sb, case, "ok", reporters)
    arm(sb, case, "malformed")
    assert_success(case, driver(case, mode).run())
    check("malformed_json", kind, mode, measure(sb, case, "success"))


@pytest.mark.parametrize(("kind", "mode"), KIND_MODES)
def test_expired_token_mid_wait(sb: SandboxServer, reporters: Any, kind: str, mode: str) -> None:
    case = CASES[kind]
    start(sb, case, "ok", reporters)
    arm(sb, case, "expire_tokens")
    result, err = outcome_of(driver(case, mode).run)
    log = sb.requests(method=case.status_method, path=case.status_path)
    hit = next(i for i, e in enumerate(log) if e["fault"])
    assert log[hit]["status"] == 401
    if case.token_path is None:  # Edge Impulse: a static API key, revoked: nothing to refresh
        assert isinstance(err, AirflowException) and "HTTP 401" in str(err) and "revoked" in str(err)
        assert len(log) == hit + 1  # not retried
        outcome = "fails: HTTP 401, not retried (static key)"
    else:
        assert err is None, err
        assert_success(case, result)
        assert log[hit + 1]["status"] == 200  # the same read, with the new token
        outcome = "success after one token refresh"
    check("token_expired", kind, mode, measure(sb, case, outcome))


VENDOR_FAILURE = {
    "em_run": "Pipeline failed: source data set 404 contains no time series",
    "estimate_quality": "Estimate quality failed: RAW table 'sandbox_db.known_matches' not found",
    "extraction_report": EXTRACTOR_FAILURE,
    "ei_run": "step 2 'Import into project' failed (status=failed, transformJobStatus=failed)",
    "here_operation": "Operation failed with error - Main class not found",
    "here_job": "ended failed; HERE jobs carry no error message, see the logs at",
}


FAILED_LABEL = {
    "*": "failed with the vendor's message",
    "ei_run": "failed, naming the failed step (inferred rule)",
    "here_job": "failed, pointing at the job's logs (HERE jobs carry no message)",
}


@pytest.mark.parametrize(("kind", "mode"), KIND_MODES)
def test_remote_failure_fails_the_task_with_the_vendor_message(
    sb: SandboxServer, reporters: Any, kind: str, mode: str
) -> None:
    case = CASES[kind]
    start(sb, case, "fail", reporters)
    run = driver(case, mode, "fail")
    _, err = outcome_of(run.run)
    assert isinstance(err, JobFailedError), err
    assert VENDOR_FAILURE[kind] in str(err)
    if mode == "deferred":
        assert run.events[-1]["status"] == "failed" and VENDOR_FAILURE[kind] in str(run.events[-1]["message"])
    check("remote_failure", kind, mode, measure(sb, case, FAILED_LABEL.get(kind, FAILED_LABEL["*"])))


def still_active(sb: SandboxServer, case: Case, ti_xcom: dict[str, Any]) -> bool:
    """Whether the remote job the task watched is still going (read back through the hooks)."""
    if case.name == "em_run":
        run = CogniteHook().get_pipeline_run(EM_PIPELINE_ASSETS_ID, ti_xcom["job_id"])
        return run["status"] in ("Queued", "Running")
    if case.name == "estimate_quality":
        return CogniteHook().get_estimate_quality(ti_xcom["job_id"])["status"] in ("Queued", "Running")
    if case.name == "ei_run":
        pipeline = EdgeImpulseHook().get_pipeline(ORG, EI_PIPELINE_NIGHTLY)
        return (pipeline.get("currentRun") or {}).get("id") == ti_xcom["run_id"]
    if case.name in ("here_operation", "here_job"):
        version = HerePipelineHook().get_pipeline_version(HERE_PIPELINE_OK, HERE_VERSION_OK)
        if case.name == "here_operation":
            return version["latestOperation"]["state"] in ("accepted", "being_processed")
        return version["state"] == "running" and version["latestJob"]["state"] == "running"
    return False  # a sensor watches no job of its own


@pytest.mark.parametrize(("kind", "mode"), KIND_MODES)
def test_never_finishing_job_times_out_and_is_left_running(
    sb: SandboxServer, reporters: Any, kind: str, mode: str
) -> None:
    case = CASES[kind]
    start(sb, case, "never", reporters)
    ctx = make_context()
    began = time.monotonic()
    run = driver(case, mode, "never", ctx, timeout=0.6)
    _, err = outcome_of(run.run)
    assert time.monotonic() - began < 10
    if case.sensor:
        assert isinstance(err, AirflowSensorTimeout), err
        outcome = "timeout"
    else:
        assert isinstance(err, JobTimeoutError), err
        assert "Timed out" in str(err) and "left running" in str(err)
        outcome = "timeout; remote job left running"
    cell = measure(sb, case, outcome)
    if not case.sensor:
        assert still_active(sb, case, ctx["ti"].xcom)
    if mode == "deferred":
        assert run.events[-1]["status"] == "timeout"
    check("never_finishes", kind, mode, cell)


CANCELLABLE = [pytest.param(kind, mode, id=f"{kind}-{mode}")
               for kind in ("ei_run", "here_operation", "here_job") for mode in MODES]
TIMEOUT_CANCEL = {
    "ei_run": ("The run was stopped (cancel_on_timeout=True)", "timeout; run stopped"),
    "here_operation": ("found nothing left to cancel", "timeout; operation still in progress, not cancelled"),
    "here_job": ("requested cancel of the version", "timeout; version cancelled"),
}


@pytest.mark.parametrize(("kind", "mode"), CANCELLABLE)
def test_never_finishing_job_is_stopped_with_cancel_on_timeout(
    sb: SandboxServer, monkeypatch: pytest.MonkeyPatch, kind: str, mode: str
) -> None:
    """``cancel_on_timeout=True`` (Edge Impulse, HERE): the timeout also stops what the task started."""
    import airflow_provider_pipelines.jobs.here as here_jobs

    monkeypatch.setattr(here_jobs, "STOP_WAIT_SECONDS", 1.0)  # 20 s in production
    case = CASES[kind]
    start(sb, case, "never", [])
    _, err = outcome_of(driver(case, mode, "never", timeout=0.6, cancel_on_timeout=True).run)
    assert isinstance(err, JobTimeoutError), err
    message, outcome = TIMEOUT_CANCEL[kind]
    assert message in str(err)
    check("never_finishes_cancel", kind, mode, measure(sb, case, outcome, cancels=True))


@pytest.mark.parametrize(("kind", "mode"), KIND_MODES)
def test_task_retry_while_the_run_is_active_starts_no_second_run(
    sb: SandboxServer, reporters: Any, kind: str, mode: str
) -> None:
    case = CASES[kind]
    start(sb, case, "slow", reporters)
    store_ctx = make_context()
    first = driver(case, mode, "slow", store_ctx, timeout=0.3)
    if mode == "worker":  # try 1 gives up waiting (the run goes on)
        _, err = outcome_of(first.run)
        assert isinstance(err, (JobTimeoutError, AirflowSensorTimeout)), err
    else:  # try 1 deferred, then its worker and trigger were lost
        with pytest.raises(TaskDeferred):
            first.run(stop_at=case.phase)
    retry_ctx = make_context(try_number=2, store=store_ctx["task_state_store"])
    result = driver(case, mode, "slow", retry_ctx).run()
    assert_success(case, result)
    outcome = "success: the retry re-reads" if case.sensor else "success: the retry reattaches"
    check("retry_while_active", kind, mode, measure(sb, case, outcome))


@pytest.mark.parametrize(("kind", "mode"), KIND_MODES)
def test_kill_cancels_where_the_api_can(sb: SandboxServer, reporters: Any, kind: str, mode: str) -> None:
    case = CASES[kind]
    start(sb, case, "slow", reporters)
    ctx = make_context()
    if mode == "worker":
        tasks: list[Any] = []
        run = Driver(lambda: tasks.append(case.build(mode, "slow")) or tasks[-1], ctx, mode)
        thread = threading.Thread(target=lambda: outcome_of(run.run))
        thread.start()
        wait_until(lambda: status_reads_answered(sb, case, case.reads_before_wait + 1), what="polling")
        tasks[0].on_kill()
        thread.join(20)
        assert not thread.is_alive()
    else:
        deferred = driver(case, mode, "slow", ctx)
        with pytest.raises(TaskDeferred) as info:
            deferred.run(stop_at=case.phase)
        before = len(sb.requests())
        asyncio.run(restore_trigger(info.value.trigger).on_kill())
        if case.cancel_path is None:
            assert len(sb.requests()) == before  # nothing to cancel: not a single request
    if case.name == "ei_run":
        pipeline = EdgeImpulseHook().get_pipeline(ORG, EI_PIPELINE_NIGHTLY)
        assert pipeline["currentRun"] is None and pipeline["lastRun"]["id"] == ctx["ti"].xcom["run_id"]
        label = "stopped (POST .../stop)"
    elif case.name == "here_operation":
        version = HerePipelineHook().get_pipeline_version(HERE_PIPELINE_OK, HERE_VERSION_OK)
        assert version["latestOperation"]["requestType"] == "deactivate"
        label = "deactivated (operations/deactivate)"
    elif case.name == "here_job":
        wait_until(lambda: HerePipelineHook().list_jobs(HERE_PIPELINE_OK, HERE_VERSION_OK)[-1]["state"]
                   == "canceled", what="the job to be canceled")
        label = "cancelled (operations/cancel)"
    elif case.sensor:
        label = "nothing to cancel"
    else:
        label = "left running (CDF has no cancel API)"
        if mode == "deferred":
            assert still_active(sb, case, ctx["ti"].xcom)
    cell = measure(sb, case, label, cancels=True)
    check("kill", kind, mode, cell)


# ---- the start request ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", START_KINDS)
def test_429_on_start_is_retried_without_a_duplicate(sb: SandboxServer, kind: str) -> None:
    case = CASES[kind]
    start(sb, case, "ok", [])
    assert case.start_path is not None
    sb.inject_fault(method="POST", path=case.start_path, action="status", status=429, retry_after=0)
    assert_success(case, driver(case, "worker").run())
    check("429_on_start", kind, "worker", measure(sb, case, "success"))


@pytest.mark.parametrize("kind", START_KINDS)
def test_503_on_start_is_not_repeated(sb: SandboxServer, kind: str) -> None:
    """502-504 on a start request is ambiguous: the run may exist. Never sent again blindly."""
    case = CASES[kind]
    start(sb, case, "ok", [])
    assert case.start_path is not None
    sb.inject_fault(method="POST", path=case.start_path, action="status", status=503)
    _, err = outcome_of(driver(case, "worker").run)
    assert isinstance(err, AirflowException) and "HTTP 503" in str(err), err
    assert len(sb.requests(method="POST", path=case.start_path)) == 1
    check("503_on_start", kind, "worker", measure(sb, case, "fails: HTTP 503, nothing started"))


LOST_START = {
    "em_run": "retry adopts the run",
    "estimate_quality": "retry starts a new estimate",
    "ei_run": "retry adopts the run",
    "here_operation": "retry refuses: version already active",
    "here_job": "retry refuses: version already active",
}


@pytest.mark.parametrize("kind", START_KINDS)
def test_lost_answer_to_the_start_then_a_task_retry(
    sb: SandboxServer, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The start request reaches the API but its answer is lost (read timeout); then the task retries."""
    case = CASES[kind]
    assert case.start_path is not None
    set_connections(monkeypatch, sb.url, read_timeout=0.5)
    start(sb, case, "slow", [])
    sb.inject_fault(method="POST", path=case.start_path, action="delay", seconds=1.0)
    store_ctx = make_context()
    _, err = outcome_of(driver(case, "worker", "slow", store_ctx).run)
    assert isinstance(err, AirflowException) and "read timeout" in str(err), err
    wait_until(lambda: sb.requests(method="POST", path=case.start_path)[0]["status"] is not None,
               what="the delayed start to be handled")
    retry_ctx = make_context(try_number=2, store=store_ctx["task_state_store"])
    result, err = outcome_of(driver(case, "worker", "slow", retry_ctx).run)
    if kind.startswith("here"):  # HERE: an active version this task did not start is refused, clearly
        assert isinstance(err, AirflowException), err
        assert "this task did not start" in str(err) or "(not 'ready')" in str(err), err
    else:
        assert err is None, err
        assert_success(case, result)
    check("lost_start_answer", kind, "worker", measure(sb, case, LOST_START[kind]))


# ---- the expected matrix (also shown in docs/reliability.md) -----------------------------------------------


def _cells(outcome: str, *, faulted: int = 0, tokens: int = 1, runs: int = 1) -> dict[str, Any]:
    """The usual cell of every kind: Edge Impulse has no tokens, the sensor starts no runs."""
    return {
        "em_run": Cell(outcome, runs, tokens, faulted),
        "estimate_quality": Cell(outcome, runs, tokens, faulted),
        "extraction_report": Cell(outcome, None, tokens, faulted),
        "ei_run": Cell(outcome, runs, None, faulted),
        "here_operation": Cell(outcome, runs, tokens, faulted),
        "here_job": Cell(outcome, runs, tokens, faulted),
    }


def _by_mode(worker: Cell, deferred: Cell) -> dict[str, Cell]:
    return {"poke": worker, "deferred": deferred}


EXPECTED: dict[str, dict[str, Any]] = {
    "429_retry_after": _cells("success", faulted=1),
    "5xx_burst": _cells("success", faulted=3),
    "first_read_fails": {
        **_cells("success", faulted=5),
        "extraction_report": _by_mode(Cell("fails: HTTP 503 after 1 poke x 5 attempts", None, 1, 5),
                                      Cell("success", None, 1, 5)),
    },
    "500_persistent": _cells("fails: HTTP 500", faulted=1),
    "503_persistent": {
        **_cells("fails: HTTP 503 after 4 polls x 5 attempts", faulted=20),
        "extraction_report": _by_mode(Cell("fails: HTTP 503 after 1 poke x 5 attempts", None, 1, 5),
                                      Cell("fails: HTTP 503 after 4 polls x 5 attempts", None, 1, 20)),
    },
    "read_timeout": _cells("success", faulted=1),
    "connection_refused": {
        **_cells("fails: could not connect after 4 polls x 5 attempts"),
        "extraction_report": _by_mode(
            Cell("fails: could not connect after 1 poke x 5 attempts", None, 1, 0),
            Cell("fails: could not connect after 4 polls x 5 attempts", None, 1, 0)),
    },
    "dropped_connection": _cells("success", faulted=1),
    "malformed_json": _cells("success", faulted=1),
    "token_expired": {
        **_cells("success after one token refresh", faulted=1, tokens=2),
        "ei_run": Cell("fails: HTTP 401, not retried (static key)", 1, None, 1),
    },
    "remote_failure": {
        **_cells(FAILED_LABEL["*"]),
        "ei_run": Cell(FAILED_LABEL["ei_run"], 1, None, 0),
        "here_job": Cell(FAILED_LABEL["here_job"], 1, 1, 0),
    },
    "never_finishes": {
        **_cells("timeout; remote job left running"),
        "extraction_report": Cell("timeout", None, 1, 0),
    },
    "never_finishes_cancel": {
        "em_run": "n/a (no cancel API)",
        "estimate_quality": "n/a (no cancel API)",
        "extraction_report": "n/a (a sensor cancels nothing)",
        "ei_run": Cell(TIMEOUT_CANCEL["ei_run"][1], 1, None, 0, 1),
        "here_operation": Cell(TIMEOUT_CANCEL["here_operation"][1], 1, 1, 0, 0),
        "here_job": Cell(TIMEOUT_CANCEL["here_job"][1], 1, 1, 0, 1),
    },
    "retry_while_active": {
        **_cells("success: the retry reattaches"),
        "extraction_report": Cell("success: the retry re-reads", None, 1, 0),
    },
    "kill": {
        "em_run": Cell("left running (CDF has no cancel API)", 1, 1, 0, 0),
        "estimate_quality": Cell("left running (CDF has no cancel API)", 1, 1, 0, 0),
        "extraction_report": Cell("nothing to cancel", None, 1, 0, 0),
        "ei_run": Cell("stopped (POST .../stop)", 1, None, 0, 1),
        "here_operation": Cell("deactivated (operations/deactivate)", 1, 1, 0, 1),
        "here_job": Cell("cancelled (operations/cancel)", 1, 1, 0, 1),
    },
    "429_on_start": _cells("success", faulted=1),
    "503_on_start": _cells("fails: HTTP 503, nothing started", faulted=1, runs=0),
    "lost_start_answer": {
        "em_run": Cell(LOST_START["em_run"], 1, 1, 1),
        "estimate_quality": Cell(LOST_START["estimate_quality"], 2, 1, 1),
        "ei_run": Cell(LOST_START["ei_run"], 1, None, 1),
        "here_operation": Cell(LOST_START["here_operation"], 1, 1, 1),
        "here_job": Cell(LOST_START["here_job"], 1, 1, 1),
    },
}
for _start_only in ("429_on_start", "503_on_start", "lost_start_answer"):
    EXPECTED[_start_only]["extraction_report"] = "n/a (starts nothing)"

#: the rows of the table in docs/reliability.md, in order, with their scenario text
SCENARIOS = {
    "429_retry_after": "429 with `Retry-After: 1` on a status read",
    "5xx_burst": "502, 503, 504 in a row on status reads",
    "first_read_fails": "the first status read fails (5 x 503, all its attempts)",
    "500_persistent": "500 on every status read",
    "503_persistent": "503 on every status read",
    "read_timeout": "a status read answers after 1.5 s (`read_timeout` 0.5 s)",
    "connection_refused": "the API host refuses connections mid-wait",
    "dropped_connection": "connection closed before the answer",
    "malformed_json": "200 with a body that is not JSON",
    "token_expired": "the token expires mid-wait (401)",
    "remote_failure": "the remote job fails",
    "never_finishes": "the remote job never finishes (`timeout` 0.6 s)",
    "never_finishes_cancel": "the same, with `cancel_on_timeout=True`",
    "retry_while_active": "task retry while the remote job is active",
    "kill": "the task is killed while waiting",
    "429_on_start": "429 on the start request",
    "503_on_start": "503 on the start request",
    "lost_start_answer": "the start's answer is lost (read timeout), then a task retry",
}
MODE_NOTE = {"poke": "poke", "deferred": "deferred"}


def render_matrix() -> str:
    """The Markdown table of :data:`EXPECTED` (what docs/reliability.md must show)."""
    kinds = list(CASES)
    lines = ["| scenario | " + " | ".join(CASES[k].title for k in kinds) + " |",
             "|---" * (len(kinds) + 1) + "|"]
    for scenario, text in SCENARIOS.items():
        cells = []
        for kind in kinds:
            value = EXPECTED[scenario][kind]
            if isinstance(value, str):  # not applicable to this kind
                cells.append(value)
            elif isinstance(value, dict):
                cells.append("<br>".join(f"{MODE_NOTE[m]}: {c.render()}" for m, c in value.items()))
            else:
                cells.append(value.render())
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


def test_docs_show_the_asserted_matrix() -> None:
    text = DOC.read_text()
    match = re.search(r"<!-- fault-matrix:start -->\n(.*?)\n<!-- fault-matrix:end -->", text, re.S)
    assert match, "docs/reliability.md has no fault-matrix markers"
    assert match.group(1).strip() == render_matrix(), "update docs/reliability.md:\n" + render_matrix()
