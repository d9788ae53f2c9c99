"""The "Add Connection" form of the Airflow UI for each connection type, in headless Chromium.

What a user sees is checked, not what the provider info says: relabelled fields, hidden fields
absent, placeholders, secrets in password inputs, the extra fields with their labels. A
connection saved through the form is then read back from Airflow and given to the provider's
hook, so the form and the hook agree on field names. Each form is saved as a screenshot into
``docs/_static/connections/`` for the connection pages.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_pipelines.get_provider_info import CONNECTION_UI, get_provider_info
from tests.ui.conftest import SCREENSHOTS, AirflowUI

pytestmark = pytest.mark.ui

HOOK_NAMES = {c["connection-type"]: c["hook-name"] for c in get_provider_info()["connection-types"]}
#: Airflow's own labels of the standard fields (what a hidden field would show).
DEFAULT_LABELS = {"host": "Host", "schema": "Schema", "login": "Login", "password": "Password",
                  "port": "Port"}
#: Labels the issue names explicitly, on top of everything CONNECTION_UI declares.
MUST_SHOW = {
    "cognite": ["CDF cluster URL", "Client ID", "Client secret", "CDF project", "Token URL"],
    "edge_impulse": ["Studio URL", "API key"],
    "here_platform": ["Pipeline API base URL", "Access key ID", "Access key secret", "Project scope (HRN)"],
}
WAIT = 30
#: Set an input's value the way a paste does: React sees one ``input`` event with the whole text.
PASTE = """
const [el, value] = arguments;
const proto = el.tagName === "TEXTAREA" ? HTMLTextAreaElement.prototype : HTMLInputElement.prototype;
Object.getOwnPropertyDescriptor(proto, "value").set.call(el, value);
el.dispatchEvent(new Event("input", {bubbles: true}));
"""


class ConnectionForm:
    """The "Add Connection" dialog of the React UI, found by labels and roles, not CSS classes."""

    def __init__(self, driver: Any, url: str) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.url = url
        self.wait = WebDriverWait(driver, WAIT)

    # ---- navigation ------------------------------------------------------------------------

    def open(self) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        self.driver.get(f"{self.url}/connections")
        self.wait.until(ec.element_to_be_clickable(
            (By.XPATH, "//button[normalize-space()='Add Connection']"))).click()
        self.wait.until(ec.visibility_of_element_located(
            (By.CSS_SELECTOR, "[role=dialog] input[role=combobox]")))

    @property
    def dialog(self) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, "[role=dialog]")

    def choose_type(self, hook_name: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        combo = self.dialog.find_element(By.CSS_SELECTOR, "input[role=combobox]")
        combo.send_keys(hook_name)
        self.wait.until(ec.element_to_be_clickable(
            (By.XPATH, f"//*[@role='option'][normalize-space()='{hook_name}']"))).click()
        self.wait.until(lambda _: self.section_button("Standard Fields") is not None)

    def section_button(self, title: str) -> Any | None:
        from selenium.webdriver.common.by import By

        for button in self.dialog.find_elements(By.TAG_NAME, "button"):
            if button.text.strip() == title:
                return button
        return None

    def open_section(self, title: str, expect_label: str) -> None:
        """Expand an accordion section (the form shows one at a time) and wait for a label in it."""
        if expect_label not in self.labels():
            button = self.section_button(title)
            assert button is not None, f"no {title!r} section in the form"
            button.click()
        self.wait.until(lambda _: expect_label in self.labels())

    # ---- reading ---------------------------------------------------------------------------

    def labels(self) -> dict[str, Any]:
        """Visible label text -> the input (or textarea) of the same form field.

        The field is the label's enclosing field group: the UI's extra fields have labels whose
        ``for`` does not name their input.
        """
        from selenium.webdriver.common.by import By

        out: dict[str, Any] = {}
        for label in self.dialog.find_elements(By.TAG_NAME, "label"):
            if not label.is_displayed():
                continue
            text = label.text.replace("*", "").strip()
            if not text:
                continue
            target = label.get_attribute("for")
            found = self.dialog.find_elements(By.ID, target) if target else []
            if not found:
                found = label.find_elements(
                    By.XPATH, "./ancestor::*[@data-part='root'][1]//*[self::input or self::textarea]")
            out[text] = found[0] if found else None
        return out

    def text(self) -> str:
        return str(self.dialog.text)

    # ---- writing ---------------------------------------------------------------------------

    def fill(self, label: str, value: str) -> None:
        """Paste ``value`` into a field, as a user pasting from a clipboard would.

        Fast per-key typing from chromedriver loses keystrokes in React-controlled inputs (a key
        races the re-render); a paste is one input event. The value is checked afterwards.
        """
        field = self.labels()[label]
        self.driver.execute_script(PASTE, field, value)
        self.wait_for_value(label, value, timeout=5)

    def wait_for_value(self, label: str, value: str, timeout: float) -> None:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            WebDriverWait(self.driver, timeout).until(
                lambda _: self.labels()[label].get_attribute("value") == value)
        except TimeoutException:
            got = self.labels()[label].get_attribute("value")
            raise AssertionError(f"field {label!r} holds {got!r} instead of {value!r}") from None

    def save(self) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        button = self.section_button("Save")
        assert button is not None and button.is_enabled(), "the Save button is disabled"
        button.click()
        self.wait.until(ec.invisibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))

    def screenshot(self, path: Path) -> None:
        """Save the dialog as PNG; the file is only rewritten when the picture changed."""
        self.driver.execute_script("document.activeElement && document.activeElement.blur()")
        png = self.dialog.screenshot_as_png
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != png:
            path.write_bytes(png)


@pytest.fixture
def form(browser: Any, airflow_ui: AirflowUI) -> ConnectionForm:
    page = ConnectionForm(browser, airflow_ui.url)
    page.open()
    return page


@pytest.mark.parametrize("conn_type", sorted(CONNECTION_UI))
def test_add_connection_form_shows_the_declared_fields(form: ConnectionForm, conn_type: str) -> None:
    ui = CONNECTION_UI[conn_type]
    form.fill("Connection ID", f"{conn_type}_default")
    form.choose_type(HOOK_NAMES[conn_type])
    relabeled = ui["relabeling"]
    form.open_section("Standard Fields", next(iter(relabeled.values())))
    fields = form.labels()
    seen = set(fields)
    for field, label in relabeled.items():
        assert label in fields, f"{field} should be labelled {label!r}; the form shows {sorted(fields)}"
        placeholder = ui["placeholders"].get(field)
        if placeholder is not None and field != "extra":
            assert fields[label].get_attribute("placeholder") == placeholder
    for field in ui["hidden-fields"]:
        assert DEFAULT_LABELS[field] not in fields, f"{field} should be hidden; form: {sorted(fields)}"
    # every standard secret is a password input (never echoed on screen)
    if "password" in relabeled:
        assert fields[relabeled["password"]].get_attribute("type") == "password"
    form.screenshot(SCREENSHOTS / f"{conn_type}.png")

    if ui["conn-fields"]:
        first_extra = next(iter(ui["conn-fields"].values()))["label"]
        form.open_section("Extra Fields", first_extra)
        fields = form.labels()
        seen |= set(fields)
        text = form.text()
        for name, spec in ui["conn-fields"].items():
            assert spec["label"] in fields, f"extra field {name} should be labelled {spec['label']!r}"
            if spec["schema"].get("format") == "password":
                assert fields[spec["label"]].get_attribute("type") == "password", name
            assert spec["description"] in text
        form.screenshot(SCREENSHOTS / f"{conn_type}_extra.png")
    missing = sorted(set(MUST_SHOW[conn_type]) - seen)
    assert not missing, f"the {conn_type} form lacks {missing}; it shows {sorted(seen)}"


#: What a user types into each form (label -> value), and what the hook must make of it.
SAVED = {
    "cognite": {
        "standard": {"CDF cluster URL": "https://westeurope-1.cognitedata.com", "Client ID": "ui-client",
                     "Client secret": "ui-client-secret-1"},
        "extra": {"CDF project": "ui-project",
                  "Token URL": "https://login.microsoftonline.com/tenant/oauth2/v2.0/token"},
        "check": lambda r: (r.base_url.startswith("https://westeurope-1.cognitedata.com")
                            and r.options["project"] == "ui-project"),
    },
    "edge_impulse": {
        "standard": {"API key": "ei_ui_0123456789abcdef"},
        "extra": {},
        "check": lambda r: r.base_url.startswith("https://studio.edgeimpulse.com"),
    },
    "here_platform": {
        "standard": {"Access key ID": "UIACCESSKEYID", "Access key secret": "ui-access-key-secret"},
        "extra": {"Project scope (HRN)": "hrn:here:authorization::org:project/ui"},
        "check": lambda r: ("pipelines.api.platform.here.com" in r.base_url
                            and r.options["scope"] == "hrn:here:authorization::org:project/ui"),
    },
}


@pytest.mark.parametrize("conn_type", sorted(CONNECTION_UI))
def test_a_connection_saved_through_the_form_works_with_the_hook(
    form: ConnectionForm, airflow_ui: AirflowUI, conn_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = SAVED[conn_type]
    conn_id = f"ui_saved_{conn_type}"
    form.fill("Connection ID", conn_id)
    form.choose_type(HOOK_NAMES[conn_type])
    form.open_section("Standard Fields", next(iter(case["standard"])))
    for label, value in case["standard"].items():
        form.fill(label, value)
    if case["extra"]:
        form.open_section("Extra Fields", next(iter(case["extra"])))
        for label, value in case["extra"].items():
            form.fill(label, value)
    form.save()

    got = airflow_ui.cli("connections", "get", conn_id, "-o", "json")
    assert got.returncode == 0, got.stderr[-2000:]
    start = got.stdout.index("[")
    row = json.JSONDecoder().raw_decode(got.stdout[start:])[0][0]
    assert row["conn_type"] == conn_type, row
    # hand exactly what Airflow stored to the provider's hook
    fields = {"conn_type": row["conn_type"], "extra": row.get("extra_dejson") or {}}
    fields.update({k: row[k] for k in ("host", "login", "password") if row.get(k)})
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
    hook_path = next(c["hook-class-name"] for c in get_provider_info()["connection-types"]
                     if c["connection-type"] == conn_type)
    module, _, name = hook_path.rpartition(".")
    hook_class = getattr(importlib.import_module(module), name)
    resolved = hook_class(conn_id).resolved
    assert case["check"](resolved), resolved
