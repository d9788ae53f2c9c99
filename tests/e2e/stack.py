"""Real Airflow components for the end-to-end tests: api-server, scheduler, dag-processor, triggerer.

One :class:`AirflowStack` runs the four Airflow 3 components (LocalExecutor, SQLite metadata DB
in a temporary Airflow home) and the sandbox (``pipelines-sandbox serve``), each as a
subprocess in its own process group, with the connections pointing at the sandbox. It talks to
Airflow through the public REST API (``/api/v2``, simple auth manager with every user admin),
to the sandbox through its control API (``/_sandbox``), and reads the ``trigger`` table of the
metadata DB to see which triggerer runs which trigger.

Every wait is bounded by the stack's own deadline, and :meth:`AirflowStack.stop` (also run at
interpreter exit) kills every process group it started.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = REPO / "example_dags"
BIN = Path(sys.executable).parent
READY_PREFIX = "pipelines-sandbox ready at "
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


class StackError(AssertionError):
    """Something in the stack did not happen in time (the message carries the components' log tails)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    """The environment without Airflow settings from the test session (unit-test mode, its home...)."""
    return {
        k: v for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "PYTEST_")) and k != "AIRFLOW_HOME"
    }


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line[:300]}" for line in text[-lines:])

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)


@dataclass
class TiView:
    """What was seen of one task instance while waiting: every state, trigger ids and classpaths."""

    states: list[str] = field(default_factory=list)
    triggers: dict[int, str] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)

    def saw(self, state: str) -> bool:
        return state in self.states


@dataclass
class Watch:
    """Everything seen while waiting for some DAG runs."""

    runs: list[tuple[str, str]]
    #: per (dag_id, run_id, task_id, map_index)
    tis: dict[tuple[str, str, str, int], TiView] = field(default_factory=dict)
    #: the last REST view of each run
    run_states: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: trigger id -> the triggerer job ids it was assigned to, in order
    assigned: dict[int, list[int]] = field(default_factory=dict)

    def ti(self, dag_id: str, task_id: str, map_index: int = -1) -> TiView:
        [view] = [v for (d, _, t, m), v in self.tis.items() if (d, t, m) == (dag_id, task_id, map_index)]
        return view


