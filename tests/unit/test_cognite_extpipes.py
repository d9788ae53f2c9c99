"""CDF extraction pipeline runs: the hook (create / list / retrieve / report exactly once) and the job kind.

Sync paths run against ``requests-mock`` in front of :class:`FakeExtpipes`, a small in-memory
extraction-pipelines API that can lose its answer *after* recording a run (a 503 or a read
timeout on a create that did or did not take effect). ``test_cognite_extpipes_operators.py``,
``test_cognite_extpipes_callback.py`` and ``test_cognite_extpipes_async.py`` reuse it.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from airflow_provider_pipelines._compat import AirflowException
from airflow_provider_pipelines.hooks import cognite as cognite_hooks
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.cognite import (
    EXTPIPE_LIST_LIMIT,
    EXTPIPE_MESSAGE_MAX,
    TRUNCATION_MARKER,
    CogniteHook,
    message_length,
    same_extpipe_run,
    to_epoch_ms,
    truncate_message,
)
from airflow_provider_pipelines.jobs.base import Outcome
from airflow_provider_pipelines.jobs.cognite import EXTRACTION_REPORT, extraction_report_ref, ms_to_iso

HOST = "https://westeurope-1.cognitedata.com"
BASE = f"{HOST}/api/v1/projects/proj"
TOKEN_URL = "https://login.example.com/tenant/oauth2/v2.0/token"
CLIENT_SECRET = "cdf-client-secret-5e21c0"
ACCESS_TOKEN = "eyJ-extpipes-access-token-90ab"
XID = "extractor"
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


# --------------------------------------------------------------------------------------------
# A small extraction-pipelines API (shared with the other test_cognite_extpipes_* modules)
# --------------------------------------------------------------------------------------------


class FakeExtpipes:
    """CDF's ``/extpipes`` endpoints in memory.

    ``create_script`` holds one action per ``POST /extpipes/runs`` (then ``"ok"``):
    ``ok``; ``503`` / ``timeout`` / ``drop`` (nothing recorded, answer lost);
    ``503+created`` / ``timeout+created`` / ``drop+created`` / ``malformed+created`` (the run is
    recorded, then the answer is lost or unreadable); ``429`` (throttled, nothing recorded);
    ``400`` (refused). ``list_script`` does the same for ``POST /extpipes/runs/list``
    (``ok`` or an HTTP status). ``calls`` logs ``(endpoint, body)`` of every request.
    """

    def __init__(self, page_size: int = 1000) -> None:
        self.pipelines = {XID: {"id": 1, "externalId": XID, "name": "Extractor", "dataSetId": 9}}
        self.runs: dict[str, list[dict[str, Any]]] = {XID: []}
        self.create_script: list[str] = []
        self.list_script: list[str] = []
        self.page_size = page_size
        self.next_id = 100
        self.calls: list[tuple[str, Any]] = []

    def add_run(
        self, status: str, created: int, message: str | None = None, xid: str = XID
    ) -> dict[str, Any]:
        run: dict[str, Any] = {"id": self.next_id, "status": status, "createdTime": created}
        if message is not None:
            run["message"] = message
        self.next_id += 1
        self.runs[xid].append(run)
        return run

    def calls_to(self, endpoint: str) -> list[Any]:
        return [body for name, body in self.calls if name == endpoint]

    @staticmethod
    def error(status: int, message: str, **extra: Any) -> tuple[int, Any]:
        return status, {"error": {"code": status, "message": message, **extra}}

    # ---- endpoints: return (action, status, body) ----------------------------------------

    def create(self, body: Any) -> tuple[str, int, Any]:
        self.calls.append(("create", body))
        action = self.create_script.pop(0) if self.create_script else "ok"
        if action == "400":
            return action, *self.error(400, "Extraction pipeline refused the run")
        if action == "429":
            return action, *self.error(429, "Too many requests")
        if action in ("503", "timeout", "drop"):
            return action, *self.error(503, "Service unavailable")
        items = body["items"]
        assert len(items) == 1, "CDF takes exactly one run per request"
        item = items[0]
        if item["externalId"] not in self.pipelines:
            return action, *self.error(400, f"Extraction pipeline '{item['externalId']}' not found",
                                       missing=[{"externalId": item["externalId"]}])
        run = self.add_run(item["status"], item.get("createdTime", T0), item.get("message"),
                           item["externalId"])
        if action == "ok":
            return action, 201, {"items": [{"externalId": item["externalId"], **run}]}
        return action, 503, {"error": {"code": 503, "message": "Service unavailable"}}

    def list(self, body: Any) -> tuple[int, Any]:
        self.calls.append(("list", body))
        action = self.list_script.pop(0) if self.list_script else "ok"
        if action != "ok":
            return self.error(int(action), "List failed")
        flt = body["filter"]
        runs = list(self.runs.get(flt["externalId"], []))
        if flt.get("statuses"):
            runs = [r for r in runs if r["status"] in flt["statuses"]]
        created = flt.get("createdTime") or {}
        runs = [r for r in runs if created.get("min", 0) <= r["createdTime"] <= created.get("max", 2**62)]
        if flt.get("message"):
            runs = [r for r in runs if flt["message"]["substring"] in r.get("message", "")]
        runs.sort(key=lambda r: (r["createdTime"], r["id"]), reverse=True)
        offset = int(body.get("cursor", "c0")[1:])
        size = min(int(body.get("limit", 100)), self.page_size)
        page: dict[str, Any] = {"items": [dict(r) for r in runs[offset:offset + size]]}
        if offset + size < len(runs):
            page["nextCursor"] = f"c{offset + size}"
        return 200, page

    def byids(self, body: Any) -> tuple[int, Any]:
        self.calls.append(("byids", body))
        missing = [i for i in body["items"] if i.get("externalId") not in self.pipelines]
        if missing and not body.get("ignoreUnknownIds"):
            return self.error(400, "Ids not found", missing=missing)
        return 200, {"items": [self.pipelines[i["externalId"]] for i in body["items"] if i not in missing]}

    # ---- requests-mock adapter -------------------------------------------------------------

    def install(self, mocker: Any) -> None:
        mocker.post(TOKEN_URL, json={"access_token": ACCESS_TOKEN, "expires_in": 3600})

        def create(request: Any, context: Any) -> Any:
            action, status, body = self.create(request.json())
            if action.startswith("timeout"):
                raise requests.exceptions.ReadTimeout("Read timed out. (read timeout=60)")
            if action.startswith("drop"):
                raise requests.exceptions.ConnectionError("('Connection aborted.', RemoteDisconnected())")
            context.status_code = status
            context.headers["x-request-id"] = f"req-create-{len(self.calls)}"
            if action == "malformed+created":
                context.status_code = 201
                return '{"items": [{"id": 1, "stat'
            if action == "429":
                context.headers["Retry-After"] = "0"
            return json.dumps(body)

        def listing(request: Any, context: Any) -> Any:
            status, body = self.list(request.json())
            context.status_code = status
            context.headers["x-request-id"] = f"req-list-{len(self.calls)}"
            return json.dumps(body)

        def byids(request: Any, context: Any) -> Any:
            status, body = self.byids(request.json())
            context.status_code = status
            context.headers["x-request-id"] = "req-byids"
            return json.dumps(body)

        mocker.post(f"{BASE}/extpipes/runs", text=create)
        mocker.post(f"{BASE}/extpipes/runs/list", text=listing)
        mocker.post(f"{BASE}/extpipes/byids", text=byids)


def cognite_connection(**extra: Any) -> dict[str, Any]:
    return {"conn_type": "cognite", "host": HOST, "login": "client-id", "password": CLIENT_SECRET,
            "extra": {"project": "proj", "token_url": TOKEN_URL, "backoff_base": 0.01, "backoff_max": 0.02,
                      **extra}}


def no_check_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ambiguity checks run at once in tests (the real delay is REPORT_CHECK_DELAY seconds)."""
    monkeypatch.setattr(cognite_hooks, "REPORT_CHECK_DELAY", 0.0)


