"""Triggerer scale and restart-burst benchmark.

N concurrent triggers run as tasks in ONE asyncio loop (exactly what a triggerer does with
``trigger.run()``), all polling a local nginx (:mod:`status_server`) that says "still running".
Each (scenario, N, trigger) phase runs in a fresh interpreter, one after the other, against the
same nginx, so every row of one run is measured on the same machine under the same conditions.

Scenarios:

* ``scale``: the N triggers start spread over one poll interval (a triggerer that accumulated
  them over time), then after a warm-up the window is measured;
* ``burst``: the N triggers start in the same loop iteration (a triggerer restart resuming
  them all at once) and the window starts at that instant.

With ``--paired`` each of our trigger kinds runs at the same time as its own instance of the
minimal trigger (two processes, one per CPU, against the same nginx), and its "x limit" figures
are the medians of its ratios to that pair. On a machine shared with others, whose speed drifts
by tens of percent from one minute to the next, this cancels the drift that sequential phases
cannot.

Figures per phase:

* ``served/ideal``: status requests nginx logged inside the window / (N x window / interval);
* ``CPU us/poll``: process CPU time (``time.process_time``) in the window / requests served;
* ``max lag``, ``lags>100ms``: how late a 10 ms ``asyncio.sleep`` woke up, maximum and count
  over the window. The probe is short so that a stall is measured whole: a 0.1 s probe (the
  period of the triggerer's own blocked-loop watchdog) reports a stall of D seconds as anything
  between D - 0.1 and D, depending on where in its sleep the stall began;
* ``RSS KiB/trigger``: resident memory growth from before the triggers were built to the end of
  the window, divided by N;
* ``peak/ideal rate``: busiest second of the window / ideal requests per second (about 1 when
  the polls are spread out, up to interval/1 s when every trigger polls in lockstep);
* ``token requests``: requests to each credential's token endpoint during the whole phase, with
  the number expected for one request per credential per token lifetime;
* ``INFO lines/poll``: stdlib log records at INFO or above emitted in the window, per poll.

Usage (one command; see ``docs/performance.md``)::

    /work/venv-bench/bin/python benchmarks/triggerer_scale.py            # N=1000,5000, 60 s windows
    /work/venv-bench/bin/python benchmarks/triggerer_scale.py --quick    # N=1000, 15 s windows
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from status_server import (
    CREDENTIALS,
    EI_ORGANIZATION,
    EI_RUN_ID,
    TOKEN_EXPIRES_IN,
    NginxStatusServer,
    environment,
)

RESULT_MARKER = "BENCH-RESULT "
#: Deadline handed to our triggers: far beyond any window (absolute epoch seconds).
DEADLINE_AFTER = 24 * 3600.0
#: Period of the loop-lag probe (see the module docstring: short, so a stall is measured whole).
LAG_PROBE = 0.01
LAG_THRESHOLD = 0.1


# ============================================================================================
# Trigger variants
# ============================================================================================


Builder = Callable[[int, float, float, str], list[Any]]  # (n, interval, deadline, base_url) -> triggers


@dataclass(frozen=True)
class Variant:
    name: str
    #: "ours", "peer" (the HTTP provider's trigger) or "limit" (minimal shared-session trigger)
    role: str
    #: nginx endpoint kind its status requests are counted under (see status_server.ENDPOINTS)
    endpoint: str
    #: module that must be importable for the variant to run
    requires: str
    build: Builder
    #: token endpoints (status_server kinds "token:<name>") its triggers use
    credentials: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        return self.name.split(" ")[0]


def _cognite_conn(i: int) -> str:
    """Cognite triggers are spread over two credentials (one token each)."""
    return f"cognite_bench_{CREDENTIALS[i % len(CREDENTIALS)]}"


def _ours(n: int, interval: float, deadline: float) -> dict[str, Any]:
    # max_poll_interval = poll_interval: a constant interval, so "ideal" is well defined and the
    # comparison with the peers' fixed interval is fair (interval growth only lowers our load).
    return {"deadline": deadline, "poll_interval": interval, "max_poll_interval": interval}


def _build_limit(n: int, interval: float, deadline: float, base_url: str) -> list[Any]:
    return [SharedSessionTrigger(f"{base_url}/minimal/job", interval) for _ in range(n)]


def _build_http_sensor(n: int, interval: float, deadline: float, base_url: str) -> list[Any]:
    from airflow.providers.http.triggers.http import HttpSensorTrigger

    return [HttpSensorTrigger(endpoint="/http-sensor/job", http_conn_id="http_bench", method="GET",
                              poke_interval=interval) for _ in range(n)]


def _build_em_run(n: int, interval: float, deadline: float, base_url: str) -> list[Any]:
    from airflow_provider_pipelines.triggers.cognite import CogniteEntityMatchingPipelineRunTrigger as T

    return [T(conn_id=_cognite_conn(i), ref={"pipeline_id": 1 + i % 7, "job_id": 100000 + i},
              **_ours(n, interval, deadline)) for i in range(n)]


def _build_estimate_quality(n: int, interval: float, deadline: float, base_url: str) -> list[Any]:
    from airflow_provider_pipelines.triggers.cognite import CogniteAdvancedJoinQualityTrigger as T

    return [T(conn_id=_cognite_conn(i), ref={"job_id": f"00000000-0000-4000-8000-{i:012d}"},
              **_ours(n, interval, deadline)) for i in range(n)]


def _build_extraction_report(n: int, interval: float, deadline: float, base_url: str) -> list[Any]:
    from airflow_provider_pipelines.triggers.cognite import CogniteExtractionPipelineRunTrigger as T

    return [T(conn_id=_cognite_conn(i), ref={"external_id": f"bench-extractor-{i}", "statuses": ["success"],
                                             "failure_statuses": ["failure"], "created_after": 1767225600000},
              **_ours(n, interval, deadline)) for i in range(n)]


def _build_edge_impulse(n: int, interval: float, deadline: float, base_url: str) -> list[Any]:
    from airflow_provider_pipelines.triggers.edge_impulse import EdgeImpulsePipelineRunTrigger as T

    return [T(conn_id="edge_impulse_bench",
              ref={"organization_id": EI_ORGANIZATION, "pipeline_id": 1 + i, "run_id": EI_RUN_ID,
                   "fail_on_import_errors": True, "started_at": time.time()},
              **_ours(n, interval, deadline)) for i in range(n)]


def _build_here_operation(n: int, interval: float, deadline: float, base_url: str) -> list[Any]:
    from airflow_provider_pipelines.triggers.here import HerePipelineOperationTrigger as T

    return [T(conn_id="here_bench",
              ref={"pipeline_id": f"5f2b5b1e-0000-4000-8000-{i:012d}",
                   "version_id": f"5f2b5b1e-0000-4000-8001-{i:012d}",
                   "operation_id": f"5f2b5b1e-0000-4000-8002-{i:012d}"},
              hook_params={"correlation_id": f"bench-task-try-{i}"},  # one per task try, as the operator does
              **_ours(n, interval, deadline)) for i in range(n)]


VARIANTS: tuple[Variant, ...] = (
    Variant("shared_aiohttp (limit)", "limit", "status:shared_aiohttp", "aiohttp", _build_limit),
    Variant("CogniteEntityMatchingPipelineRunTrigger", "ours", "status:cognite.entity_matching_pipeline_run",
            "airflow_provider_pipelines.triggers.cognite", _build_em_run, CREDENTIALS),
    Variant("CogniteAdvancedJoinQualityTrigger", "ours", "status:cognite.advanced_join_estimate_quality",
            "airflow_provider_pipelines.triggers.cognite", _build_estimate_quality, CREDENTIALS),
    Variant("CogniteExtractionPipelineRunTrigger", "ours", "status:cognite.extraction_pipeline_report",
            "airflow_provider_pipelines.triggers.cognite", _build_extraction_report, CREDENTIALS),
    Variant("EdgeImpulsePipelineRunTrigger", "ours", "status:edge_impulse.pipeline_run",
            "airflow_provider_pipelines.triggers.edge_impulse", _build_edge_impulse),
    Variant("HerePipelineOperationTrigger", "ours", "status:here.pipeline_operation",
            "airflow_provider_pipelines.triggers.here", _build_here_operation, ("here",)),
    Variant("HttpSensorTrigger (providers-http)", "peer", "status:http_sensor",
            "airflow.providers.http.triggers.http", _build_http_sensor),
)


def variant(name: str) -> Variant:
    for v in VARIANTS:
        if name in (v.name, v.short):
            return v
    raise SystemExit(f"unknown variant {name!r}; choose from {[v.short for v in VARIANTS]}")


def available(v: Variant) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(v.requires) is not None
    except ModuleNotFoundError:
        return False


def build_triggers(v: Variant, n: int, interval: float, base_url: str) -> list[Any]:
    """N trigger objects of one variant, constructed exactly as an operator would defer them."""
    return v.build(n, interval, time.time() + DEADLINE_AFTER, base_url)


# ---- the practical limit: the least a correct shared-session poller can do -------------------

_minimal_sessions: dict[int, Any] = {}
_MINIMAL_HEADERS = {"Authorization": "Bearer bench-static-token"}


def _minimal_session() -> Any:
    import aiohttp

    loop = asyncio.get_running_loop()
    session = _minimal_sessions.get(id(loop))
    if session is None or session.closed:
        session = _minimal_sessions[id(loop)] = aiohttp.ClientSession()
    return session


def _base_trigger() -> type:
    from airflow.triggers.base import BaseTrigger

    return BaseTrigger


class SharedSessionTrigger(_base_trigger()):  # type: ignore[misc]
    """GET a status document every ``poll_interval`` seconds on the loop's one shared session."""

    def __init__(self, url: str, poll_interval: float) -> None:
        super().__init__()
        self.url = url
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{__name__}.SharedSessionTrigger", {"url": self.url, "poll_interval": self.poll_interval}

    async def run(self) -> AsyncIterator[Any]:
        from airflow.triggers.base import TriggerEvent

        while True:
            status = await self._poll()
            if status not in ("Queued", "Running"):
                yield TriggerEvent({"status": status})
                return
            await asyncio.sleep(self.poll_interval)

    async def _poll(self) -> Any:
        # its own frame, so the response objects are freed before the sleep, not kept for 5 s
        async with _minimal_session().get(self.url, headers=_MINIMAL_HEADERS) as resp:
            body = await resp.json()
        return body.get("status")


