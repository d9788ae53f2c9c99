"""The in-memory state of one sandbox: config, clock, scheduler, faults, request log, vendors."""

from __future__ import annotations

import copy
import random
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from airflow_provider_pipelines.sandbox.clock import SandboxClock, Scheduler
from airflow_provider_pipelines.sandbox.config import DEFAULT_CONFIG, ConfigError, merge_config
from airflow_provider_pipelines.sandbox.faults import VENDORS, FaultRegistry, RequestLog

__all__ = ["SandboxState"]


class SandboxState:
    """Everything a running sandbox knows. All mutation happens under :attr:`lock`.

    ``config`` given at construction is the *base* configuration: :meth:`reset` goes back to it.
    """

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        # Late imports keep the vendor modules free to import this one for typing.
        from airflow_provider_pipelines.sandbox.cognite import CogniteState
        from airflow_provider_pipelines.sandbox.edge_impulse import EdgeImpulseState
        from airflow_provider_pipelines.sandbox.here import HereState

        self.lock = threading.RLock()
        self.base_config = merge_config(DEFAULT_CONFIG, config)
        self.config: dict[str, Any] = copy.deepcopy(self.base_config)
        self.clock = SandboxClock(self.config["clock"]["mode"], self.config["clock"]["start"])
        self.scheduler = Scheduler()
        self.faults = FaultRegistry()
        self.log = RequestLog(int(self.config["request_log_size"]))
        self.rng = random.Random(self.config["seed"])
        self.request_id_rng = random.Random(self.config["seed"] + 1)
        self.started_ms = self.clock.now_ms()
        self.cognite = CogniteState(self)
        self.edge_impulse = EdgeImpulseState(self)
        self.here = HereState(self)
        self.reset()

    # ------------------------------------------------------------------------------------------
    def reset(self, config: Mapping[str, Any] | None = None, *, keep_log: bool = False) -> None:
        """Back to the seed state: base config (+ optional patch), fresh clock, no faults, no runs."""
        new_config = merge_config(self.base_config, config)
        with self.lock:
            self.config = new_config
            self.clock.configure(new_config["clock"]["mode"], new_config["clock"]["start"])
            self.scheduler.clear()
            self.faults.clear()
            if not keep_log:
                self.log.clear()
            self.log.resize(int(new_config["request_log_size"]))
            self.rng = random.Random(new_config["seed"])
            self.request_id_rng = random.Random(new_config["seed"] + 1)
            self.started_ms = self.clock.now_ms()
            self.cognite.reset(self.started_ms)
            self.edge_impulse.reset(self.started_ms)
            self.here.reset(self.started_ms)

    def configure(self, patch: Mapping[str, Any] | None) -> dict[str, Any]:
        """Deep-merge a validated patch into the live configuration; returns the new config.

        Durations, outcomes and scores are captured when a job starts, so a change applies to jobs
        started afterwards. Clock settings are applied at once.
        """
        if patch is not None and not isinstance(patch, Mapping):
            raise ConfigError("the configuration must be a JSON object")
        with self.lock:
            self.tick()
            new_config = merge_config(self.config, patch)
            self.config = new_config
            if patch and "clock" in patch:
                self.clock.configure(new_config["clock"]["mode"], new_config["clock"]["start"])
            if patch and "request_log_size" in patch:
                self.log.resize(int(new_config["request_log_size"]))
            return copy.deepcopy(new_config)

    def tick(self) -> int:
        """Run every due simulation step; returns the current time (ms)."""
        with self.lock:
            now = self.clock.now_ms()
            self.scheduler.run_until(now)
            return now

    # ------------------------------------------------------------------------------------------
    def new_uuid(self) -> str:
        """A deterministic (seeded) random UUID4 string."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def new_token(self, prefix: str) -> str:
        return f"{prefix}.{self.rng.getrandbits(160):040x}"

    def new_request_id(self) -> str:
        return f"{self.request_id_rng.getrandbits(128):032x}"

    def expire_tokens(self, vendor: str | None = None) -> dict[str, int]:
        """Invalidate every token issued so far (``vendor=None``: all vendors).

        For Edge Impulse, which issues no tokens, the API keys are revoked until :meth:`reset`.
        """
        if vendor is not None and vendor not in VENDORS:
            raise ValueError(f"vendor must be one of {list(VENDORS)} or None")
        result: dict[str, int] = {}
        with self.lock:
            if vendor in (None, "cognite"):
                result["cognite"] = self.cognite.expire_tokens()
            if vendor in (None, "edge_impulse"):
                result["edge_impulse"] = self.edge_impulse.expire_tokens()
            if vendor in (None, "here"):
                result["here"] = self.here.expire_tokens()
        return result
