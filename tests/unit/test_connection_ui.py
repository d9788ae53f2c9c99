"""The connection form definitions (CONNECTION_UI): consistent, complete, and true to the hooks.

The browser test (tests/ui) shows them in the real Airflow UI; these tests check the rules that
need no browser: one definition feeds both the declarative provider info (Airflow 3.2+) and the
hooks' ``get_ui_field_behaviour()`` (3.0 / 3.1), secrets are password fields, and every extra
field of the form is a key the hook really reads.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import Any

import pytest

from airflow_provider_pipelines._compat import Connection
from airflow_provider_pipelines.get_provider_info import CONNECTION_UI, connection_ui, get_provider_info

INFO = get_provider_info()
TYPES = sorted(CONNECTION_UI)
BY_TYPE = {c["connection-type"]: c for c in INFO["connection-types"]}
#: The fields Airflow's form knows (``hidden-fields``/``relabeling``/``placeholders`` keys).
STANDARD_FIELDS = {"description", "host", "schema", "login", "password", "port", "extra"}
#: Words that make an extra field a secret (``*_url`` fields only name where a secret is used).
SECRET_WORDS = ("token", "secret", "password", "api_key", "apikey", "credentials")

#: The least each connection type needs to resolve, and a sample value per extra field.
BASE: dict[str, dict[str, Any]] = {
    "cognite": {"host": "https://westeurope-1.cognitedata.com", "login": "client", "password": "secret-1",
                "extra": {"project": "p", "token_url": "https://login.example.test/oauth2/v2.0/token"}},
    "edge_impulse": {"password": "ei_0123456789abcdef", "extra": {}},
    "here_platform": {"login": "AKID", "password": "secret-2", "extra": {}},
}
SAMPLES = {"integer": 7, "string": "https://example.test/value"}


def _hook_class(conn_type: str) -> Any:
    module, _, name = BY_TYPE[conn_type]["hook-class-name"].rpartition(".")
    return getattr(importlib.import_module(module), name)


class RecordingExtra(dict):  # type: ignore[type-arg]
    """A connection extra that records which keys the hook looked at."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def _resolve(conn_type: str, extra: Mapping[str, Any]) -> tuple[Any, RecordingExtra]:
    base = BASE[conn_type]
    conn = Connection(conn_id=f"ui_{conn_type}", conn_type=conn_type, host=base.get("host"),
                      login=base.get("login"), password=base.get("password"), extra=json.dumps(dict(extra)))
    recording = RecordingExtra(extra)
    hook = _hook_class(conn_type)(f"ui_{conn_type}")
    return hook._resolve(conn, recording), recording


@pytest.mark.parametrize("conn_type", TYPES)
def test_one_definition_feeds_the_provider_info_and_the_hook_classmethod(conn_type: str) -> None:
    ui = CONNECTION_UI[conn_type]
    declared = BY_TYPE[conn_type]
    keys = ("hidden-fields", "relabeling", "placeholders")
    assert declared["ui-field-behaviour"] == {k: ui[k] for k in keys}
    assert declared["conn-fields"] == ui["conn-fields"]
    classmethod_form = _hook_class(conn_type).get_ui_field_behaviour()
    assert classmethod_form == connection_ui(conn_type) == {
        "hidden_fields": ui["hidden-fields"], "relabeling": ui["relabeling"],
        "placeholders": ui["placeholders"]}
    # the classmethod hands out copies: a caller cannot change the shared definition
    classmethod_form["relabeling"]["host"] = "changed"
    assert CONNECTION_UI[conn_type]["relabeling"].get("host") != "changed"


@pytest.mark.parametrize("conn_type", TYPES)
def test_fields_are_hidden_or_relabelled_never_both(conn_type: str) -> None:
    ui = CONNECTION_UI[conn_type]
    hidden, relabeled = set(ui["hidden-fields"]), set(ui["relabeling"])
    assert hidden <= STANDARD_FIELDS and relabeled <= STANDARD_FIELDS
    assert not hidden & relabeled
    assert not hidden & set(ui["placeholders"]), "a placeholder on a hidden field is never seen"
    # schema and port mean nothing to these REST APIs; host and password always matter
    assert {"schema", "port"} <= hidden and {"host", "password"} <= relabeled
    assert all(label and label[0].isupper() for label in ui["relabeling"].values())


@pytest.mark.parametrize("conn_type", TYPES)
def test_the_extra_placeholder_is_the_json_older_airflow_users_type(conn_type: str) -> None:
    """Airflow 3.0/3.1 have no ``conn-fields`` form: the Extra placeholder shows the keys to use."""
    ui = CONNECTION_UI[conn_type]
    if not ui["conn-fields"]:
        return
    placeholder = json.loads(ui["placeholders"]["extra"])
    assert isinstance(placeholder, dict) and placeholder
    assert set(placeholder) <= set(ui["conn-fields"]), "the placeholder names keys the form does not have"


@pytest.mark.parametrize("conn_type", TYPES)
def test_extra_fields_are_optional_labelled_and_secrets_are_password_fields(conn_type: str) -> None:
    for name, spec in CONNECTION_UI[conn_type]["conn-fields"].items():
        assert set(spec) <= {"label", "description", "schema"}, name
        assert spec["label"] and spec["description"], name
        types = spec["schema"]["type"]
        assert isinstance(types, list) and "null" in types, f"{name}: an empty form field must stay valid"
        assert spec["schema"].get("format") in (None, "password"), name
        secret = any(word in name for word in SECRET_WORDS) and not name.endswith("_url")
        assert (spec["schema"].get("format") == "password") == secret, f"{name}: secret={secret}"


@pytest.mark.parametrize(("conn_type", "field"), [
    (t, f) for t in TYPES for f in CONNECTION_UI[t]["conn-fields"]
])
def test_every_extra_field_of_the_form_is_read_by_the_hook(conn_type: str, field: str) -> None:
    spec = CONNECTION_UI[conn_type]["conn-fields"][field]
    kind = next(t for t in spec["schema"]["type"] if t != "null")
    extra = {**BASE[conn_type]["extra"], field: SAMPLES[kind]}
    if field == "scope":
        extra[field] = "hrn:here:authorization::org:project/p"
    _, recording = _resolve(conn_type, extra)
    assert field in recording.read, f"{conn_type} hook ignores the form field {field!r}"


@pytest.mark.parametrize("conn_type", TYPES)
def test_the_form_saves_empty_extra_fields_as_null_and_the_hook_accepts_that(conn_type: str) -> None:
    """Airflow's form stores every extra field, ``null`` when left empty (seen in tests/ui)."""
    extra = {name: None for name in CONNECTION_UI[conn_type]["conn-fields"]}
    extra.update(BASE[conn_type]["extra"])
    resolved, _ = _resolve(conn_type, extra)
    assert resolved.base_url.startswith("https://")