def log_reader(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Any:
    """Everything logged so far: stdlib records and Airflow's structlog output (printed to stdout)."""
    caplog.set_level(logging.DEBUG)
    captured: list[str] = []

    def text() -> str:
        out, err = capsys.readouterr()
        captured.append(out + err)
        return caplog.text + "".join(captured)

    return text


def install_fake(requests_mock: Any, conn_env: Any) -> FakeExtpipes:
    conn_env("cognite_default", **cognite_connection())
    api = FakeExtpipes()
    api.install(requests_mock)
    return api


# The other test_cognite_extpipes_* modules define the same three fixtures with these helpers.
@pytest.fixture(autouse=True)
def _no_check_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    no_check_delay(monkeypatch)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Any:
    return log_reader(caplog, capsys)


@pytest.fixture
def fake(requests_mock: Any, conn_env: Any) -> FakeExtpipes:
    return install_fake(requests_mock, conn_env)


def item(status: str = "success", message: str | None = "ok", created: int | None = T0) -> dict[str, Any]:
    return CogniteHook.extpipe_run_item(XID, status, message, created)


# --------------------------------------------------------------------------------------------
# Building items and filters (all validation happens before any request)
# --------------------------------------------------------------------------------------------


class TestRunItem:
    def test_minimal_item(self) -> None:
        assert CogniteHook.extpipe_run_item(XID, "seen") == {"externalId": XID, "status": "seen"}

    def test_full_item(self) -> None:
        when = datetime(2025, 1, 1, tzinfo=timezone.utc)
        assert CogniteHook.extpipe_run_item(XID, "failure", "boom", when) == {
            "externalId": XID, "status": "failure", "message": "boom", "createdTime": T0}

    @pytest.mark.parametrize("status", ["done", "", None, 1, "Failed"])
    def test_unknown_status(self, status: Any) -> None:
        with pytest.raises(ValueError, match="status must be one of success, failure, seen"):
            CogniteHook.extpipe_run_item(XID, status)

    def test_upper_case_status_gets_a_hint(self) -> None:
        with pytest.raises(ValueError, match="lower case: 'success'"):
            CogniteHook.extpipe_run_item(XID, "SUCCESS")

    @pytest.mark.parametrize("xid", ["", "   ", None, 42, "x" * 256])
    def test_bad_external_id(self, xid: Any) -> None:
        with pytest.raises(ValueError, match="external_id"):
            CogniteHook.extpipe_run_item(xid, "success")

    def test_non_string_message_is_text(self) -> None:
        assert CogniteHook.extpipe_run_item(XID, "success", 42)["message"] == "42"

    def test_empty_message_is_left_out(self) -> None:
        assert "message" not in CogniteHook.extpipe_run_item(XID, "success", "")

    def test_long_message_is_truncated_with_a_marker(self) -> None:
        message = CogniteHook.extpipe_run_item(XID, "failure", "e" * 5000)["message"]
        assert len(message) == EXTPIPE_MESSAGE_MAX
        assert message.endswith(TRUNCATION_MARKER) and message.startswith("eee")


class TestTruncation:
    def test_exactly_the_limit_is_untouched(self) -> None:
        text = "a" * EXTPIPE_MESSAGE_MAX
        assert truncate_message(text) == text

    def test_one_over_the_limit(self) -> None:
        out = truncate_message("a" * (EXTPIPE_MESSAGE_MAX + 1))
        assert len(out) == EXTPIPE_MESSAGE_MAX and out.endswith(" …[truncated]")

    def test_astral_characters_count_twice(self) -> None:
        # 600 emoji are 600 code points but 1,200 UTF-16 units: over a 1,000-unit limit
        text = "\U0001F600" * 600
        out = truncate_message(text)
        assert message_length(out) <= EXTPIPE_MESSAGE_MAX
        assert out.endswith(TRUNCATION_MARKER)
        assert out.encode("utf-16-le").decode("utf-16-le") == out  # no split surrogate pair
        assert set(out[: -len(TRUNCATION_MARKER)]) == {"\U0001F600"}


class TestEpochMs:
    def test_values(self) -> None:
        assert to_epoch_ms(T0) == T0
        assert to_epoch_ms(float(T0)) == T0
        assert to_epoch_ms(str(T0)) == T0
        assert to_epoch_ms(datetime(2025, 1, 1, tzinfo=timezone.utc)) == T0
        assert to_epoch_ms(datetime(2025, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == T0
        assert to_epoch_ms("2025-01-01T00:00:00Z") == T0
        assert to_epoch_ms("2025-01-01 00:00:00+00:00") == T0  # str() of a rendered datetime
        assert to_epoch_ms("2025-01-01T00:00:00.123+00:00") == T0 + 123

    def test_pendulum_datetime(self) -> None:
        import pendulum

        assert to_epoch_ms(pendulum.datetime(2025, 1, 1, tz="UTC")) == T0

    @pytest.mark.parametrize("value, match", [
        (-1, "must not be negative"),
        (True, "epoch milliseconds"),
        (float("nan"), "finite"),
        (datetime(2025, 1, 1), "timezone-aware"),
        ("2025-01-01T00:00:00", "timezone-aware"),
        ("yesterday", "neither epoch milliseconds"),
        ("", "epoch milliseconds"),
        ([T0], "epoch milliseconds"),
    ])
    def test_rejects(self, value: Any, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            to_epoch_ms(value)


class TestFilter:
    def test_body(self) -> None:
        body = CogniteHook.extpipe_runs_filter(XID, ["failure", "seen"], created_min=T0, created_max=T0 + 5,
                                               message_substring="timeout", limit=50)
        assert body == {"filter": {"externalId": XID, "statuses": ["failure", "seen"],
                                   "createdTime": {"min": T0, "max": T0 + 5},
                                   "message": {"substring": "timeout"}}, "limit": 50}

    def test_defaults(self) -> None:
        expected = {"filter": {"externalId": XID}, "limit": EXTPIPE_LIST_LIMIT}
        assert CogniteHook.extpipe_runs_filter(XID) == expected

    def test_dates_are_converted(self) -> None:
        body = CogniteHook.extpipe_runs_filter(XID, created_min="2025-01-01T00:00:00Z")
        assert body["filter"]["createdTime"] == {"min": T0}

    @pytest.mark.parametrize("kwargs, match", [
        ({"statuses": ["done"]}, "statuses must be one of"),
        ({"created_min": T0 + 1, "created_max": T0}, "is after created_max"),
        ({"limit": 0}, "limit must be an integer between 1 and 1000"),
        ({"limit": 1001}, "limit must be an integer"),
        ({"created_min": "soon"}, "created_min"),
    ])
    def test_rejects(self, kwargs: dict[str, Any], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            CogniteHook.extpipe_runs_filter(XID, **kwargs)


# --------------------------------------------------------------------------------------------
# Hook calls
# --------------------------------------------------------------------------------------------


class TestCreate:
    def test_one_item_per_request(self, fake: FakeExtpipes, requests_mock: Any) -> None:
        run = CogniteHook().create_extpipe_run(item())
        assert run == {"externalId": XID, "id": 100, "status": "success", "message": "ok", "createdTime": T0}
        sent = requests_mock.request_history[-1]
        assert sent.url == f"{BASE}/extpipes/runs"
        assert sent.json() == {"items": [item()]}
        assert "cdf-version" not in {k.lower() for k in sent.headers}  # stable API: no version header
        assert sent.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"

    def test_bad_item_sends_nothing(self, fake: FakeExtpipes, requests_mock: Any) -> None:
        with pytest.raises(ValueError, match="status"):
            CogniteHook().create_extpipe_run({"externalId": XID, "status": "ok"})
        assert fake.calls == []

    def test_refused_run_is_a_clear_error(self, fake: FakeExtpipes) -> None:
        with pytest.raises(ApiError) as info:
            CogniteHook().create_extpipe_run(CogniteHook.extpipe_run_item("unknown", "success"))
        err = info.value
        assert err.status == 400 and not err.ambiguous
        assert "extraction pipeline 'unknown'" in str(err)
        assert "Extraction pipeline 'unknown' not found" in str(err) and "request id req-create-1" in str(err)

    def test_503_is_ambiguous_and_not_retried(self, fake: FakeExtpipes) -> None:
        fake.create_script = ["503+created"]
        with pytest.raises(ApiError) as info:
            CogniteHook().create_extpipe_run(item())
        assert info.value.ambiguous and info.value.status == 503
        assert len(fake.calls_to("create")) == 1

    def test_unreadable_2xx_answer_is_ambiguous(self, fake: FakeExtpipes) -> None:
        fake.create_script = ["malformed+created"]
        with pytest.raises(ApiError) as info:
            CogniteHook().create_extpipe_run(item())
        assert info.value.ambiguous


class TestList:
    def test_follows_next_cursor(self, fake: FakeExtpipes, requests_mock: Any) -> None:
        fake.page_size = 2
        for i in range(5):
            fake.add_run("success", T0 + i)
        runs = CogniteHook().list_extpipe_runs(CogniteHook.extpipe_runs_filter(XID))
        assert [r["createdTime"] for r in runs] == [T0 + 4, T0 + 3, T0 + 2, T0 + 1, T0]
        bodies = fake.calls_to("list")
        assert [b.get("cursor") for b in bodies] == [None, "c2", "c4"]
        assert all(b["filter"] == {"externalId": XID} for b in bodies)

    def test_max_items_stops_early(self, fake: FakeExtpipes) -> None:
        fake.page_size = 2
        for i in range(5):
            fake.add_run("success", T0 + i)
        runs = CogniteHook().list_extpipe_runs(CogniteHook.extpipe_runs_filter(XID), max_items=3)
        assert len(runs) == 3 and len(fake.calls_to("list")) == 2

    def test_filters_are_sent(self, fake: FakeExtpipes) -> None:
        fake.add_run("failure", T0, "disk full")
        fake.add_run("failure", T0 + 10, "timeout talking to source")
        fake.add_run("success", T0 + 20)
        body = CogniteHook.extpipe_runs_filter(XID, ["failure"], created_min=T0 + 1,
                                               message_substring="timeout")
        runs = CogniteHook().list_extpipe_runs(body)
        assert [r["message"] for r in runs] == ["timeout talking to source"]

    def test_repeated_cursor_is_an_error_not_a_loop(self, requests_mock: Any, conn_env: Any) -> None:
        conn_env("cognite_default", **cognite_connection())
        requests_mock.post(TOKEN_URL, json={"access_token": ACCESS_TOKEN, "expires_in": 3600})
        requests_mock.post(f"{BASE}/extpipes/runs/list", json={"items": [], "nextCursor": "same"})
        with pytest.raises(ApiError, match="a new nextCursor for every page"):
            CogniteHook().list_extpipe_runs(CogniteHook.extpipe_runs_filter(XID))
        assert len(requests_mock.request_history) == 3  # token + two pages

    def test_malformed_page(self, requests_mock: Any, conn_env: Any) -> None:
        conn_env("cognite_default", **cognite_connection())
        requests_mock.post(TOKEN_URL, json={"access_token": ACCESS_TOKEN, "expires_in": 3600})
        requests_mock.post(f"{BASE}/extpipes/runs/list", json={"data": []})
        expected = r"list extraction pipeline runs \(extraction pipeline 'extractor'\)"
        with pytest.raises(ApiError, match=expected):
            CogniteHook().list_extpipe_runs(CogniteHook.extpipe_runs_filter(XID))


class TestRetrieve:
    def test_by_external_id(self, fake: FakeExtpipes) -> None:
        assert CogniteHook().retrieve_extpipe(XID)["name"] == "Extractor"
        assert fake.calls_to("byids") == [{"items": [{"externalId": XID}], "ignoreUnknownIds": False}]

    def test_unknown_external_id(self, fake: FakeExtpipes) -> None:
        with pytest.raises(ApiError) as info:
            CogniteHook().retrieve_extpipe("nope")
        assert info.value.status == 400
        assert "Ids not found (missing: [{'externalId': 'nope'}])" in str(info.value)
        assert "request id req-byids" in str(info.value)

    def test_bad_external_id_sends_nothing(self, fake: FakeExtpipes) -> None:
        with pytest.raises(ValueError, match="external_id"):
            CogniteHook().retrieve_extpipe("")
        assert fake.calls == []


# --------------------------------------------------------------------------------------------
# Reporting exactly once
# --------------------------------------------------------------------------------------------


class TestReport:
    def test_plain_success(self, fake: FakeExtpipes) -> None:
        run = CogniteHook().report_extpipe_run(item())
        assert run["id"] == 100 and len(fake.runs[XID]) == 1
        assert fake.calls_to("list") == []  # no ambiguity, no check

    def test_missing_created_time_is_set_so_the_check_can_match(self, fake: FakeExtpipes) -> None:
        before = to_epoch_ms(datetime.now(timezone.utc))
        CogniteHook().report_extpipe_run(item(created=None))
        created = fake.calls_to("create")[0]["items"][0]["createdTime"]
        assert before <= created <= to_epoch_ms(datetime.now(timezone.utc))

    @pytest.mark.parametrize("action", ["503+created", "timeout+created", "drop+created",
                                        "malformed+created"])
    def test_recorded_despite_a_lost_answer_is_not_sent_again(self, fake: FakeExtpipes, action: str) -> None:
        fake.create_script = [action]
        run = CogniteHook().report_extpipe_run(item(message="rows: 12"))
        assert len(fake.calls_to("create")) == 1  # never doubled
        assert fake.runs[XID] == [{"id": 100, "status": "success", "createdTime": T0, "message": "rows: 12"}]
        assert run == {"externalId": XID, **fake.runs[XID][0]}
        check = fake.calls_to("list")[0]
        assert check["filter"] == {"externalId": XID, "statuses": ["success"],
                                   "createdTime": {"min": T0, "max": T0}}

    @pytest.mark.parametrize("action", ["503", "timeout", "drop"])
    def test_lost_before_recording_is_sent_again(self, fake: FakeExtpipes, action: str) -> None:
        fake.create_script = [action]
        run = CogniteHook().report_extpipe_run(item())
        assert len(fake.calls_to("create")) == 2  # never lost
        assert len(fake.runs[XID]) == 1 and run["id"] == 100
        assert fake.calls_to("create")[0] == fake.calls_to("create")[1]  # same createdTime both times

    def test_check_matches_the_message_exactly(self, fake: FakeExtpipes) -> None:
        fake.add_run("success", T0, "another report in the same millisecond")
        fake.create_script = ["503"]
        CogniteHook().report_extpipe_run(item(message="mine"))
        messages = [r.get("message") for r in fake.runs[XID]]
        assert messages == ["another report in the same millisecond", "mine"]

    def test_bounded_sends(self, fake: FakeExtpipes) -> None:
        fake.create_script = ["503", "timeout", "503"]
        with pytest.raises(AirflowException, match="3 send\\(s\\) got no reliable answer") as info:
            CogniteHook().report_extpipe_run(item())
        assert len(fake.calls_to("create")) == 3 and len(fake.calls_to("list")) == 3
        assert fake.runs[XID] == []
        assert "HTTP 503" in str(info.value)

    def test_max_sends_parameter(self, fake: FakeExtpipes) -> None:
        fake.create_script = ["503"]
        with pytest.raises(AirflowException):
            CogniteHook().report_extpipe_run(item(), max_sends=1)
        assert len(fake.calls_to("create")) == 1
        with pytest.raises(ValueError, match="max_sends"):
            CogniteHook().report_extpipe_run(item(), max_sends=0)

    def test_refusal_is_raised_at_once(self, fake: FakeExtpipes) -> None:
        fake.create_script = ["400"]
        with pytest.raises(ApiError) as info:
            CogniteHook().report_extpipe_run(item())
        assert info.value.status == 400 and fake.calls_to("list") == [] and len(fake.calls_to("create")) == 1

    def test_throttling_is_retried_by_the_core(self, fake: FakeExtpipes) -> None:
        fake.create_script = ["429"]
        CogniteHook().report_extpipe_run(item())
        assert len(fake.calls_to("create")) == 2 and len(fake.runs[XID]) == 1 and fake.calls_to("list") == []

    def test_failed_check_does_not_risk_a_duplicate(self, fake: FakeExtpipes) -> None:
        fake.create_script = ["timeout+created"]
        fake.list_script = ["500"]
        with pytest.raises(AirflowException, match=r"outcome of the 'success' run .* is unknown") as info:
            CogniteHook().report_extpipe_run(item())
        assert len(fake.calls_to("create")) == 1 and len(fake.runs[XID]) == 1
        assert "HTTP 500" in str(info.value)
        assert "checks again first when its task is retried" in str(info.value)

    def test_check_first_finds_an_earlier_send(self, fake: FakeExtpipes) -> None:
        fake.add_run("success", T0, "ok")
        run = CogniteHook().report_extpipe_run(item(), check_first=True)
        assert run["id"] == 100 and fake.calls_to("create") == []

    def test_check_first_sends_when_absent(self, fake: FakeExtpipes) -> None:
        CogniteHook().report_extpipe_run(item(), check_first=True)
        assert len(fake.calls_to("list")) == 1 and len(fake.calls_to("create")) == 1

    def test_secrets_stay_out_of_logs_and_errors(self, fake: FakeExtpipes, logs: Any) -> None:
        fake.create_script = ["503", "503", "503"]
        with pytest.raises(AirflowException) as info:
            CogniteHook().report_extpipe_run(item())
        text = logs()
        assert "was not recorded; sending it again (send 2 of 3)" in text  # the log is captured
        for secret in (CLIENT_SECRET, ACCESS_TOKEN):
            assert secret not in text and secret not in str(info.value)

    def test_same_run(self) -> None:
        it = item(message=None)
        assert same_extpipe_run({"id": 1, "status": "success", "createdTime": T0}, it)
        assert same_extpipe_run({"id": 1, "status": "success", "createdTime": T0, "message": ""}, it)
        assert not same_extpipe_run({"id": 1, "status": "success", "createdTime": T0 + 1}, it)
        assert not same_extpipe_run({"id": 1, "status": "seen", "createdTime": T0}, it)
        assert not same_extpipe_run("run", it)


# --------------------------------------------------------------------------------------------
# The job kind behind the sensor and the trigger
# --------------------------------------------------------------------------------------------


def ref(**overrides: Any) -> dict[str, Any]:
    values = {"external_id": XID, "statuses": ["success"], "failure_statuses": ["failure"],
              "created_after": T0}
    values.update(overrides)
    return extraction_report_ref(**values)


class TestReportKind:
    def test_ref_validation(self) -> None:
        assert ref() == {"external_id": XID, "statuses": ["success"], "failure_statuses": ["failure"],
                         "created_after": T0}
        json.dumps(ref())
        with pytest.raises(ValueError, match="at least one run status"):
            ref(statuses=[])
        with pytest.raises(ValueError, match="must not share a status"):
            ref(statuses=["success", "failure"])
        with pytest.raises(ValueError, match="failure_statuses must be one of"):
            ref(failure_statuses=["error"])
        with pytest.raises(ValueError, match="created_after"):
            ref(created_after="later")
        assert ref(statuses="seen", failure_statuses=None)["statuses"] == ["seen"]

    def test_nothing_yet(self) -> None:
        snap = EXTRACTION_REPORT.interpret([], ref())
        assert snap.outcome is Outcome.RUNNING and snap.state == "waiting"

    def test_success(self) -> None:
        runs = [{"id": 2, "status": "success", "createdTime": T0 + 5, "message": "12 rows"}]
        snap = EXTRACTION_REPORT.interpret(runs, ref())
        assert snap.outcome is Outcome.SUCCESS and snap.message == "12 rows"
        assert snap.result == {"external_id": XID, "run": {"externalId": XID, **runs[0]}}

    def test_failure_first_fails(self) -> None:
        runs = [{"id": 3, "status": "success", "createdTime": T0 + 9},
                {"id": 2, "status": "failure", "createdTime": T0 + 5, "message": "source down"}]
        snap = EXTRACTION_REPORT.interpret(runs, ref())
        assert snap.outcome is Outcome.FAILED and snap.message == "source down" and snap.state == "failure"

    def test_success_first_wins(self) -> None:
        runs = [{"id": 3, "status": "failure", "createdTime": T0 + 9},
                {"id": 2, "status": "success", "createdTime": T0 + 5}]
        assert EXTRACTION_REPORT.interpret(runs, ref()).outcome is Outcome.SUCCESS

    def test_same_millisecond_counts_the_failure_first(self) -> None:
        runs = [{"id": 2, "status": "success", "createdTime": T0},
                {"id": 3, "status": "failure", "createdTime": T0}]
        assert EXTRACTION_REPORT.interpret(runs, ref()).outcome is Outcome.FAILED

    def test_failure_without_message(self) -> None:
        snap = EXTRACTION_REPORT.interpret([{"id": 2, "status": "failure", "createdTime": T0}], ref())
        assert snap.message == "the run has no message"

    def test_other_statuses_are_ignored(self) -> None:
        runs = [{"id": 2, "status": "seen", "createdTime": T0}]
        assert EXTRACTION_REPORT.interpret(runs, ref()).outcome is Outcome.RUNNING
        assert EXTRACTION_REPORT.interpret(runs, ref(statuses=["seen"])).outcome is Outcome.SUCCESS

    def test_read_scans_every_page_for_the_oldest(self, fake: FakeExtpipes) -> None:
        fake.page_size = 2
        fake.add_run("failure", T0 - 1, "before the window")
        fake.add_run("failure", T0 + 1, "first in the window")
        for i in range(2, 7):
            fake.add_run("success", T0 + i)
        snap = EXTRACTION_REPORT.read(CogniteHook(), ref())
        assert snap.outcome is Outcome.FAILED and snap.message == "first in the window"
        bodies = fake.calls_to("list")
        assert len(bodies) == 3  # 6 matching runs, pages of 2
        assert bodies[0]["filter"] == {"externalId": XID, "statuses": ["success", "failure"],
                                       "createdTime": {"min": T0}}

    def test_describe_and_timeout_message(self) -> None:
        assert EXTRACTION_REPORT.describe(ref()) == "'extractor' (success since 2025-01-01T00:00:00.000Z)"
        text = EXTRACTION_REPORT.timeout_message(ref(statuses=["success", "seen"]), None, 30.4)
        assert text == ("Timed out after 30 s waiting for extraction pipeline 'extractor' to report a run "
                        "with status success or seen created at or after 2025-01-01T00:00:00.000Z; "
                        "none was reported.")

    def test_ms_to_iso(self) -> None:
        assert ms_to_iso(T0 + 7) == "2025-01-01T00:00:00.007Z"
        assert ms_to_iso(None) == "None"
