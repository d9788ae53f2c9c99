#!/usr/bin/env python3
# ruff: noqa: T201, S603, S606 - a command-line program: it prints and runs the commands it names
"""The one-command demo: every example DAG, end to end, against the local sandbox.

    python3 scripts/demo.py            (or: bash scripts/demo.sh)

1. Uses the Python environment that already has this checkout installed; otherwise creates
   ``.venv`` in the repository (``python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'``)
   and re-runs itself there. ``PIPELINES_DEMO_PYTHON=/path/to/python`` picks an interpreter.
2. Starts the sandbox (``pipelines-sandbox serve --port 0``) as a subprocess and takes the
   ``AIRFLOW_CONN_*`` values it prints.
3. Makes a fresh, isolated Airflow home in ``.demo/airflow`` (SQLite), runs ``airflow db migrate``,
   then runs each DAG of ``example_dags/`` through the real ``airflow dags test`` CLI.
4. Prints a summary read from the metadata database: each DAG run, its tasks, their final
   states and the key results (run and job ids, quality scores, reports).
5. Stops the sandbox and exits non-zero if any DAG run failed.

Nothing here reaches the network except the sandbox on 127.0.0.1 (and PyPI when ``.venv`` is
created). Each DAG's full ``airflow dags test`` output is kept in ``.demo/logs/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: Where the demo's Airflow home and logs go (wiped at the start of each run).
DEMO_DIR = Path(os.environ.get("PIPELINES_DEMO_DIR") or REPO / ".demo").resolve()
VENV = REPO / ".venv"
EXAMPLE_DAGS = REPO / "example_dags"
READY_PREFIX = "pipelines-sandbox ready at "
#: The example DAGs in the order the demo runs them (file stem = dag_id).
DAGS = (
    "cognite_contextualization", "edge_impulse_pipeline", "here_pipeline_run_now", "cognite_quality_gates",
)
#: Result fields shown in the summary, in this order, when a task's return value has them.
KEY_FIELDS = (
    "job_id", "run_id", "id", "operation_id", "status", "state", "version_state",
    "qualityScorePercent", "confidencePercent", "contextualizationScorePercent",
    "matches_count", "suggestedRules_count", "generatedRules_count",
    "advanced_join_external_id", "externalId", "createdTime", "message",
    "steps", "steps_finished", "files_succeeded", "items_before", "items_after", "new_items",
)
DAG_TIMEOUT = 300.0


# --------------------------------------------------------------------------------------------
# 1. the environment
# --------------------------------------------------------------------------------------------
def _has_this_checkout(python: str) -> bool:
    """Whether ``python`` can import Airflow and *this* checkout of the provider."""
    probe = (
        "import pathlib, airflow, airflow_provider_pipelines as p; "
        "print(pathlib.Path(p.__file__).resolve().parent.parent)"
    )
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and Path(out.stdout.strip()) == REPO


def ensure_environment() -> None:
    """Re-run under an interpreter that has this checkout installed (creating .venv if needed)."""
    if os.environ.get("PIPELINES_DEMO_REEXEC") == "1":
        return
    chosen = os.environ.get("PIPELINES_DEMO_PYTHON")
    if chosen:
        python = chosen
    elif _has_this_checkout(sys.executable):
        return
    else:
        python = str(VENV / "bin" / "python")
        if not _has_this_checkout(python):
            create_venv()
            python = str(VENV / "bin" / "python")
    env = {**os.environ, "PIPELINES_DEMO_REEXEC": "1"}
    os.execve(python, [python, str(Path(__file__).resolve()), *sys.argv[1:]], env)


def create_venv() -> None:
    base = shutil.which("python3") or sys.executable
    if not (VENV / "bin" / "python").exists():
        step(f"Creating {show(VENV)} with {base}")
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip"]
    step("Installing the provider and its dev extras into .venv (first run only; a few minutes)")
    subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "--quiet", "-e", f"{REPO}[dev]"], check=True)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def show(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def bin_path(name: str) -> str:
    """A console script installed next to the running interpreter."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def clean_env() -> dict[str, str]:
    """The caller's environment without any Airflow settings that could leak into the demo."""
    return {
        k: v for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) and k != "AIRFLOW_HOME"
    }


def stop_group(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM the process group started for ``proc``, then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=grace)


# --------------------------------------------------------------------------------------------
# 2. the sandbox
# --------------------------------------------------------------------------------------------
@dataclass
class Sandbox:
    proc: subprocess.Popen[Any]
    url: str
    connections: dict[str, str]


