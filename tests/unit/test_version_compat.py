"""The Airflow version matrix: Airflow 3.0.0 up to the newest 3.x release.

Features that exist only in newer releases degrade gracefully, and both sides are tested here:

- the task state store (3.3+): below it the operators adopt the vendor's active run instead, or
  refuse to start a second one, so a retry never starts a duplicate either way;
- the trigger ``on_kill`` (3.3+): older triggerers never call it;
- the declarative connection form (``ui-field-behaviour``/``conn-fields``, 3.2+): older releases
  read the hooks' ``get_ui_field_behaviour()``, built from the same definition;
- the non-blocking connection lookup (3.3.2+): older releases look up in a worker thread.

CI runs the unit tests on 3.0.0 and on the newest release; where this file runs on the newest,
the "older release" side is simulated by switching the version flag off.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from typing import Any

import airflow
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import airflow_provider_pipelines._compat as compat
from airflow_provider_pipelines._compat import (
    AIRFLOW_V_3_2_PLUS,
    AIRFLOW_V_3_3_PLUS,
    NATIVE_ASYNC_CONNECTION_LOOKUP,
    AirflowException,
    AirflowSensorTimeout,
    BaseHook,
    BaseNotifier,
    Connection,
    TaskDeferred,
    get_async_connection,
    task_state_store,
)
from airflow_provider_pipelines.get_provider_info import CONNECTION_UI, connection_ui, get_provider_info
from airflow_provider_pipelines.sandbox.config import (
    EI_ORGANIZATION_ID,
    EI_PIPELINE_NIGHTLY,
    EM_PIPELINE_ASSETS_ID,
    HERE_PIPELINE_OK,
    HERE_VERSION_OK,
)

RUNNING = Version(Version(airflow.__version__).base_version)
REQUIRES_3_3 = pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="needs Airflow 3.3 or newer")


# --------------------------------------------------------------------------------------------
# the supported range and the version flags
# --------------------------------------------------------------------------------------------


def test_the_package_states_airflow_3_0_as_the_lowest_release_and_this_one_is_in_range() -> None:
    requirements = [Requirement(r) for r in importlib.metadata.requires("airflow-provider-pipelines") or []]
    airflow_req = [r for r in requirements if r.name == "apache-airflow" and r.marker is None]
    assert len(airflow_req) == 1
    assert str(airflow_req[0].specifier) == ">=3.0.0"
    assert airflow_req[0].specifier.contains(airflow.__version__, prereleases=True)
    assert RUNNING >= Version("3.0.0")


def test_version_flags_describe_the_running_airflow() -> None:
    assert compat.AIRFLOW_VERSION == RUNNING
    assert compat.AIRFLOW_V_3_1_PLUS == (RUNNING >= Version("3.1"))
    assert AIRFLOW_V_3_2_PLUS == (RUNNING >= Version("3.2"))
    assert AIRFLOW_V_3_3_PLUS == (RUNNING >= Version("3.3"))
    assert NATIVE_ASYNC_CONNECTION_LOOKUP == (
        hasattr(Connection, "aextra_dejson") and hasattr(BaseHook, "aget_connection"))
    if RUNNING >= Version("3.3.2"):
        assert NATIVE_ASYNC_CONNECTION_LOOKUP
    if RUNNING < Version("3.3"):
        assert not NATIVE_ASYNC_CONNECTION_LOOKUP


def test_compat_names_are_the_classes_airflow_itself_uses() -> None:
    """On every release: what ``defer`` raises, what marks a sensor timeout, the notifier base."""
    from airflow.sdk import BaseOperator
    from airflow.sdk.bases.notifier import BaseNotifier as SdkNotifier

    from airflow_provider_pipelines.callbacks.cognite import CogniteExtractionPipelineRunCallback
    from airflow_provider_pipelines.triggers.edge_impulse import EdgeImpulsePipelineRunTrigger

    trigger = EdgeImpulsePipelineRunTrigger(conn_id="c", ref={"run_id": 1}, deadline=None, poll_interval=1)
    with pytest.raises(TaskDeferred):
        BaseOperator(task_id="t").defer(trigger=trigger, method_name="execute_complete")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # airflow.exceptions spellings are deprecated on 3.3
        import airflow.exceptions as core_exceptions

        assert issubclass(AirflowSensorTimeout, core_exceptions.AirflowSensorTimeout)
    assert issubclass(AirflowSensorTimeout, AirflowException)
    assert BaseNotifier is SdkNotifier
    assert issubclass(CogniteExtractionPipelineRunCallback, SdkNotifier)


def test_bad_sensor_intervals_fail_with_the_same_message_on_every_release() -> None:
    """Airflow 3.0's sensor raises AirflowException first; ours is checked before it."""
    from airflow_provider_pipelines.sensors.cognite import CogniteEntityMatchingPipelineRunSensor

    for kwargs, field in (({"timeout": -1}, "timeout"), ({"poke_interval": -5}, "poke_interval"),
                          ({"timeout": 0}, "timeout")):
        with pytest.raises(ValueError, match=f"{field} must be a positive number of seconds"):
            CogniteEntityMatchingPipelineRunSensor(task_id="s", pipeline_id=1, job_id=2, **kwargs)