class AirflowStack:
    def __init__(self, home: Path, *, budget: float) -> None:
        self.home = home
        self.deadline = time.monotonic() + budget
        self.processes: dict[str, Process] = {}
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}/api/v2"
        self.sandbox_url = ""
        self.env: dict[str, str] = {}
        self.http = requests.Session()
        self._triggerer_generation = 0
        atexit.register(self.stop)

    # ---- lifecycle -------------------------------------------------------------------------------
    def remaining(self, limit: float | None = None) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StackError("the end-to-end time budget is spent\n" + self.log_tails())
        return left if limit is None else min(left, limit)

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> Process:
        log = self.home / f"{name}.log"
        with log.open("ab") as out:
            out.write(f"$ {shlex.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,  # noqa: S603
                                    env=env, cwd=self.home, start_new_session=True)
        process = Process(name, proc, log)
        self.processes[name] = process
        return process

    def start(self, sandbox_config: dict[str, Any]) -> None:
        config_file = self.home / "sandbox-config.json"
        config_file.write_text(json.dumps(sandbox_config))
        sandbox = self._spawn("sandbox", [str(BIN / "pipelines-sandbox"), "serve", "--host", "127.0.0.1",
                                          "--port", "0", "--config", str(config_file)], clean_env())
        connections = self._sandbox_connections(sandbox)
        self.env = {
            **clean_env(),
            **connections,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "16",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            # scheduled runs are not created: every run here is triggered or backfilled on purpose
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            # a killed triggerer's triggers go to a live one after 5 s (default 30 s)
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "PYTHONUNBUFFERED": "1",
        }
        migrate = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=self.env, cwd=self.home,  # noqa: S603
                                 capture_output=True, text=True, timeout=self.remaining(180), check=False)
        if migrate.returncode != 0:
            raise StackError(f"airflow db migrate failed:\n{migrate.stdout[-3000:]}{migrate.stderr[-3000:]}")
        for component in COMPONENTS:
            self._spawn(component, [str(BIN / "airflow"), component], self.env)
        self.wait_for(self._api_up, "the api-server to answer", timeout=120, interval=1)
        self.wait_for(self._dags_parsed, "the example DAGs to be parsed", timeout=120, interval=1)
        self.wait_for(self._triggerer_alive, "a triggerer heartbeat", timeout=60, interval=1)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every process group, give them ``grace`` seconds together, then SIGKILL the rest."""
        processes = list(self.processes.values())
        for process in processes:
            if process.alive:
                process.kill(signal.SIGTERM)
        end = time.monotonic() + grace
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.proc.wait(timeout=max(0.1, end - time.monotonic()))
        for process in processes:  # also what is left of each group (task and trigger subprocesses)
            process.kill(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.proc.wait(timeout=5)
        self.http.close()

    def _sandbox_connections(self, sandbox: Process) -> dict[str, str]:
        def ready() -> str | None:
            text = sandbox.log.read_text(errors="replace")
            if not sandbox.alive:
                raise StackError(f"the sandbox exited:\n{text}")
            return text if READY_PREFIX in text else None

        text = self.wait_for(ready, "the sandbox's ready line", timeout=60, interval=0.1)
        connections = {}
        for line in text.splitlines():
            if line.startswith("export AIRFLOW_CONN_"):
                name, _, value = line[len("export "):].partition("=")
                connections[name] = shlex.split(value)[0]
            elif line.startswith(READY_PREFIX):
                self.sandbox_url = line[len(READY_PREFIX):].strip()
        assert len(connections) == 3, text
        return connections

    # ---- waiting -----------------------------------------------------------------------------------
    def wait_for(self, check: Callable[[], Any], what: str, *, timeout: float, interval: float = 0.5) -> Any:
        """Call ``check`` until it returns something truthy; fail (with the logs) after ``timeout``."""
        end = time.monotonic() + self.remaining(timeout)
        last_error: Exception | None = None
        while True:
            try:
                result = check()
                if result:
                    return result
            except (requests.RequestException, sqlite3.Error, ValueError) as err:
                last_error = err
            if time.monotonic() >= end:
                raise StackError(f"timed out waiting for {what}"
                                 + (f" (last error: {last_error})" if last_error else "")
                                 + "\n" + self.log_tails())
            self.check_components()
            time.sleep(interval)

    def check_components(self) -> None:
        dead = [p.name for name, p in self.processes.items()
                if not p.alive and not name.startswith("triggerer-killed")]
        if dead:
            raise StackError(f"component(s) exited: {', '.join(dead)}\n{self.log_tails()}")

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(f"--- {p.name} ({'running' if p.alive else f'exit {p.proc.returncode}'}) {p.log}\n"
                         f"{p.tail(lines)}" for p in self.processes.values())

    def _api_up(self) -> bool:
        return self.http.get(f"{self.api}/monitor/health", timeout=5).status_code == 200

    def _dags_parsed(self) -> bool:
        dags = self.get("/dags", params={"limit": 100})["dags"]
        errors = self.get("/importErrors")
        if errors["total_entries"]:
            raise StackError(f"import errors in the example DAGs: {json.dumps(errors, indent=1)[:4000]}")
        return {d["dag_id"] for d in dags} >= {"cognite_contextualization", "cognite_quality_gates",
                                                "edge_impulse_pipeline", "here_pipeline_run_now"}

    def _triggerer_alive(self) -> bool:
        health = self.get("/monitor/health")
        return (health.get("triggerer") or {}).get("status") == "healthy"

    # ---- REST API ---------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call. A 503 is retried a few times: on SQLite, Airflow answers 503 "Database is
        locked" when a write (e.g. creating a backfill) meets a concurrent writer, and rolls it back."""
        for attempt in range(6):
            response = self.http.request(method, f"{self.api}{path}", timeout=30, **kwargs)
            if response.status_code != 503 or attempt == 5:
                break
            time.sleep(1 + attempt)
        if response.status_code >= 400:
            raise StackError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def unpause(self, *dag_ids: str) -> None:
        for dag_id in dag_ids:
            self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, *, logical_date: str | None = None,
                conf: dict[str, Any] | None = None) -> str:
        body = {"logical_date": logical_date, "conf": conf or {}}
        return str(self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        return list(self.get(path, params={"limit": 100})["task_instances"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1,
                 map_index: int = -1) -> str:
        path = (f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
                f"/logs/{try_number}")
        body = self.get(path, params={"full_content": "true", "map_index": map_index},
                        headers={"Accept": "application/json"})
        return json.dumps(body.get("content", body))

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value",
             map_index: int = -1) -> Any:
        path = (f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
                f"/xcomEntries/{key}")
        return self.get(path, params={"map_index": map_index, "deserialize": "true"})["value"]

    def backfill(self, dag_id: str, from_date: str, to_date: str, max_active_runs: int = 3) -> dict[str, Any]:
        return dict(self.request("POST", "/backfills", json={
            "dag_id": dag_id, "from_date": from_date, "to_date": to_date, "max_active_runs": max_active_runs,
            "reprocess_behavior": "none"}))

    def backfill_runs(self, dag_id: str) -> list[dict[str, Any]]:
        runs = self.get(f"/dags/{dag_id}/dagRuns", params={"limit": 100, "run_type": "backfill"})
        return list(runs["dag_runs"])

    def watch_runs(self, runs: Iterable[tuple[str, str]], *, timeout: float,
                   on_poll: Callable[[Watch], None] | None = None) -> Watch:
        """Poll the runs' task instances (and trigger assignments) until every run is terminal.

        ``on_poll(watch)`` is called after each poll (e.g. to kill the triggerer at the right moment).
        """
        watch = Watch(list(runs))

        def poll() -> bool:
            done = True
            for dag_id, run_id in watch.runs:
                for ti in self.task_instances(dag_id, run_id):
                    view = watch.tis.setdefault((dag_id, run_id, ti["task_id"], ti["map_index"]), TiView())
                    if ti["state"] and (not view.states or view.states[-1] != ti["state"]):
                        view.states.append(ti["state"])
                    if ti.get("trigger"):
                        view.triggers[int(ti["trigger"]["id"])] = ti["trigger"]["classpath"]
                    view.final = ti
                run = self.dag_run(dag_id, run_id)
                watch.run_states[(dag_id, run_id)] = run
                if run["state"] not in TERMINAL_RUN_STATES:
                    done = False
            for trigger_id, triggerer_id in self.triggerer_assignments().items():
                if triggerer_id is not None:
                    seen = watch.assigned.setdefault(trigger_id, [])
                    if not seen or seen[-1] != triggerer_id:
                        seen.append(triggerer_id)
            if on_poll is not None:
                on_poll(watch)
            return done

        self.wait_for(poll, f"the DAG runs {watch.runs} to finish", timeout=timeout, interval=0.5)
        return watch

    # ---- the triggerer -------------------------------------------------------------------------
    def triggerer_assignments(self) -> dict[int, int | None]:
        """``{trigger id: triggerer job id}`` from the metadata DB (read only)."""
        con = sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True, timeout=10)
        try:
            return {int(i): t for i, t in con.execute("SELECT id, triggerer_id FROM trigger")}
        finally:
            con.close()

    def alive_triggerer_jobs(self) -> list[int]:
        params = {"job_type": "TriggererJob", "job_state": "running", "is_alive": "true"}
        jobs = self.get("/jobs", params=params)
        return [int(j["id"]) for j in jobs["jobs"]]

    def kill_triggerer(self) -> Process:
        """SIGKILL the triggerer's whole process group (it and its trigger runner), no clean-up."""
        old = self.processes.pop("triggerer")
        old.kill(signal.SIGKILL)
        old.proc.wait(timeout=10)
        self._triggerer_generation += 1
        self.processes[f"triggerer-killed-{self._triggerer_generation}"] = old
        return old

    def start_triggerer(self) -> Process:
        env = {**self.env, "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
        return self._spawn("triggerer", [str(BIN / "airflow"), "triggerer"], env)

    # ---- the sandbox's control API ------------------------------------------------------------
    def sandbox(self, verb: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        response = self.http.request(verb, f"{self.sandbox_url}/_sandbox/{path}", json=body, params=params,
                                     timeout=30)
        if response.status_code >= 400:
            raise StackError(f"sandbox {verb} {path} -> {response.status_code}: {response.text[:2000]}")
        return response.json()

    def sandbox_requests(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("method", method), ("path", path)) if v}
        return list(self.sandbox("GET", "requests", params=params)["items"])
