"""Browser tests of the connection forms: a real Airflow API server and headless Chromium.

The API server runs in its own, throw-away Airflow home (``airflow db migrate`` first) with the
SimpleAuthManager in all-admins mode, so the UI needs no login. Chromium and chromedriver are the
system ones (Debian packages ``chromium`` and ``chromium-driver``); selenium drives them and never
downloads a browser or a driver. Without them every test here is skipped, with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AIRFLOW_BIN, REPO

#: Where the screenshots go (the connection pages include them).
SCREENSHOTS = REPO / "docs" / "_static" / "connections"
#: Known to work in containers: no sandbox (we run as root), no GPU, no background traffic.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,1600", "--hide-scrollbars", "--force-device-scale-factor=1",
)
SERVER_START_TIMEOUT = 120.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ui: tests that drive the Airflow UI in headless Chromium")


def _find(env_name: str, *names: str) -> str | None:
    explicit = os.environ.get(env_name)
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass(frozen=True)
class AirflowUI:
    """A running ``airflow api-server`` and the environment of its Airflow home."""

    url: str
    env: dict[str, str]
    log: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``airflow <args>`` against the server's metadata DB."""
        return subprocess.run(  # noqa: S603 - the venv's own airflow, fixed arguments
            [AIRFLOW_BIN, *args], env=self.env, capture_output=True, text=True, timeout=120, check=False,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    })
    return env


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def chromium_paths() -> tuple[str, str]:
    """``(chromium, chromedriver)``; skips when either is missing."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    browser = _find("PIPELINES_CHROMIUM", "chromium", "chromium-browser")
    driver = _find("PIPELINES_CHROMEDRIVER", "chromedriver")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium chromium-driver)")
    if driver is None:
        pytest.skip("chromedriver is not installed (apt-get install -y chromium-driver)")
    return browser, driver


@pytest.fixture(scope="session")
def airflow_ui(chromium_paths: tuple[str, str]) -> Iterator[AirflowUI]:
    """``airflow api-server`` on a free loopback port, in a fresh Airflow home."""
    home = Path(tempfile.mkdtemp(prefix="pipelines-ui-airflow-"))
    (home / "dags").mkdir()
    env = _server_env(home)
    migrate = subprocess.run(  # noqa: S603
        [AIRFLOW_BIN, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    port = _free_port()
    log = home / "api-server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(  # noqa: S603
            [AIRFLOW_BIN, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"airflow api-server exited with {proc.returncode}:\n{_log_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"airflow api-server did not answer within {SERVER_START_TIMEOUT:.0f} s:\n"
                            f"{_log_tail(log)}")
            time.sleep(0.5)
        yield AirflowUI(url=url, env=env, log=log)
    finally:
        _stop(proc)
        shutil.rmtree(home, ignore_errors=True)


def _stop(proc: subprocess.Popen[Any]) -> None:
    """Stop the server we started: its own process group (uvicorn workers included)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def browser(chromium_paths: tuple[str, str]) -> Iterator[Any]:
    """Headless Chromium through the system chromedriver (selenium never downloads anything)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = chromium_paths
    profile = tempfile.mkdtemp(prefix="pipelines-ui-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