# --------------------------------------------------------------------------------------------
# task state store (3.3+) and the fallback
# --------------------------------------------------------------------------------------------


class FakeStore:
    """The Airflow 3.3 task state store accessor, as the operators use it."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any, retention: Any = None) -> None:
        self.data[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class FakeTI:
    dag_id, run_id, task_id, map_index = "compat", "manual__1", "run", -1

    def __init__(self, try_number: int) -> None:
        self.try_number = try_number
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def test_below_3_3_there_is_no_task_state_store(monkeypatch: pytest.MonkeyPatch) -> None:
    store = FakeStore()
    monkeypatch.setattr(compat, "AIRFLOW_V_3_3_PLUS", False)
    assert task_state_store({"task_state_store": store}) is None
    assert task_state_store(None) is None


def test_the_state_store_is_used_exactly_from_3_3() -> None:
    store = FakeStore()
    assert (task_state_store({"task_state_store": store}) is store) == AIRFLOW_V_3_3_PLUS
    assert task_state_store({}) is None


@pytest.fixture(params=["without a state store", "with the 3.3 state store"])
def state_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run a test once as on Airflow < 3.3 (flag off) and once with the state store (3.3+ only)."""
    available = request.param == "with the 3.3 state store"
    if available and not AIRFLOW_V_3_3_PLUS:
        pytest.skip("the task state store exists from Airflow 3.3")
    if not available:
        monkeypatch.setattr(compat, "AIRFLOW_V_3_3_PLUS", False)
    return available


@pytest.fixture
def frozen(sandbox: Any) -> Any:
    """The sandbox with its clock stopped: a run that was started stays active."""
    sandbox.clock.freeze()
    return sandbox


def _try(make: Any, try_number: int, store: FakeStore) -> Any:
    """One task try: ``execute`` until it defers; returns the trigger's ``ref``."""
    with pytest.raises(TaskDeferred) as deferred:
        make().execute({"ti": FakeTI(try_number), "task_state_store": store})
    return deferred.value.trigger.serialize()[1]["ref"]


def test_edge_impulse_retry_never_starts_a_second_run(frozen: Any, state_store: bool) -> None:
    from airflow_provider_pipelines.operators.edge_impulse import EdgeImpulseRunPipelineOperator

    def make() -> EdgeImpulseRunPipelineOperator:
        return EdgeImpulseRunPipelineOperator(task_id="run", organization_id=EI_ORGANIZATION_ID,
                                              pipeline_id=EI_PIPELINE_NIGHTLY, deferrable=True)

    store = FakeStore()
    first = _try(make, 1, store)
    assert bool(store.data) == state_store  # remembered only where a store exists
    second = _try(make, 2, store)  # below 3.3: if_running="wait" adopts the active run
    assert second["run_id"] == first["run_id"]
    assert len(frozen.requests(method="POST", path="*/pipelines/*/run")) == 1