# ============================================================================================
# Worker: one phase in a fresh interpreter
# ============================================================================================


class _CountingHandler(logging.Handler):
    """Counts records without formatting them (the cost of writing logs is not measured)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.samples) < 3:
            self.samples.append(f"{record.levelname} {record.name}: {record.msg}")


def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    v = variant(spec["variant"])
    n, interval, mode = int(spec["n"]), float(spec["interval"]), spec["mode"]
    window, warmup = float(spec["window"]), float(spec["warmup"])

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    counter = _CountingHandler()
    root = logging.getLogger()
    root.handlers = [counter]
    root.setLevel(logging.INFO)

    if v.role == "ours":
        from airflow_provider_pipelines.hooks import _http
        from airflow_provider_pipelines.hooks._auth import TOKEN_CACHE

    gc_pauses: list[tuple[float, int, float, float]] = []  # (wall time, generation, seconds, CPU seconds)
    gc_started = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[:] = [time.perf_counter(), time.process_time()]
        else:
            gc_pauses.append((time.time(), info["generation"], time.perf_counter() - gc_started[0],
                              time.process_time() - gc_started[1]))

    gc.collect()
    gc.callbacks.append(on_gc)
    objects_base = len(gc.get_objects())
    rss_base = _rss_kib()
    triggers = build_triggers(v, n, interval, spec["base_url"])

    events: list[Any] = []
    crashes: list[str] = []

    async def drive(trigger: Any, offset: float) -> None:
        if offset:
            await asyncio.sleep(offset)
        try:
            async for event in trigger.run():
                events.append(event.payload)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a trigger that dies stops polling: shows up in served/ideal
            crashes.append(f"{type(err).__name__}: {err}")

    lags: list[tuple[float, float]] = []

    async def monitor() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(LAG_PROBE)
            lags.append((time.time(), time.perf_counter() - before - LAG_PROBE))

    monitor_task = asyncio.create_task(monitor())
    await asyncio.sleep(0.3)

    t_start = time.time()
    if mode == "burst":
        tasks = [asyncio.create_task(drive(t, 0.0)) for t in triggers]
        window_start_target = t_start
    else:
        tasks = [asyncio.create_task(drive(t, i * interval / n)) for i, t in enumerate(triggers)]
        window_start_target = t_start + interval + warmup
    await asyncio.sleep(max(0.0, window_start_target - time.time()))
    window_start, cpu_start, logs_start = time.time(), time.process_time(), counter.count
    await asyncio.sleep(max(0.0, window_start + window - time.time()))
    window_end, cpu_end, logs_end = time.time(), time.process_time(), counter.count
    rss_end = _rss_kib()
    objects_end = len(gc.get_objects())
    gc.callbacks.remove(on_gc)

    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    monitor_task.cancel()
    await asyncio.gather(monitor_task, return_exceptions=True)
    for session in list(_minimal_sessions.values()):
        await session.close()

    in_window = [lag for when, lag in lags if window_start <= when <= window_end]
    gc_window = [(gen, took, cpu) for when, gen, took, cpu in gc_pauses if window_start <= when <= window_end]
    result: dict[str, Any] = {
        "variant": v.name, "role": v.role, "mode": mode, "n": n, "interval": interval,
        "t_start": t_start, "window_start": window_start, "window_end": window_end,
        "cpu_seconds": cpu_end - cpu_start,
        "max_lag": max(in_window, default=0.0),
        "lags_over_threshold": sum(1 for lag in in_window if lag > LAG_THRESHOLD),
        "lag_samples": len(in_window),
        "rss_base_kib": rss_base, "rss_end_kib": rss_end,
        "info_logs_in_window": logs_end - logs_start, "info_log_samples": counter.samples,
        "events": len(events), "event_samples": events[:3],
        "crashes": len(crashes), "crash_samples": crashes[:3],
        "fd_limit": hard,
        "gc_objects_per_trigger": (objects_end - objects_base) / n,
        "gc_full_collections": sum(1 for gen, _, _ in gc_window if gen == 2),
        "gc_seconds": sum(took for _, took, _ in gc_window),
        "gc_cpu_seconds": sum(cpu for _, _, cpu in gc_window),
        "gc_max_pause": max((took for _, took, _ in gc_window), default=0.0),
        "gc_objects_end": objects_end,
        "loadavg_end": os.getloadavg(),
    }
    if v.role == "ours":
        result["token_fetches_in_process"] = sum(TOKEN_CACHE.fetches.values())
        result["shared_sessions_created"] = _http.async_sessions_created()
        result["shared_sessions_open_after"] = sum(
            1 for entry in list(_http._loop_sessions.values()) if not entry.session.closed
        )
    return result


def worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    result = asyncio.run(_worker(spec))
    print(RESULT_MARKER + json.dumps(result), flush=True)


# ============================================================================================
# Driver: phases, nginx log accounting, tables, targets
# ============================================================================================


@dataclass
class Phase:
    """One measured phase with the figures derived from the worker and nginx's access log."""

    variant: str
    role: str
    mode: str
    n: int
    repeat: int
    served: int = 0
    ideal: float = 0.0
    cpu_us_per_poll: float = math.nan
    max_lag_ms: float = math.nan
    lags_over: int = 0
    rss_kib_per_trigger: float = math.nan
    peak_rate_factor: float = math.nan
    non_2xx: int = 0
    token_requests: dict[str, int] = field(default_factory=dict)
    token_expected: dict[str, list[int]] = field(default_factory=dict)
    info_lines_per_poll: float = math.nan
    #: ``--paired``: CPU per poll and max lag as ratios to the minimal trigger that ran at the same time
    pair_cpu_ratio: float = math.nan
    pair_lag_ratio: float = math.nan
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def served_ratio(self) -> float:
        return self.served / self.ideal if self.ideal else math.nan

    @property
    def tokens_ok(self) -> bool:
        return all(self.token_requests.get(c, 0) in exp for c, exp in self.token_expected.items())


