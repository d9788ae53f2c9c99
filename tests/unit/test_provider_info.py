"""Provider discovery: Airflow finds the package, its hooks and connection types, and the
provider info is valid and truthful (every module and class it names exists and matches)."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import airflow
import jsonschema
import pytest

import airflow_provider_pipelines
from airflow_provider_pipelines._compat import BaseHook, BaseOperator, BaseOperatorLink, BaseSensorOperator
from airflow_provider_pipelines.get_provider_info import (
    CONNECTION_UI,
    PACKAGE_NAME,
    connection_ui,
    get_provider_info,
)
from airflow_provider_pipelines.triggers.base import BaseTrigger
from tests.conftest import AIRFLOW_BIN

DIST = "airflow-provider-pipelines"
INFO = get_provider_info()
KIND_BASES: dict[str, type] = {
    "hooks": BaseHook,
    "operators": BaseOperator,
    "sensors": BaseSensorOperator,
    "triggers": BaseTrigger,
}


@pytest.fixture(scope="module")
def cli() -> dict[str, subprocess.CompletedProcess[str]]:
    """``airflow providers list`` and ``airflow providers hooks`` (JSON), run side by side."""
    commands = {"list": ["providers", "list", "-o", "json"], "hooks": ["providers", "hooks", "-o", "json"]}
    procs = {
        name: subprocess.Popen(  # noqa: S603 - the venv's own airflow, fixed arguments
            [AIRFLOW_BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=os.environ.copy(),
        )
        for name, args in commands.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


def _json_rows(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the JSON document is the line that starts with "[{" (log lines may come before it)
    match = re.search(r"(?m)^\[(?:\{|\])", proc.stdout)
    assert match, proc.stdout[-2000:]
    return list(json.JSONDecoder().raw_decode(proc.stdout[match.start():])[0])


def test_airflow_providers_list_shows_the_package(cli: dict[str, subprocess.CompletedProcess[str]]) -> None:
    rows = [r for r in _json_rows(cli["list"]) if r["package_name"] == DIST]
    assert len(rows) == 1, cli["list"].stdout[-2000:]
    assert rows[0]["version"] == airflow_provider_pipelines.__version__
    assert "Traceback" not in cli["list"].stderr


def test_airflow_finds_every_connection_type(cli: dict[str, subprocess.CompletedProcess[str]]) -> None:
    rows = {r["connection_type"]: r for r in _json_rows(cli["hooks"]) if r.get("package_name") == DIST}
    expected = {c["connection-type"]: c["hook-class-name"] for c in INFO["connection-types"]}
    assert {t: r["class"] for t, r in rows.items()} == expected
    for row in rows.values():
        hook = _import(row["class"])
        assert row["conn_id_attribute_name"] == hook.conn_name_attr and row["hook_name"] == hook.hook_name
    problems = [line for line in cli["hooks"].stderr.splitlines()
                if "airflow_provider_pipelines" in line
                and any(w in line.lower() for w in ("error", "exception"))]
    assert problems == []


def test_provider_info_validates_against_airflows_schema() -> None:
    schema_path = Path(airflow.__file__).parent / "provider_info.schema.json"
    assert schema_path.is_file(), f"schema not found at {schema_path}"
    jsonschema.validate(INFO, json.loads(schema_path.read_text()))


def test_package_name_is_the_distribution_name_and_the_entry_point_is_registered() -> None:
    dist = importlib.metadata.distribution(DIST)
    assert INFO["package-name"] == PACKAGE_NAME == dist.metadata["Name"]
    assert INFO["versions"] == [dist.version] == [airflow_provider_pipelines.__version__]
    points = [ep for ep in dist.entry_points if ep.group == "apache_airflow_provider"]
    assert len(points) == 1 and points[0].load()() == INFO
    json.dumps(INFO)  # plain JSON


def test_entry_point_resolves_to_the_function_after_the_module_is_imported() -> None:
    """The package no longer defines a same-named function that the submodule import would shadow."""
    from importlib.metadata import entry_points

    importlib.import_module("airflow_provider_pipelines.get_provider_info")
    group = entry_points(group="apache_airflow_provider")
    ours = [e for e in group if e.value.startswith("airflow_provider_pipelines")]
    (ep,) = ours
    assert ep.load()() == INFO


def test_integrations_are_unique_and_referenced() -> None:
    names = [i["integration-name"] for i in INFO["integrations"]]
    assert len(names) == len(set(names)) == 3
    for kind in KIND_BASES:
        for entry in INFO[kind]:
            assert entry["integration-name"] in names


def _listed_modules() -> list[tuple[str, str]]:
    return [(kind, module)
            for kind in KIND_BASES for entry in INFO[kind] for module in entry["python-modules"]]


def _import(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_every_listed_module_imports_and_holds_its_kind() -> None:
    missing, empty = [], []
    for kind, name in _listed_modules():
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            missing.append(f"{name} ({err})")
            continue
        defined = [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                   if obj.__module__ == name and issubclass(obj, KIND_BASES[kind])]
        if not defined:
            empty.append(f"{name} defines no {KIND_BASES[kind].__name__} subclass")
    assert missing == [], f"provider info lists modules that do not import: {missing}"
    assert empty == []


@pytest.mark.parametrize("conn", INFO["connection-types"], ids=lambda c: c["connection-type"])
def test_connection_type_hook_class_matches(conn: dict[str, Any]) -> None:
    hook = _import(conn["hook-class-name"])
    assert issubclass(hook, BaseHook)
    assert hook.conn_type == conn["connection-type"]
    assert hook.hook_name == conn["hook-name"]
    assert hasattr(hook, hook.conn_name_attr) or hook.conn_name_attr in inspect.signature(hook).parameters
    assert isinstance(hook.default_conn_name, str) and hook.default_conn_name
    assert hook.get_ui_field_behaviour() == connection_ui(conn["connection-type"])
    behaviour = conn["ui-field-behaviour"]
    assert behaviour["hidden-fields"] == hook.get_ui_field_behaviour()["hidden_fields"]
    for field, spec in conn["conn-fields"].items():
        assert spec["label"] and spec["schema"]["type"], field
    assert "test_connection" in vars(hook) or callable(hook.test_connection)


def test_connection_ui_is_declared_once_for_every_type() -> None:
    assert set(CONNECTION_UI) == {c["connection-type"] for c in INFO["connection-types"]}
    for conn in INFO["connection-types"]:
        ui = CONNECTION_UI[conn["connection-type"]]
        keys = ("hidden-fields", "relabeling", "placeholders")
        assert conn["ui-field-behaviour"] == {k: ui[k] for k in keys}


@pytest.mark.parametrize("dotted", INFO["extra-links"])
def test_extra_links_import(dotted: str) -> None:
    link = _import(dotted)
    assert issubclass(link, BaseOperatorLink) and isinstance(link.name, str) and link.name