def start_sandbox(log_path: Path, config: Path | None = None, timeout: float = 60.0) -> Sandbox:
    """``pipelines-sandbox serve --port 0``; waits for its ready line and parses its export lines."""
    log = log_path.open("w")
    cmd = [bin_path("pipelines-sandbox"), "serve", "--host", "127.0.0.1", "--port", "0"]
    if config is not None:
        cmd += ["--config", str(config)]
    proc = subprocess.Popen(
        cmd,
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        env=clean_env(),
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text()
        if READY_PREFIX in text:
            connections: dict[str, str] = {}
            url = ""
            for line in text.splitlines():
                if line.startswith("export AIRFLOW_CONN_"):
                    name, _, value = line[len("export "):].partition("=")
                    connections[name] = shlex.split(value)[0]
                elif line.startswith(READY_PREFIX):
                    url = line[len(READY_PREFIX):].strip()
            return Sandbox(proc, url, connections)
        if proc.poll() is not None:
            raise RuntimeError(f"the sandbox exited with code {proc.returncode}:\n{text}")
        time.sleep(0.1)
    stop_group(proc)
    raise RuntimeError(f"the sandbox did not print its ready line within {timeout:.0f} s:\n"
                       f"{log_path.read_text()}")


# --------------------------------------------------------------------------------------------
# 3. Airflow
# --------------------------------------------------------------------------------------------
def airflow_env(home: Path, sandbox: Sandbox) -> dict[str, str]:
    return {
        **clean_env(),
        **sandbox.connections,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "PYTHONUNBUFFERED": "1",
    }


def migrate(env: dict[str, str], log_path: Path) -> None:
    with log_path.open("w") as log:
        done = subprocess.run([bin_path("airflow"), "db", "migrate"], env=env, stdout=log,
                              stderr=subprocess.STDOUT, check=False, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed (exit {done.returncode}); see {log_path}")


@dataclass
class DagOutcome:
    dag_id: str
    exit_code: int | None
    seconds: float
    log_path: Path
    run: dict[str, Any] | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.run is not None and self.run["state"] == "success"


def run_dag(dag_id: str, env: dict[str, str], logs: Path, db: Path) -> DagOutcome:
    log_path = logs / f"{dag_id}.log"
    cmd = [bin_path("airflow"), "dags", "test", dag_id, "--dagfile-path", str(EXAMPLE_DAGS / f"{dag_id}.py")]
    started = time.monotonic()
    with log_path.open("w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=DAG_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            code = None
            log.write(f"\n[demo] stopped after {DAG_TIMEOUT:.0f} s\n")
        except BaseException:  # Ctrl-C: the DAG runs in its own session, stop it too
            stop_group(proc)
            raise
    outcome = DagOutcome(dag_id, code, time.monotonic() - started, log_path)
    outcome.run, outcome.tasks = read_results(db, dag_id)
    return outcome


# --------------------------------------------------------------------------------------------
# 4. results, from the metadata DB
# --------------------------------------------------------------------------------------------
def _json(value: Any) -> Any:
    if isinstance(value, (bytes, str)):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def read_results(db: Path, dag_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The DAG's latest run, and per task instance: state, duration, rendered map index, XComs."""
    if not db.exists():
        return None, []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        row = con.execute(
            "SELECT run_id, state, logical_date, data_interval_start, data_interval_end FROM dag_run "
            "WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)).fetchone()
        if row is None:
            return None, []
        run = dict(row)
        tasks = [dict(r) for r in con.execute(
            "SELECT task_id, map_index, rendered_map_index, state, duration, try_number FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? ORDER BY start_date IS NULL, start_date, task_id, map_index",
            (dag_id, run["run_id"]))]
        xcoms: dict[tuple[str, int], dict[str, Any]] = {}
        query = "SELECT task_id, map_index, key, value FROM xcom WHERE dag_id = ? AND run_id = ?"
        for r in con.execute(query, (dag_id, run["run_id"])):
            xcoms.setdefault((r["task_id"], r["map_index"]), {})[r["key"]] = _json(r["value"])
        for task in tasks:
            task["xcom"] = xcoms.get((task["task_id"], task["map_index"]), {})
        return run, tasks
    finally:
        con.close()


def key_results(xcom: dict[str, Any], skip: str | None = None) -> str:
    """A short line of the interesting values a task returned (and pushed), each value once."""
    value = xcom.get("return_value")
    pairs: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        source = dict(value)
        run = source.pop("run", None)
        if isinstance(run, dict):  # the extraction-run sensor returns the matching run
            source = {**run, **source}
        for name in ("operation", "job"):  # HERE: the activate operation and the job it produced
            nested = source.get(name)
            if isinstance(nested, dict):
                pairs += [(f"{name}_id", nested.get(f"{name}_id")), (f"{name}_state", nested.get("state"))]
        for key in KEY_FIELDS:
            item = source.get(key)
            if isinstance(item, list) and key == "steps":
                item = len(item)
            if not isinstance(item, (dict, list)):
                pairs.append((key, item))
    elif isinstance(value, list):
        pairs.append(("items", len(value)))
    pairs += [(key, xcom.get(key)) for key in ("job_id", "run_id", "operation_id")]
    shown: list[str] = []
    ids: set[str] = {str(skip)} if skip else set()  # an id (or the map index) is shown once
    for key, item in pairs:
        if item is None or (str(item) in ids and (key.endswith("_id") or key == "advanced_join_external_id")):
            continue
        if key.endswith("_id"):
            ids.add(str(item))
        if key == "createdTime" and isinstance(item, int):  # epoch ms -> readable UTC
            item = datetime.fromtimestamp(item / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = str(item)
        shown.append(f"{key}={text if len(text) <= 60 else text[:57] + '...'}")
    return ", ".join(dict.fromkeys(shown))


def print_summary(outcomes: list[DagOutcome], total: float) -> None:
    print()
    print("=" * 100)
    print("Summary")
    print("=" * 100)
    for o in outcomes:
        state = o.run["state"] if o.run else "no run"
        print(f"\n{o.dag_id}: {state.upper()} in {o.seconds:.1f} s"
              + (f"   run {o.run['run_id']}" if o.run else ""))
        if o.run and o.run.get("data_interval_start") != o.run.get("data_interval_end"):
            print(f"  data interval {o.run['data_interval_start']} -> {o.run['data_interval_end']}")
        for t in o.tasks:
            name = t["task_id"]
            if t["map_index"] >= 0:
                name += f"[{t['rendered_map_index'] or t['map_index']}]"
            duration = f"{t['duration']:.1f}s" if t["duration"] is not None else "-"
            results = key_results(t["xcom"], skip=t["rendered_map_index"])
            print(f"  {name:<40} {t['state'] or 'none':<16} {duration:>7}  {results}")
        if o.run and o.run["state"] == "success" and o.dag_id == "cognite_quality_gates":
            reports = [t["xcom"].get("return_value") for t in o.tasks if t["task_id"] == "quality_report"]
            report = reports[0] if reports else None
            for row in report or []:
                print(f"    {row['advanced_join']:<22} quality {row['quality']}%  "
                      f"confidence {row['confidence']}%  contextualization {row['contextualization']}%")
        if not o.ok:
            print(f"  -> failed (exit code {o.exit_code}); last lines of {show(o.log_path)}:")
            lines = o.log_path.read_text(errors="replace").splitlines()
            for line in lines[-25:]:
                print(f"     {line[:220]}")
    ok = sum(o.ok for o in outcomes)
    print(f"\n{ok}/{len(outcomes)} DAG runs succeeded in {total:.0f} s. "
          f"Logs: {show(DEMO_DIR / 'logs')}/, Airflow home: {show(DEMO_DIR / 'airflow')}/")


# --------------------------------------------------------------------------------------------
def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dags", nargs="*", metavar="DAG_ID",
                        help=f"run only these DAGs (default: {', '.join(DAGS)})")
    parser.add_argument("--sandbox-config", metavar="FILE.json", type=Path,
                        help="a sandbox configuration patch (docs/sandbox.md), e.g. to see how a failing "
                             "remote job looks: {\"cognite\": {\"entity_matching\": {\"pipelines\": "
                             "{\"sandbox.em.assets\": {\"outcome\": \"failure\"}}}}}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.dags) - set(DAGS))
    if unknown:
        parser.error(f"unknown DAG(s) {unknown}; choose from {', '.join(DAGS)}")
    ensure_environment()
    began = time.monotonic()
    # a SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C, so the subprocesses are stopped too
    signal.signal(signal.SIGTERM, _terminate)

    home, logs = DEMO_DIR / "airflow", DEMO_DIR / "logs"
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    home.mkdir(parents=True)
    logs.mkdir(parents=True)

    step("Starting the sandbox (pipelines-sandbox serve --port 0)")
    config = args.sandbox_config.resolve() if args.sandbox_config else None
    sandbox = start_sandbox(logs / "sandbox.log", config)
    outcomes: list[DagOutcome] = []
    interrupted: int | None = None
    try:
        print(f"    sandbox at {sandbox.url}; connections: {', '.join(sorted(sandbox.connections))}")
        env = airflow_env(home, sandbox)
        step(f"Creating the Airflow metadata DB in {show(home)} (airflow db migrate)")
        migrate(env, logs / "db-migrate.log")
        selected = [d for d in DAGS if not args.dags or d in args.dags]
        for index, dag_id in enumerate(selected, 1):
            print(f"[{index}/{len(selected)}] {dag_id}: airflow dags test ...", end="", flush=True)
            outcome = run_dag(dag_id, env, logs, home / "airflow.db")
            outcomes.append(outcome)
            print(f" {'ok' if outcome.ok else 'FAILED'} ({outcome.seconds:.1f} s)", flush=True)
    except (KeyboardInterrupt, SystemExit) as stop:  # Ctrl-C, or SIGTERM through _terminate
        interrupted = stop.code if isinstance(stop, SystemExit) and isinstance(stop.code, int) else 130
        print("\ninterrupted", flush=True)
    finally:
        step("Stopping the sandbox")
        stop_group(sandbox.proc)
    print_summary(outcomes, time.monotonic() - began)
    if interrupted is not None:
        return interrupted
    return 0 if outcomes and all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