def test_cognite_retry_never_starts_a_second_run(frozen: Any, state_store: bool) -> None:
    from airflow_provider_pipelines.operators.cognite import CogniteEntityMatchingPipelineRunOperator

    def make() -> CogniteEntityMatchingPipelineRunOperator:
        return CogniteEntityMatchingPipelineRunOperator(task_id="run", pipeline_id=EM_PIPELINE_ASSETS_ID,
                                                        deferrable=True)

    store = FakeStore()
    first = _try(make, 1, store)
    assert bool(store.data) == state_store
    second = _try(make, 2, store)  # below 3.3: reuse_active_run adopts the latest active run
    assert second["job_id"] == first["job_id"]
    assert len(frozen.requests(method="POST", path="*/entitymatching/pipelines/*/runs")) == 1


def test_here_retry_never_starts_a_second_run(frozen: Any, state_store: bool) -> None:
    from airflow_provider_pipelines.operators.here import HereSchedulePipelineVersionOperator

    def make() -> HereSchedulePipelineVersionOperator:
        return HereSchedulePipelineVersionOperator(
            task_id="run", pipeline_id=HERE_PIPELINE_OK, pipeline_version_id=HERE_VERSION_OK,
            input_catalogs={"weather": {"processingType": "changes", "version": 75, "sinceVersion": 70}},
            deferrable=True)

    store = FakeStore()
    first = _try(make, 1, store)
    if state_store:
        assert _try(make, 2, store)["operation_id"] == first["operation_id"]  # reattached
    else:
        # without a memory of its own run, the retry refuses to add a second one and says why
        with pytest.raises(AirflowException, match="did not start"):
            make().execute({"ti": FakeTI(2), "task_state_store": store})
    assert len(frozen.requests(method="POST", path="*/operations/activate")) == 1


# --------------------------------------------------------------------------------------------
# trigger on_kill (3.3+)
# --------------------------------------------------------------------------------------------


def test_trigger_on_kill_is_an_airflow_3_3_hook_and_ours_overrides_it() -> None:
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_pipelines.triggers.base import JobTrigger

    assert hasattr(BaseTrigger, "on_kill") == AIRFLOW_V_3_3_PLUS  # older triggerers never call it
    assert "on_kill" in vars(JobTrigger)
    assert asyncio.iscoroutinefunction(JobTrigger.on_kill)


@pytest.mark.parametrize("cancel_on_kill", [True, False])
def test_on_kill_stops_the_remote_run_only_when_asked(frozen: Any, cancel_on_kill: bool) -> None:
    """What a 3.3 triggerer does on a user kill (on older releases this is never called)."""
    from airflow_provider_pipelines.operators.edge_impulse import EdgeImpulseRunPipelineOperator
    from airflow_provider_pipelines.triggers.edge_impulse import EdgeImpulsePipelineRunTrigger

    with pytest.raises(TaskDeferred) as deferred:
        EdgeImpulseRunPipelineOperator(
            task_id="run", organization_id=EI_ORGANIZATION_ID, pipeline_id=EI_PIPELINE_NIGHTLY,
            deferrable=True, cancel_on_kill=cancel_on_kill,
        ).execute({"ti": FakeTI(1), "task_state_store": FakeStore()})
    kwargs = json.loads(json.dumps(deferred.value.trigger.serialize()[1]))
    assert kwargs["cancel_on_kill"] is cancel_on_kill
    asyncio.run(EdgeImpulsePipelineRunTrigger(**kwargs).on_kill())
    stops = frozen.requests(method="POST", path="*/pipelines/*/stop")
    assert len(stops) == (1 if cancel_on_kill else 0)


# --------------------------------------------------------------------------------------------
# connection form: declarative (3.2+) and the hook classmethod (3.0 / 3.1)
# --------------------------------------------------------------------------------------------

#: Load the providers the way the API server does and print what the connection form gets.
#: Airflow 3.0/3.1 call ``get_ui_field_behaviour()`` only when wtforms imports (it comes with
#: the FAB provider); a stand-in module lets that code path run here.
PROVIDERS_PROBE = textwrap.dedent("""
    import json, sys, types, warnings
    if "--stand-in-wtforms" in sys.argv:
        module = types.ModuleType("wtforms")
        for name in ("BooleanField", "IntegerField", "PasswordField", "StringField"):
            setattr(module, name, type(name, (), {}))
        sys.modules["wtforms"] = module
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        from airflow.providers_manager import ProvidersManager
        manager = ProvidersManager()
        behaviours, widgets = manager.field_behaviours, manager.connection_form_widgets
    ours = ("cognite", "edge_impulse", "here_platform")
    print("PROBE" + json.dumps({
        "behaviours": {k: v for k, v in behaviours.items() if k in ours},
        "widgets": {k: {"label": v.field.get("schema", {}).get("title"), "sensitive": v.is_sensitive}
                    for k, v in widgets.items()
                    if isinstance(v.field, dict) and k.split("__")[1:2] and k.split("__")[1] in ours},
        "warnings": [str(w.message) for w in caught if "airflow_provider_pipelines" in str(w.message)],
    }))
""")


