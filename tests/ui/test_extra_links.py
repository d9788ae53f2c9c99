"""Extra links in the real Airflow UI: a HERE run through ``airflow dags test`` against the sandbox,
then the task instance's link buttons in headless Chromium.

This is the whole path a user relies on: the operator pushes the URLs to XCom before it waits,
Airflow asks each link for its URL at the end of the try and stores it (``_link_<Class>``), and
the UI shows a button that opens exactly that URL.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_pipelines.links import HereLoggingLink, HerePipelineUILink
from tests.conftest import AIRFLOW_BIN, EXAMPLE_DAGS
from tests.ui.conftest import REPO, AirflowUI

pytestmark = [pytest.mark.ui, pytest.mark.timeout(600)]

DAG_ID = "here_pipeline_run_now"
TASK_ID = "run_now"
WAIT = 60
SCREENSHOT = REPO / "docs" / "_static" / "extra_links_here.png"


def _query(ui: AirflowUI, sql: str, *args: Any) -> list[sqlite3.Row]:
    db = ui.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        return list(con.execute(sql, args))
    finally:
        con.close()


@pytest.fixture
def here_run(airflow_ui: AirflowUI, sandbox: Any) -> dict[str, Any]:
    """Run the HERE example DAG once, with the UI server's metadata DB and the sandbox."""

    sandbox.configure(here={"default": {"operation_accepted": 0.1, "operation_processing": 0.2,
                                        "job_starting": 0.2, "job_running": 0.5}})
    env = {**airflow_ui.env, **sandbox.connections()}
    # the DAG file must be in the server's DAG folder (its bundle)
    dag_file = Path(env["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{DAG_ID}.py"
    shutil.copyfile(Path(EXAMPLE_DAGS) / f"{DAG_ID}.py", dag_file)
    proc = subprocess.run(  # noqa: S603 - the venv's own airflow, fixed arguments
        [AIRFLOW_BIN, "dags", "test", DAG_ID, "--dagfile-path", str(dag_file)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    run = dict(_query(airflow_ui, "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC "
                                  "LIMIT 1", DAG_ID)[0])
    assert run["state"] == "success", run
    xcom = {row["key"]: json.loads(row["value"]) for row in _query(
        airflow_ui, "SELECT key, value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ?",
        DAG_ID, run["run_id"], TASK_ID)}
    return {"run_id": run["run_id"], "xcom": xcom, "sandbox": sandbox}


#: Every link on the page as ``[text, href]``, read in one go (the React page re-renders).
ANCHORS = ("return [...document.querySelectorAll('a')]"
           ".map(a => [a.textContent.trim(), a.getAttribute('href')]);")


def test_a_real_runs_link_buttons_open_the_urls_the_operator_stored(
    here_run: dict[str, Any], airflow_ui: AirflowUI, browser: Any
) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    links = (HerePipelineUILink(), HereLoggingLink())
    xcom, url = here_run["xcom"], here_run["sandbox"].url
    # the operator pushed the API's URLs; at the end of the try Airflow stored what each link returned
    for link in links:
        assert xcom[link.key].startswith(f"{url}/_sandbox/here/"), xcom
        assert xcom[link.xcom_key] == xcom[link.key]

    # the task instance's Details tab lists the extra links as buttons
    browser.get(f"{airflow_ui.url}/dags/{DAG_ID}/runs/{here_run['run_id']}/tasks/{TASK_ID}/details")
    expected = {link.name: xcom[link.key] for link in links}

    def buttons(_: Any) -> dict[str, str] | None:
        found = {text: href for text, href in browser.execute_script(ANCHORS) if text in expected}
        return found if len(found) == len(expected) else None

    try:
        found = WebDriverWait(browser, WAIT).until(buttons)
    except TimeoutException:
        page = browser.find_element(By.TAG_NAME, "body").text[:1500]
        raise AssertionError(f"no link buttons {sorted(expected)} on {browser.current_url}; links: "
                             f"{browser.execute_script(ANCHORS)}; page: {page}") from None
    assert found == expected
    # for docs/extra_links.md: the smallest part of the page holding the heading and both buttons
    section = browser.find_element(By.XPATH, (
        "//a[normalize-space()='HERE pipeline UI']/ancestor::*"
        "[.//a[normalize-space()='HERE job logs'] and contains(normalize-space(.), 'Extra Links')][1]"))
    png = section.screenshot_as_png
    if not SCREENSHOT.exists() or SCREENSHOT.read_bytes() != png:
        SCREENSHOT.write_bytes(png)
