"""Unit tests of the clock, the scheduler, the configuration merge and the redaction helpers."""

from __future__ import annotations

import gzip
import json

import pytest

from airflow_provider_pipelines.sandbox.clock import SandboxClock, Scheduler, seconds_to_ms
from airflow_provider_pipelines.sandbox.config import (
    DEFAULT_CONFIG,
    ConfigError,
    merge_config,
    resource_knobs,
)
from airflow_provider_pipelines.sandbox.faults import redact_body, redact_headers, vendor_for_path
from airflow_provider_pipelines.sandbox.server import SandboxServer
from airflow_provider_pipelines.sandbox.testing import use_sandbox_connections


def test_manual_clock() -> None:
    clock = SandboxClock("manual", start=1_700_000_000)
    assert clock.now_ms() == 1_700_000_000_000 and clock.mode == "manual"
    clock.advance(1.5)
    assert clock.now() == 1_700_000_001.5
    clock.set(1_700_000_010)
    assert clock.now_ms() == 1_700_000_010_000
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(1)


def test_real_clock_advance_and_freeze() -> None:
    clock = SandboxClock()
    before = clock.now()
    clock.advance(100)
    assert clock.now() >= before + 100
    frozen = clock.freeze()
    assert clock.now() == frozen
    clock.unfreeze()
    assert clock.mode == "real" and clock.now() >= frozen
    with pytest.raises(ValueError):
        SandboxClock("sideways")


def test_scheduler_order_and_never() -> None:
    seen: list[tuple[str, int]] = []
    sched = Scheduler()
    sched.at(20, lambda t: seen.append(("b", t)))
    sched.at(10, lambda t: seen.append(("a", t)))
    sched.at(20, lambda t: seen.append(("c", t)))
    assert sched.at(None, lambda t: seen.append(("never", t))) is None
    cancelled = sched.at(15, lambda t: seen.append(("x", t)))
    assert cancelled is not None
    cancelled.cancel()
    assert sched.run_until(19) == 1
    assert sched.run_until(20) == 2
    assert seen == [("a", 10), ("b", 20), ("c", 20)]
    assert sched.pending() == 0


def test_seconds_to_ms() -> None:
    assert seconds_to_ms(1.0005) == 1000 and seconds_to_ms(2) == 2000
    assert seconds_to_ms(None) is None and seconds_to_ms(float("inf")) is None


def test_merge_config_validation() -> None:
    merged = merge_config(DEFAULT_CONFIG, {"here": {"versions": {"v": {"job_running": "inf"}}}})
    assert merged["here"]["versions"]["v"] == {"job_running": None}
    assert DEFAULT_CONFIG["here"]["versions"].get("v") is None  # defaults untouched
    removed = merge_config(merged, {"here": {"versions": {"v": None}}})
    assert "v" not in removed["here"]["versions"]
    for bad in (
        {"unknown": 1},
        {"clock": {"speed": 1}},
        {"clock": {"mode": "sideways"}},
        {"clock": {"start": "yesterday"}},
        {"edge_impulse": {"pipelines": {"12": {"start_error": 1}}}},
        {"cognite": {"entity_matching": {"pipelines": {"p": {"outcome": "meh"}}}}},
        {"cognite": {"entity_matching": {"pipelines": {"p": 1}}}},
        {"edge_impulse": {"default": {"waiting": True}}},
        {"here": {"default": {"redirect": 1}}},
        {"cognite": {"projects": "sandbox"}},
        {"cognite": "x"},
    ):
        with pytest.raises(ConfigError):
            merge_config(DEFAULT_CONFIG, bad)


def test_resource_knobs_fall_back_to_default() -> None:
    section = DEFAULT_CONFIG["cognite"]["entity_matching"]
    assert resource_knobs(section, "pipelines", "sandbox.em.failing")["outcome"] == "failure"
    assert resource_knobs(section, "pipelines", None, 42)["outcome"] == "success"


def test_redaction_helpers() -> None:
    headers = redact_headers([("Authorization", "Bearer abc"), ("X-Api-Key", "k"), ("Accept", "json")])
    assert headers == {"authorization": "Bearer <redacted>", "x-api-key": "<redacted>", "accept": "json"}
    form = redact_body(b"client_secret=s3cr3t&client_id=c", "application/x-www-form-urlencoded")
    assert form == {"client_secret": "<redacted>", "client_id": "c"}
    body = redact_body(
        gzip.compress(json.dumps({"password": "p", "n": [{"apiKey": "k"}]}).encode()),
        "application/json",
        "gzip",
    )
    assert body == {"password": "<redacted>", "n": [{"apiKey": "<redacted>"}]}
    assert redact_body(b"my secret token", "text/plain") == "<redacted>"
    assert redact_body(b"", "application/json") is None


def test_vendor_for_path() -> None:
    assert vendor_for_path("/api/v1/projects/p/extpipes") == "cognite"
    assert vendor_for_path("/sandbox-tenant/oauth2/v2.0/token") == "cognite"
    assert vendor_for_path("/v1/api/organizations/1/pipelines") == "edge_impulse"
    assert vendor_for_path("/pipeline-service/v2/pipelines") == "here"
    assert vendor_for_path("/oauth2/token") == "here"
    assert vendor_for_path("/_sandbox/health") == "control"
    assert vendor_for_path("/favicon.ico") == "unknown"


def test_use_sandbox_connections(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    conns = use_sandbox_connections(sandbox, monkeypatch)
    assert os.environ["AIRFLOW_CONN_HERE_DEFAULT"] == conns["AIRFLOW_CONN_HERE_DEFAULT"]


def test_url_for_wildcard_binds() -> None:
    from airflow_provider_pipelines.sandbox.server import url_for

    assert url_for("0.0.0.0", 8765) == "http://127.0.0.1:8765"
    assert url_for("::", 1) == "http://[::1]:1"
    assert url_for("localhost", 2) == "http://localhost:2"