def _probe_providers(*args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    proc = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", PROVIDERS_PROBE, *args], capture_output=True, text=True, timeout=300,
        env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(li for li in proc.stdout.splitlines() if li.startswith("PROBE"))
    return dict(json.loads(line[len("PROBE"):]))


def test_provider_info_declares_the_form_and_the_hooks_return_the_same_labels() -> None:
    for conn in get_provider_info()["connection-types"]:
        conn_type = conn["connection-type"]
        module, _, name = conn["hook-class-name"].rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        legacy = hook.get_ui_field_behaviour()
        assert conn["ui-field-behaviour"]["relabeling"] == legacy["relabeling"]
        assert conn["ui-field-behaviour"]["hidden-fields"] == legacy["hidden_fields"]
        assert conn["ui-field-behaviour"]["placeholders"] == legacy["placeholders"]
        assert conn["conn-fields"] == CONNECTION_UI[conn_type]["conn-fields"]


def test_this_airflow_builds_the_connection_form_from_our_definition() -> None:
    got = _probe_providers() if AIRFLOW_V_3_2_PLUS else _probe_providers("--stand-in-wtforms")
    assert got["behaviours"] == {t: connection_ui(t) for t in CONNECTION_UI}
    declared = {f"extra__{t}__{name}": {"label": spec["label"],
                                        "sensitive": spec["schema"].get("format") == "password"}
                for t, ui in CONNECTION_UI.items() for name, spec in ui["conn-fields"].items()}
    if AIRFLOW_V_3_2_PLUS:
        assert got["widgets"] == declared  # the "Extra Fields" section
        assert got["warnings"] == []  # the declarative form: no deprecated classmethod is used
    else:
        # no conn-fields form before 3.2: the Extra placeholder shows the JSON keys instead
        assert got["widgets"] == {}


@pytest.mark.skipif(AIRFLOW_V_3_2_PLUS, reason="Airflow 3.0/3.1 only: without wtforms the form has no labels")
def test_before_3_2_without_wtforms_airflow_does_not_ask_the_hooks() -> None:
    assert _probe_providers()["behaviours"] == {}


# --------------------------------------------------------------------------------------------
# connection lookup inside the triggerer's event loop
# --------------------------------------------------------------------------------------------


@pytest.fixture
def env_connection(conn_env: Any) -> str:
    conn_env("compat_lookup", conn_type="edge_impulse", password="ei_compat_0123456789")
    return "compat_lookup"


def test_before_3_3_2_the_async_lookup_runs_the_sync_one_in_a_worker_thread(
    env_connection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compat, "NATIVE_ASYNC_CONNECTION_LOOKUP", False)
    threads: list[threading.Thread] = []
    original = BaseHook.get_connection

    def recording(conn_id: str) -> Any:
        threads.append(threading.current_thread())
        return original(conn_id)

    monkeypatch.setattr(BaseHook, "get_connection", staticmethod(recording))

    async def lookup() -> tuple[Any, threading.Thread]:
        return await get_async_connection(env_connection), threading.current_thread()

    conn, loop_thread = asyncio.run(lookup())
    assert conn.password == "ei_compat_0123456789"
    assert threads and all(t is not loop_thread for t in threads)


@pytest.mark.skipif(not NATIVE_ASYNC_CONNECTION_LOOKUP, reason="non-blocking lookup exists from 3.3.2")
def test_from_3_3_2_the_async_lookup_never_uses_the_sync_api(
    env_connection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def blocked(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("sync get_connection called from the event loop")

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(blocked))
    conn = asyncio.run(get_async_connection(env_connection))
    assert conn.password == "ei_compat_0123456789"