def _refresh_period() -> float:
    """Seconds between token requests of one credential (mirrors hooks/_auth.py)."""
    from airflow_provider_pipelines.hooks._auth import REFRESH_LEAD_SECONDS

    return TOKEN_EXPIRES_IN - min(REFRESH_LEAD_SECONDS, TOKEN_EXPIRES_IN / 2)


def _start_worker(server: NginxStatusServer, v: Variant, n: int, mode: str,
                  args: argparse.Namespace) -> subprocess.Popen[str]:
    spec = {"variant": v.name, "n": n, "interval": args.interval, "mode": mode,
            "window": args.window if mode == "scale" else args.burst_window,
            "warmup": args.warmup, "base_url": server.url}
    nice = args.nice
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
        env=environment(server.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )


def run_phase(server: NginxStatusServer, v: Variant, n: int, mode: str, args: argparse.Namespace,
              repeat: int) -> Phase:
    offset = server.log_offset()
    proc = _start_worker(server, v, n, mode, args)
    return _finish_phase(server, v, n, mode, args, repeat, proc, offset)


def run_pair(server: NginxStatusServer, v: Variant, limit: Variant, n: int, mode: str,
             args: argparse.Namespace, repeat: int) -> tuple[Phase, Phase]:
    """``v`` and the minimal trigger in two processes at the same time (``--paired``)."""
    offset = server.log_offset()
    ours_proc = _start_worker(server, v, n, mode, args)
    limit_proc = _start_worker(server, limit, n, mode, args)
    ours = _finish_phase(server, v, n, mode, args, repeat, ours_proc, offset)
    lim = _finish_phase(server, limit, n, mode, args, repeat, limit_proc, offset)
    ours.pair_cpu_ratio = ours.cpu_us_per_poll / lim.cpu_us_per_poll
    ours.pair_lag_ratio = ours.max_lag_ms / lim.max_lag_ms if lim.max_lag_ms else math.nan
    return ours, lim


def _finish_phase(server: NginxStatusServer, v: Variant, n: int, mode: str, args: argparse.Namespace,
                  repeat: int, proc: subprocess.Popen[str], offset: int) -> Phase:
    try:
        stdout, stderr = proc.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    line = next((ln for ln in stdout.splitlines() if ln.startswith(RESULT_MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"worker for {v.name} N={n} {mode} failed (exit {proc.returncode}):\n"
                         f"{stdout[-3000:]}\n{stderr[-3000:]}")
    raw = json.loads(line[len(RESULT_MARKER):])
    phase = Phase(v.name, v.role, mode, n, repeat, raw=raw)

    ws, we = raw["window_start"], raw["window_end"]
    buckets: Counter[int] = Counter()
    token_times: dict[str, list[float]] = {c: [] for c in v.credentials}
    last_request = ws
    for entry in server.lines(offset):
        if entry.kind == v.endpoint:
            last_request = max(last_request, entry.time)
            if ws <= entry.time <= we:
                phase.served += 1
                buckets[int(entry.time - ws)] += 1
                if v.role != "peer" and not 200 <= entry.status < 300:
                    phase.non_2xx += 1
        elif entry.kind.startswith("token:") and entry.kind[6:] in token_times:
            token_times[entry.kind[6:]].append(entry.time)

    window = we - ws
    phase.ideal = n * window / args.interval
    if phase.served:
        phase.cpu_us_per_poll = raw["cpu_seconds"] / phase.served * 1e6
        phase.info_lines_per_poll = raw["info_logs_in_window"] / phase.served
    phase.max_lag_ms = raw["max_lag"] * 1000
    phase.lags_over = raw["lags_over_threshold"]
    phase.rss_kib_per_trigger = (raw["rss_end_kib"] - raw["rss_base_kib"]) / n
    full_seconds = [count for second, count in buckets.items() if second < int(window)]
    if full_seconds:
        phase.peak_rate_factor = max(full_seconds) / (n / args.interval)
    if v.credentials:
        period = _refresh_period()
        for cred, times in token_times.items():
            phase.token_requests[cred] = len(times)
            if times:
                span = last_request - min(times)
                # one request per token lifetime; within 2 s of a refresh boundary either count is right
                expected = {1 + math.floor(span / period)}
                if span % period < 2.0 and span >= period:
                    expected.add(math.floor(span / period))
                if period - span % period < 2.0:
                    expected.add(2 + math.floor(span / period))
                phase.token_expected[cred] = sorted(expected)
            else:
                phase.token_expected[cred] = [1]
    return phase


def median_phase(phases: Sequence[Phase]) -> Phase:
    """Per-figure median over repeats (as in the issue's table)."""
    first = phases[0]
    med = Phase(first.variant, first.role, first.mode, first.n, -1)
    med.served = int(statistics.median(p.served for p in phases))
    med.ideal = statistics.median(p.ideal for p in phases)
    for name in ("cpu_us_per_poll", "max_lag_ms", "rss_kib_per_trigger", "peak_rate_factor",
                 "info_lines_per_poll", "pair_cpu_ratio", "pair_lag_ratio"):
        setattr(med, name, statistics.median(getattr(p, name) for p in phases))
    med.lags_over = int(statistics.median(p.lags_over for p in phases))
    med.non_2xx = max(p.non_2xx for p in phases)
    # token accounting must hold in every repeat: report the worst
    worst = next((p for p in phases if not p.tokens_ok), first)
    med.token_requests, med.token_expected = worst.token_requests, worst.token_expected
    med.raw = {"repeats": [p.raw for p in phases], "served_ratios": [p.served_ratio for p in phases]}
    return med


def _fmt(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _cpu_ratio(row: Phase, limit: Phase) -> float:
    """CPU per poll against the minimal trigger: its pair's under ``--paired``, else its row's."""
    if not math.isnan(row.pair_cpu_ratio):
        return row.pair_cpu_ratio
    return row.cpu_us_per_poll / limit.cpu_us_per_poll


def _lag_ratio(row: Phase, limit: Phase) -> float:
    if not math.isnan(row.pair_lag_ratio):
        return row.pair_lag_ratio
    return row.max_lag_ms / limit.max_lag_ms if limit.max_lag_ms else math.inf


def table(rows: Sequence[Phase], mode: str) -> str:
    by_n: dict[int, dict[str, Phase]] = {}
    for row in rows:
        by_n.setdefault(row.n, {})[row.role if row.role != "ours" else row.variant] = row
    head = ["trigger", "N", "served/ideal", "CPU us/poll", "x limit", "x HttpSensor", "max lag ms",
            "lags>100ms", "RSS KiB/trig", "peak/ideal rate", "token req (expected)", "INFO/poll"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for row in rows:
        peers = by_n[row.n]
        limit, peer = peers.get("limit"), peers.get("peer")
        tokens = "-"
        if row.token_requests:
            tokens = ", ".join(f"{c}: {row.token_requests[c]} ({'/'.join(map(str, row.token_expected[c]))})"
                               for c in sorted(row.token_requests))
        lines.append(" | ".join([
            row.variant, f"{row.n:,}", _fmt(row.served_ratio, 3), _fmt(row.cpu_us_per_poll),
            _fmt(_cpu_ratio(row, limit), 2) if limit else "-",
            _fmt(row.cpu_us_per_poll / peer.cpu_us_per_poll, 2) if peer else "-",
            _fmt(row.max_lag_ms), str(row.lags_over), _fmt(row.rss_kib_per_trigger, 1),
            _fmt(row.peak_rate_factor, 2), tokens, _fmt(row.info_lines_per_poll, 3),
        ]))
    title = {"scale": "Triggerer scale (triggers started over one interval; steady-state window)",
             "burst": "Restart burst (all triggers started in the same loop iteration; "
                      "window from that instant)"}[mode]
    return f"### {title}\n\n" + "\n".join(lines) + "\n"


@dataclass
class Check:
    what: str
    ok: bool
    detail: str


def check_targets(rows: Sequence[Phase]) -> list[Check]:
    """The issue's targets, for the largest N of the scale scenario (ratios within one run)."""
    checks: list[Check] = []
    scale = [r for r in rows if r.mode == "scale"]
    if not scale:
        return checks
    n = max(r.n for r in scale)
    group = {r.role if r.role != "ours" else r.variant: r for r in scale if r.n == n}
    limit, peer = group.get("limit"), group.get("peer")
    for row in (r for r in scale if r.n == n and r.role == "ours"):
        name = f"{row.variant} N={n:,}"
        checks.append(Check(f"{name}: served >= 0.99 of ideal", row.served_ratio >= 0.99,
                            f"{row.served_ratio:.3f}"))
        if limit:
            paired = "" if math.isnan(row.pair_cpu_ratio) else " (median of the ratios to its pair)"
            ratio = _cpu_ratio(row, limit)
            checks.append(Check(f"{name}: CPU/poll <= 1.5x practical limit", ratio <= 1.5,
                                f"{row.cpu_us_per_poll:.0f} vs {limit.cpu_us_per_poll:.0f} us "
                                f"= {ratio:.2f}x{paired}"))
            lag = _lag_ratio(row, limit)
            checks.append(Check(f"{name}: max loop lag <= 1.5x practical limit", lag <= 1.5,
                                f"{row.max_lag_ms:.0f} vs {limit.max_lag_ms:.0f} ms = {lag:.2f}x{paired}"))
        if peer:
            ratio = row.cpu_us_per_poll / peer.cpu_us_per_poll
            checks.append(Check(f"{name}: CPU/poll <= 1/5 of HttpSensorTrigger", ratio <= 0.2,
                                f"{row.cpu_us_per_poll:.0f} vs {peer.cpu_us_per_poll:.0f} us "
                                f"= 1/{1 / ratio:.1f}"))
    for row in (r for r in rows if r.role == "ours"):
        checks.append(Check(
            f"{row.variant} N={row.n:,} {row.mode}: one token request per credential per token lifetime",
            row.tokens_ok, ", ".join(f"{c}: {row.token_requests.get(c)} (expected {row.token_expected[c]})"
                                     for c in sorted(row.token_expected)),
        ))
    return checks


def run(args: argparse.Namespace) -> tuple[list[Phase], list[Check]]:
    chosen = [v for v in VARIANTS if not args.variants or v.short in args.variants]
    missing = [v.name for v in chosen if not available(v)]
    chosen = [v for v in chosen if available(v)]
    if missing:
        print(f"(skipping, not installed: {', '.join(missing)})", file=sys.stderr)
    results: list[Phase] = []
    limit_variant = next((v for v in chosen if v.role == "limit"), None)
    if args.paired and limit_variant is None:
        raise SystemExit("--paired needs the minimal trigger (shared_aiohttp) among the variants")
    with NginxStatusServer(nice=args.nice) as server:
        print(f"nginx at {server.url}; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; "
              f"interval {args.interval:g} s; windows: scale {args.window:g} s "
              f"(+{args.interval + args.warmup:g} s "
              f"ramp-up), burst {args.burst_window:g} s; repeats {args.repeat}"
              f"{'; paired with the minimal trigger' if args.paired else ''}", file=sys.stderr)
        for mode in args.scenarios:
            for n in args.n:
                per_variant: dict[str, list[Phase]] = {v.name: [] for v in chosen}
                for rep in range(args.repeat):
                    # rotate the order per repeat, so a drift in machine load favours no variant
                    for v in chosen[rep % len(chosen):] + chosen[:rep % len(chosen)]:
                        if args.paired and v.role == "limit":
                            continue  # its phases come with the pairs below
                        if args.paired and v.role == "ours" and limit_variant is not None:
                            phase, pair = run_pair(server, v, limit_variant, n, mode, args, rep)
                            per_variant[limit_variant.name].append(pair)
                        else:
                            phase = run_phase(server, v, n, mode, args, rep)
                        per_variant[v.name].append(phase)
                        if not math.isnan(phase.pair_cpu_ratio):
                            print(f"  {mode:5} N={n:<5} #{rep + 1} (its pair, the minimal trigger: "
                                  f"{pair.cpu_us_per_poll:.0f} us/poll, max lag {pair.max_lag_ms:.0f} ms; "
                                  f"ratios {phase.pair_cpu_ratio:.2f}x CPU, {phase.pair_lag_ratio:.2f}x lag)",
                                  file=sys.stderr)
                        print(f"  {mode:5} N={n:<5} #{rep + 1} {v.name}: served {phase.served_ratio:.3f}, "
                              f"{phase.cpu_us_per_poll:.0f} us/poll, max lag {phase.max_lag_ms:.0f} ms, "
                              f"GC {phase.raw['gc_seconds']:.2f} s, CPU {phase.raw['gc_cpu_seconds']:.2f} s "
                              f"({phase.raw['gc_full_collections']} full, max "
                              f"{phase.raw['gc_max_pause'] * 1000:.0f} ms), "
                              f"{phase.raw['gc_objects_per_trigger']:.0f} objects/trigger, "
                              f"crashes {phase.raw['crashes']}, events {phase.raw['events']}, "
                              f"load {phase.raw['loadavg_end'][0]:.1f}", file=sys.stderr)
                        time.sleep(args.pause)
                results.extend(median_phase(per_variant[v.name]) for v in chosen if per_variant[v.name])
    return results, check_targets(results)


def report(rows: Sequence[Phase], checks: Sequence[Check], args: argparse.Namespace) -> str:
    out = []
    for mode in args.scenarios:
        out.append(table([r for r in rows if r.mode == mode], mode))
    if checks:
        out.append("### Targets (largest N, scale scenario; token rule in every phase)\n")
        out.extend(f"- [{'PASS' if c.ok else 'FAIL'}] {c.what}: {c.detail}" for c in checks)
        out.append("")
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="N=1000 only, 15 s windows, 10 s burst windows")
    p.add_argument("--n", type=int, nargs="+", default=None, help="trigger counts (default 1000 5000)")
    p.add_argument("--window", type=float, default=None, help="scale window seconds (default 60)")
    p.add_argument("--burst-window", type=float, default=None, help="burst window seconds (default 30)")
    p.add_argument("--warmup", type=float, default=5.0, help="extra seconds after the ramp-up interval")
    p.add_argument("--interval", type=float, default=5.0, help="poll interval seconds (default 5)")
    p.add_argument("--repeat", type=int, default=1, help="runs per phase; the table shows medians")
    p.add_argument("--scenarios", nargs="+", choices=("scale", "burst"), default=["scale", "burst"])
    p.add_argument("--variants", nargs="+", default=None,
                   help="subset, by first word: " + " ".join(v.short for v in VARIANTS))
    p.add_argument("--pause", type=float, default=2.0, help="seconds between phases")
    p.add_argument("--nice", type=int, default=0,
                   help="niceness of the measured processes, e.g. -5 (root) on a machine others use too")
    p.add_argument("--paired", action="store_true",
                   help="run each of our trigger kinds at the same time as its own minimal trigger "
                        "(two processes) and compare it with that pair, so drift of a shared "
                        "machine's speed between phases cancels out")
    p.add_argument("--json", help="also write all figures to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    if args.n is None:
        args.n = [1000] if args.quick else [1000, 5000]
    if args.window is None:
        args.window = 15.0 if args.quick else 60.0
    if args.burst_window is None:
        args.burst_window = 10.0 if args.quick else 30.0
    return args


def write_json(path: str, rows: Sequence[Phase], checks: Sequence[Check]) -> None:
    data = {
        "rows": [{**{k: v for k, v in r.__dict__.items() if k != "raw"}, "served_ratio": r.served_ratio,
                  "raw": r.raw} for r in rows],
        "checks": [c.__dict__ for c in checks],
    }
    with open(path, "w") as fh:
        json.dump(data, fh, indent=1, default=str)


def main(argv: Sequence[str] | None = None, printer: Callable[[str], None] = print) -> int:
    args = parser().parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0
    args = resolve_args(args)
    rows, checks = run(args)
    printer(report(rows, checks, args))
    if args.json:
        write_json(args.json, rows, checks)
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
