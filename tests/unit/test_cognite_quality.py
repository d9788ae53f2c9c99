"""Advanced-join quality gate on CDF: hook, operator, sensor and trigger, success and failure paths."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from airflow.sdk import DAG, PokeReturnValue

from airflow_provider_pipelines._compat import (
    AIRFLOW_V_3_3_PLUS,
    AirflowException,
    AirflowSensorTimeout,
    TaskDeferred,
)
from airflow_provider_pipelines.hooks._http import ApiError
from airflow_provider_pipelines.hooks.cognite import CDF_VERSIONS, CogniteHook
from airflow_provider_pipelines.jobs.base import JobFailedError, JobTimeoutError
from airflow_provider_pipelines.operators.cognite import CogniteAdvancedJoinQualityOperator
from airflow_provider_pipelines.sensors.cognite import CogniteAdvancedJoinQualitySensor
from airflow_provider_pipelines.triggers.cognite import CogniteAdvancedJoinQualityTrigger
from tests.unit import test_cognite_entity_matching as em
from tests.unit.test_cognite_entity_matching import (
    ACCESS_TOKEN,
    BASE,
    CLIENT_SECRET,
    FakeCdf,
    FakeStateStore,
    FakeTI,
    all_logs,
    cdf_requests,
    collect,
    make_context,
)

# the fixtures of the entity matching tests (a local CDF, requests-mock with a token endpoint)
cognite_conn = em.cognite_conn
cdf = em.cdf
fake_cdf = em.fake_cdf
no_sleep = em.no_sleep

EQ = f"{BASE}/advancedjoins/estimatequality"
ALPHA = CDF_VERSIONS["advanced_joins"]
JOB = "2c6f1e9a-3b1d-4c55-9d2e-8f0a1b2c3d4e"
JOIN = "assets.to.timeseries"
MATCHER = {"type": "raw", "dbName": "known", "tableName": "matches", "fromColumnKey": "from",
           "toColumnKey": "to"}
METRICS = ("qualityScorePercent", "confidencePercent", "contextualizationScorePercent")


#: Tests of the Airflow 3.3 task state store; older releases adopt the vendor's active run
#: instead (that side: tests/unit/test_version_compat.py).
state_store_only = pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS,
                                      reason="the task state store exists from Airflow 3.3")


def job_doc(status: str, job_id: str = JOB, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"jobId": job_id, "status": status, "createdTime": 1730204346000,
                           "startTime": 1730204346000, "statusTime": 1730204350000,
                           "advancedJoinExternalId": JOIN, "matcher": MATCHER, "errorMessage": None}
    doc.update(extra)
    return doc


def scored(
    quality: float = 91, confidence: float = 88, context: float = 75, job_id: str = JOB
) -> dict[str, Any]:
    return job_doc("Completed", job_id, qualityScorePercent=quality, confidencePercent=confidence,
                   contextualizationScorePercent=context)


def operator(**kwargs: Any) -> CogniteAdvancedJoinQualityOperator:
    args: dict[str, Any] = {"task_id": "quality", "advanced_join_external_id": JOIN, "matcher": MATCHER}
    args.update(kwargs)
    return CogniteAdvancedJoinQualityOperator(**args)


# --------------------------------------------------------------------------------------------
# Hook
# --------------------------------------------------------------------------------------------


class TestHook:
    def test_start_posts_the_documented_body_with_the_alpha_header(self, cdf: Any) -> None:
        cdf.post(EQ, json=job_doc("Queued"))
        assert CogniteHook().start_estimate_quality(JOIN, MATCHER)["jobId"] == JOB
        (req,) = cdf_requests(cdf)
        assert req.method == "POST" and req.url == EQ  # no /context prefix
        assert req.headers["cdf-version"] == ALPHA == "20230101-alpha"
        assert req.json() == {"advancedJoinExternalId": JOIN, "matcher": MATCHER}  # never dummyResponse

    def test_get_url_encodes_the_opaque_job_id(self, cdf: Any) -> None:
        cdf.get(f"{EQ}/{JOB}", json=scored())
        cdf.get(f"{EQ}/odd%2Fid%20x", json=job_doc("Running", "odd/id x"))
        hook = CogniteHook()
        assert hook.get_estimate_quality(JOB)["qualityScorePercent"] == 91
        assert hook.get_estimate_quality("odd/id x")["status"] == "Running"
        paths = [r.path for r in cdf_requests(cdf)]
        assert paths[1].endswith("/advancedjoins/estimatequality/odd%2fid%20x")
        assert {r.headers["cdf-version"] for r in cdf_requests(cdf)} == {ALPHA}

    @pytest.mark.parametrize("job_id", ["", "  ", None, 123])
    def test_bad_job_ids_fail_before_any_request(self, cdf: Any, job_id: Any) -> None:
        with pytest.raises(ValueError, match="must be a non-empty string"):
            CogniteHook().get_estimate_quality(job_id)
        assert cdf.request_history == []

    def test_bad_matcher_fails_before_any_request(self, cdf: Any) -> None:
        with pytest.raises(ValueError, match="toColumnKey"):
            CogniteHook().start_estimate_quality(JOIN, {**MATCHER, "toColumnKey": ""})
        with pytest.raises(ValueError, match="at most 255"):
            CogniteHook().start_estimate_quality("x" * 256, MATCHER)
        assert cdf.request_history == []

    def test_starting_an_estimate_is_not_retried_after_an_ambiguous_502(self, cdf: Any) -> None:
        cdf.post(EQ, status_code=502, headers={"x-request-id": "r-502"}, text="Bad gateway")
        with pytest.raises(ApiError) as info:
            CogniteHook().start_estimate_quality(JOIN, MATCHER)
        assert info.value.ambiguous and "r-502" in str(info.value)
        assert len(cdf_requests(cdf)) == 1

    def test_cdf_error_is_reported_with_resource_status_message_and_request_id(self, cdf: Any) -> None:
        cdf.post(EQ, status_code=400, headers={"x-request-id": "r-400"},
                 json={"error": {"code": 400, "message": "Advanced join not found",
                                 "missing": [{"externalId": JOIN}]}})
        with pytest.raises(ApiError) as info:
            CogniteHook().start_estimate_quality(JOIN, MATCHER)
        text = str(info.value)
        for part in ("start estimate-quality job", f"advanced join {JOIN!r}", "HTTP 400",
                     "Advanced join not found", "missing", "r-400"):
            assert part in text

    @pytest.mark.asyncio
    async def test_async_twins(self, fake_cdf: FakeCdf) -> None:
        hook = CogniteHook()
        job = await hook.astart_estimate_quality(JOIN, MATCHER)
        assert job["status"] == "Queued"
        assert (await hook.aget_estimate_quality(job["jobId"]))["status"] == "Running"
        assert (await hook.aget_estimate_quality(job["jobId"]))["qualityScorePercent"] == 91
        api = [c for c in fake_cdf.log if c[1].startswith("/api/")]
        assert [c[0] for c in api] == ["POST", "GET", "GET"]
        assert all(c[2]["cdf-version"] == ALPHA for c in api)


# --------------------------------------------------------------------------------------------
# Operator: validation at construction and after rendering
# --------------------------------------------------------------------------------------------


class TestValidation:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"matcher": ["raw"]}, "matcher must be a dict"),
            ({"matcher": "not json"}, "matcher must be a dict"),
            ({"matcher": {**MATCHER, "type": "sql"}}, "matcher\\['type'\\] must be 'raw'"),
            ({"matcher": {k: v for k, v in MATCHER.items() if k != "dbName"}}, "dbName"),
            ({"matcher": {**MATCHER, "tableName": " "}}, "tableName"),
            ({"matcher": {**MATCHER, "fromColumnKey": 5}}, "fromColumnKey"),
            ({"matcher": {**MATCHER, "query": "x"}}, "unknown field\\(s\\) query"),
            ({"advanced_join_external_id": ""}, "advanced_join_external_id must be a non-empty string"),
            ({"advanced_join_external_id": 12}, "advanced_join_external_id must be a non-empty string"),
            ({"advanced_join_external_id": "j" * 256}, "at most 255 characters, got 256"),
            ({"min_quality_score_percent": -1}, "min_quality_score_percent must be between 0 and 100"),
            ({"min_confidence_percent": 100.5}, "min_confidence_percent must be between 0 and 100"),
            ({"min_contextualization_score_percent": "high"}, "must be a number between 0 and 100"),
            ({"min_quality_score_percent": True}, "must be a number between 0 and 100"),
            ({"min_quality_score_percent": float("nan")}, "between 0 and 100"),
            ({"poll_interval": 0}, "poll_interval must be a positive"),
            ({"timeout": -10}, "timeout must be a positive"),
            ({"wait_for_completion": False, "min_quality_score_percent": 50},
             "need wait_for_completion=True"),
        ],
    )
    def test_bad_input_fails_at_construction_without_a_request(
        self, cdf: Any, kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            operator(**kwargs)
        assert cdf.request_history == []

    def test_edges_of_the_ranges_are_accepted(self) -> None:
        op = operator(advanced_join_external_id="j" * 255, min_quality_score_percent=0,
                      min_confidence_percent="100", min_contextualization_score_percent=55.5)
        assert op._validate(rendered=True)[2] == {"min_quality_score_percent": 0.0,
                                                  "min_confidence_percent": 100.0,
                                                  "min_contextualization_score_percent": 55.5}

    def test_matcher_may_be_a_json_string(self) -> None:
        assert operator(matcher=json.dumps(MATCHER))._validate(rendered=True)[1] == MATCHER

    def test_templates_render_from_params_including_a_whole_matcher(self) -> None:
        params = {"db": "known", "min": "80", "m": MATCHER, "join": JOIN}
        with DAG("quality_templates", schedule=None, params=params):
            per_field = operator(task_id="per_field", advanced_join_external_id="{{ params.join }}",
                                 matcher={**MATCHER, "dbName": "{{ params.db }}"},
                                 min_quality_score_percent="{{ params.min }}")
            whole = operator(task_id="whole", matcher="{{ params.m }}")
        for op in (per_field, whole):
            op.render_template_fields({"params": params})
            external_id, matcher, _ = op._validate(rendered=True)
            assert external_id == JOIN and matcher == MATCHER
        assert per_field._validate(rendered=True)[2]["min_quality_score_percent"] == 80.0
        # without native rendering a dict param renders to its Python repr: still accepted
        assert isinstance(whole.matcher, str)

    def test_xcom_args_are_accepted_at_construction(self) -> None:
        from airflow.sdk import task

        with DAG("quality_xcom", schedule=None):
            @task
            def join() -> str:
                return JOIN

            @task
            def minimum() -> int:
                return 70

            op = operator(advanced_join_external_id=join(), matcher={**MATCHER, "tableName": join()},
                          min_quality_score_percent=minimum())
        assert op.upstream_task_ids == {"join", "join__1", "minimum"}

    @pytest.mark.parametrize(
        ("field", "rendered", "message"),
        [
            ("min_quality_score_percent", "eighty", "min_quality_score_percent must be a number"),
            ("min_confidence_percent", "140", "min_confidence_percent must be between 0 and 100"),
            ("advanced_join_external_id", "", "advanced_join_external_id must be a non-empty string"),
            ("matcher", "{'type': 'raw'}", "matcher is missing non-empty string field"),
        ],
    )
    def test_bad_rendered_values_fail_before_any_request(
        self, cdf: Any, field: str, rendered: str, message: str
    ) -> None:
        op = operator(**{field: "{{ params.value }}"})
        setattr(op, field, rendered)  # what rendering produced
        with pytest.raises(ValueError, match=message):
            op.execute(make_context())
        assert cdf.request_history == []


# --------------------------------------------------------------------------------------------
# Operator: waiting in the worker, the gate, failures, timeout
# --------------------------------------------------------------------------------------------


class TestOperatorInWorker:
    def test_success_returns_job_id_and_the_three_percentages(self, cdf: Any, no_sleep: list[float]) -> None:
        cdf.post(EQ, json=job_doc("Queued"))
        ti = FakeTI()
        reads_when_pushed: list[int] = []
        original = ti.xcom_push

        def push(key: str, value: Any) -> None:
            reads_when_pushed.append(sum(r.method == "GET" for r in cdf_requests(cdf)))
            original(key, value)

        ti.xcom_push = push  # type: ignore[method-assign]
        cdf.get(f"{EQ}/{JOB}", [{"json": job_doc("Running")}, {"json": scored(91, 88, 75)}])
        result = operator(min_quality_score_percent=90, min_confidence_percent=88,
                          min_contextualization_score_percent=70).execute(make_context(ti))
        assert reads_when_pushed == [0]
        assert ti.xcoms == {"job_id": JOB}
        assert result["job_id"] == JOB and result["status"] == "Completed"
        assert [result[m] for m in METRICS] == [91, 88, 75]
        assert result["advanced_join_external_id"] == JOIN
        json.dumps(result)

    def test_gate_names_every_metric_under_its_minimum_with_both_numbers(
        self, cdf: Any, no_sleep: list[float]
    ) -> None:
        cdf.post(EQ, json=job_doc("Queued"))
        cdf.get(f"{EQ}/{JOB}", json=scored(62.5, 88, 40))
        op = operator(min_quality_score_percent=80, min_confidence_percent=50,
                      min_contextualization_score_percent=45)
        with pytest.raises(JobFailedError) as info:
            op.execute(make_context())
        text = str(info.value)
        assert f"Quality gate not met for advanced join {JOIN!r} (job {JOB})" in text
        assert "qualityScorePercent 62.5 < minimum 80" in text
        assert "contextualizationScorePercent 40 < minimum 45" in text
        assert "confidencePercent" not in text  # 88 >= 50: not named

    def test_without_thresholds_any_scores_pass(self, cdf: Any, no_sleep: list[float]) -> None:
        cdf.post(EQ, json=job_doc("Queued"))
        cdf.get(f"{EQ}/{JOB}", json=scored(1, 2, 3))
        assert operator().execute(make_context())["qualityScorePercent"] == 1

    @pytest.mark.parametrize(("value", "message"), [
        (None, "qualityScorePercent is missing from the result (minimum 10)"),
        ("n/a", "qualityScorePercent is not a number ('n/a'; minimum 10)"),
    ])
    def test_a_gated_metric_cdf_did_not_send_fails_the_gate(
        self, cdf: Any, no_sleep: list[float], value: Any, message: str
    ) -> None:
        cdf.post(EQ, json=job_doc("Queued"))
        cdf.get(f"{EQ}/{JOB}", json=job_doc("Completed", qualityScorePercent=value))
        with pytest.raises(JobFailedError, match=message.replace("(", r"\(").replace(")", r"\)")):
            operator(min_quality_score_percent=10).execute(make_context())

    def test_failed_job_fails_with_cdfs_message(self, cdf: Any, no_sleep: list[float]) -> None:
        cdf.post(EQ, json=job_doc("Queued"))
        cdf.get(f"{EQ}/{JOB}", json=job_doc("Failed", errorMessage="RAW table known.matches not found"))
        with pytest.raises(JobFailedError, match=f"{JOB} for advanced join {JOIN!r} ended Failed: RAW table"):
            operator(min_quality_score_percent=10).execute(make_context())

    def test_timeout_names_the_job_its_status_and_the_sensor(self, cdf: Any) -> None:
        cdf.post(EQ, json=job_doc("Queued"))
        cdf.get(f"{EQ}/{JOB}", json=job_doc("Running"))
        with pytest.raises(JobTimeoutError) as info:
            operator(poll_interval=0.01, timeout=0.1).execute(make_context())
        text = str(info.value)
        assert JOB in text and "'Running'" in text
        assert f"CogniteAdvancedJoinQualitySensor(job_id='{JOB}')" in text

    def test_without_waiting_returns_the_job_id(self, cdf: Any) -> None:
        cdf.post(EQ, json=job_doc("Queued"))
        ti = FakeTI()
        result = operator(wait_for_completion=False).execute(make_context(ti))
        assert result["job_id"] == JOB and result["status"] == "Queued" and ti.xcoms["job_id"] == JOB
        assert [r.method for r in cdf_requests(cdf)] == ["POST"]

    def test_start_answer_without_job_id_fails_clearly(self, cdf: Any) -> None:
        cdf.post(EQ, json={"status": "Queued"})
        with pytest.raises(AirflowException, match="without a jobId"):
            operator().execute(make_context())


# --------------------------------------------------------------------------------------------
# Operator: deferrable
# --------------------------------------------------------------------------------------------


class TestOperatorDeferrable:
    def test_defers_with_json_kwargs_and_absolute_deadline(self, cdf: Any) -> None:
        cdf.post(EQ, json=job_doc("Queued"))
        cdf.get(f"{EQ}/{JOB}", json=job_doc("Running"))
        before = time.time()
        with pytest.raises(TaskDeferred) as info:
            operator(deferrable=True, timeout=900, poll_interval=20).execute(make_context())
        assert info.value.method_name == "execute_complete" and info.value.timeout is None
        trigger = info.value.trigger
        assert isinstance(trigger, CogniteAdvancedJoinQualityTrigger)
        classpath, kwargs = trigger.serialize()
        assert classpath == "airflow_provider_pipelines.triggers.cognite.CogniteAdvancedJoinQualityTrigger"
        assert kwargs["ref"] == {"job_id": JOB}
        assert before + 900 <= kwargs["deadline"] <= time.time() + 900
        text = json.dumps(kwargs)
        assert CLIENT_SECRET not in text and ACCESS_TOKEN not in text

    def test_execute_complete_applies_the_gate(self) -> None:
        op = operator(deferrable=True, min_confidence_percent=90)
        event = {"status": "success", "kind": "cognite.advanced_join_estimate_quality",
                 "ref": {"job_id": JOB},
                 "state": "Completed", "message": None,
                 "result": {"job_id": JOB, "qualityScorePercent": 95, "confidencePercent": 89.5,
                            "contextualizationScorePercent": 99}}
        with pytest.raises(JobFailedError, match=r"confidencePercent 89\.5 < minimum 90"):
            op.execute_complete(make_context(), event)
        event["result"]["confidencePercent"] = 90
        assert op.execute_complete(make_context(), event)["confidencePercent"] == 90

    def test_execute_complete_uses_rendered_thresholds(self) -> None:
        op = operator(deferrable=True, min_quality_score_percent="{{ params.min }}")
        op.min_quality_score_percent = "75"  # rendered again when the task resumes
        event = {"status": "success", "ref": {"job_id": JOB}, "state": "Completed",
                 "result": {"qualityScorePercent": 70}}
        with pytest.raises(JobFailedError, match="qualityScorePercent 70 < minimum 75"):
            op.execute_complete(make_context(), event)

    def test_execute_complete_failed_timeout_and_error(self) -> None:
        op = operator(deferrable=True)
        with pytest.raises(JobFailedError, match="ended Failed: matcher table is empty"):
            op.execute_complete(make_context(), {"status": "failed", "ref": {"job_id": JOB},
                                                 "state": "Failed", "message": "matcher table is empty"})
        with pytest.raises(JobTimeoutError, match=JOB):
            op.execute_complete(make_context(), {"status": "timeout", "ref": {"job_id": JOB},
                                                 "message": f"Timed out waiting for job {JOB}"})
        with pytest.raises(AirflowException, match="HTTP 500"):
            op.execute_complete(make_context(), {"status": "error", "message": "Cognite API: HTTP 500"})


# --------------------------------------------------------------------------------------------
# Operator: reattach on retry
# --------------------------------------------------------------------------------------------


class TestReattach:
    KEY = CogniteAdvancedJoinQualityOperator.STATE_KEY

    def remembered(self, **extra: Any) -> FakeStateStore:
        remembered = {"job_id": JOB, "advanced_join_external_id": JOIN, "matcher": MATCHER, **extra}
        return FakeStateStore({self.KEY: remembered})

    @state_store_only
    def test_retry_reattaches_to_the_running_estimate(self, cdf: Any, no_sleep: list[float]) -> None:
        store = self.remembered()
        cdf.get(f"{EQ}/{JOB}", [{"json": job_doc("Running")}, {"json": scored()}])
        ti = FakeTI(2)
        assert operator().execute(make_context(ti, store))["job_id"] == JOB
        assert "POST" not in [r.method for r in cdf_requests(cdf)]
        assert ti.xcoms["job_id"] == JOB
        assert store.values == {}  # judged: a later clear estimates again

    def test_a_different_matcher_starts_a_new_estimate(self, cdf: Any, no_sleep: list[float]) -> None:
        store = self.remembered(matcher={**MATCHER, "tableName": "old"})
        cdf.post(EQ, json=job_doc("Queued", "new-job"))
        cdf.get(f"{EQ}/new-job", json=scored(job_id="new-job"))
        assert operator().execute(make_context(FakeTI(2), store))["job_id"] == "new-job"
        assert not any(JOB in r.url for r in cdf.request_history)

    @pytest.mark.parametrize("remembered_status", [404, "Failed"])
    def test_failed_or_vanished_estimate_is_replaced(
        self, cdf: Any, no_sleep: list[float], remembered_status: Any
    ) -> None:
        if remembered_status == 404:
            cdf.get(f"{EQ}/{JOB}", status_code=404, json={"error": {"code": 404, "message": "gone"}})
        else:
            cdf.get(f"{EQ}/{JOB}", json=job_doc("Failed", errorMessage="x"))
        cdf.post(EQ, json=job_doc("Queued", "new-job"))
        cdf.get(f"{EQ}/new-job", json=scored(job_id="new-job"))
        assert operator().execute(make_context(FakeTI(2), self.remembered()))["job_id"] == "new-job"

    def test_without_a_state_store_a_retry_starts_a_new_estimate(
        self, cdf: Any, no_sleep: list[float]
    ) -> None:
        cdf.post(EQ, json=job_doc("Queued"))
        cdf.get(f"{EQ}/{JOB}", json=scored())
        assert operator().execute(make_context(FakeTI(2), None))["job_id"] == JOB
        assert [r.method for r in cdf_requests(cdf)] == ["POST", "GET"]

    @state_store_only
    def test_timeout_keeps_the_job_for_the_retry(self, cdf: Any) -> None:
        cdf.post(EQ, json=job_doc("Queued"))
        cdf.get(f"{EQ}/{JOB}", json=job_doc("Running"))
        store = FakeStateStore()
        with pytest.raises(JobTimeoutError):
            operator(poll_interval=0.01, timeout=0.1).execute(make_context(FakeTI(1), store))
        assert store.values[self.KEY]["job_id"] == JOB
        cdf.get(f"{EQ}/{JOB}", json=scored())
        assert operator(poll_interval=0.01).execute(make_context(FakeTI(2), store))["job_id"] == JOB
        assert [r.method for r in cdf_requests(cdf)].count("POST") == 1


# --------------------------------------------------------------------------------------------
# Sensor
# --------------------------------------------------------------------------------------------


class TestSensor:
    def test_poke_waits_then_returns_the_scores(self, cdf: Any) -> None:
        cdf.get(f"{EQ}/{JOB}", [{"json": job_doc("Queued")}, {"json": scored()}])
        sensor = CogniteAdvancedJoinQualitySensor(task_id="s", job_id=JOB, min_quality_score_percent=90)
        assert sensor.poke(make_context()) is False
        done = sensor.poke(make_context())
        assert isinstance(done, PokeReturnValue) and done.xcom_value["qualityScorePercent"] == 91

    def test_poke_gate_failure_names_metrics(self, cdf: Any) -> None:
        cdf.get(f"{EQ}/{JOB}", json=scored(50, 60, 70))
        sensor = CogniteAdvancedJoinQualitySensor(task_id="s", job_id=JOB, min_quality_score_percent=55,
                                                  min_contextualization_score_percent=71)
        with pytest.raises(JobFailedError) as info:
            sensor.poke(make_context())
        assert "qualityScorePercent 50 < minimum 55" in str(info.value)
        assert "contextualizationScorePercent 70 < minimum 71" in str(info.value)

    def test_poke_failed_job(self, cdf: Any) -> None:
        cdf.get(f"{EQ}/{JOB}", json=job_doc("Failed", errorMessage="view not readable"))
        sensor = CogniteAdvancedJoinQualitySensor(task_id="s", job_id=JOB)
        with pytest.raises(JobFailedError, match="view not readable"):
            sensor.poke(make_context())

    def test_deferrable_defers_and_completes_with_the_gate(self, cdf: Any) -> None:
        cdf.get(f"{EQ}/{JOB}", json=job_doc("Running"))
        sensor = CogniteAdvancedJoinQualitySensor(task_id="s", job_id=JOB, deferrable=True, poke_interval=5,
                                                  timeout=300, min_confidence_percent=80)
        with pytest.raises(TaskDeferred) as info:
            sensor.execute(make_context())
        trigger = info.value.trigger
        assert isinstance(trigger, CogniteAdvancedJoinQualityTrigger) and trigger.ref == {"job_id": JOB}
        event = {"status": "success", "ref": {"job_id": JOB}, "state": "Completed",
                 "result": {"confidencePercent": 79}}
        with pytest.raises(JobFailedError, match="confidencePercent 79 < minimum 80"):
            sensor.execute_complete(make_context(), event)
        with pytest.raises(AirflowSensorTimeout):
            sensor.execute_complete(make_context(), {"status": "timeout", "message": "late"})

    @pytest.mark.parametrize(("kwargs", "message"), [
        ({"job_id": ""}, "job_id must be a non-empty string"),
        ({"job_id": 123}, "job_id must be a non-empty string"),
        ({"job_id": JOB, "min_quality_score_percent": 101}, "between 0 and 100"),
        ({"job_id": JOB, "poke_interval": -1}, "poke_interval"),
    ])
    def test_bad_input_fails_at_construction(self, cdf: Any, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            CogniteAdvancedJoinQualitySensor(task_id="s", **kwargs)
        assert cdf.request_history == []

    def test_templated_job_id_and_thresholds(self, cdf: Any) -> None:
        sensor = CogniteAdvancedJoinQualitySensor(
            task_id="s", job_id="{{ ti.xcom_pull('quality', key='job_id') }}",
            min_quality_score_percent="{{ params.min }}")
        assert {"job_id", "min_quality_score_percent"} <= set(sensor.template_fields)
        sensor.job_id, sensor.min_quality_score_percent = JOB, "bad"
        cdf.get(f"{EQ}/{JOB}", json=scored())
        with pytest.raises(ValueError, match="min_quality_score_percent must be a number"):
            sensor.poke(make_context())


# --------------------------------------------------------------------------------------------
# Trigger
# --------------------------------------------------------------------------------------------


def eq_trigger(job_id: str, deadline: float | None = None) -> CogniteAdvancedJoinQualityTrigger:
    return CogniteAdvancedJoinQualityTrigger(conn_id="cognite_default", ref={"job_id": job_id},
                                             deadline=deadline if deadline is not None else time.time() + 60,
                                             poll_interval=0.01)


class TestTrigger:
    @pytest.mark.asyncio
    async def test_success_event_carries_the_scores(self, fake_cdf: FakeCdf) -> None:
        fake_cdf.estimates[JOB] = [job_doc("Queued"), job_doc("Running"), scored(70, 80, 90)]
        events = await collect(eq_trigger(JOB))
        assert len(events) == 1
        payload = events[0].payload
        assert payload["status"] == "success" and payload["kind"] == "cognite.advanced_join_estimate_quality"
        assert [payload["result"][m] for m in METRICS] == [70, 80, 90]

    @pytest.mark.asyncio
    async def test_failed_timeout_and_error_events(self, fake_cdf: FakeCdf) -> None:
        fake_cdf.estimates["f"] = [job_doc("Failed", "f", errorMessage="no matches in table")]
        fake_cdf.estimates["slow"] = [job_doc("Running", "slow")]
        (failed,) = await collect(eq_trigger("f"))
        assert failed.payload["status"] == "failed" and failed.payload["message"] == "no matches in table"
        (late,) = await collect(eq_trigger("slow", deadline=time.time() + 0.2))
        assert late.payload["status"] == "timeout"
        assert "CogniteAdvancedJoinQualitySensor" in late.payload["message"]
        (error,) = await collect(eq_trigger("unknown-job"))
        assert error.payload["status"] == "error" and "HTTP 404" in error.payload["message"]

    @pytest.mark.asyncio
    async def test_serialize_round_trip_resumes_without_starting_an_estimate(self, fake_cdf: FakeCdf) -> None:
        job = "a/b c"  # opaque ids are URL-encoded
        fake_cdf.estimates[job] = [job_doc("Running", job), scored(job_id=job)]
        original = eq_trigger(job, deadline=time.time() + 100)
        _, kwargs = original.serialize()
        rebuilt = CogniteAdvancedJoinQualityTrigger(**json.loads(json.dumps(kwargs)))
        assert rebuilt.serialize() == original.serialize() and rebuilt.deadline == original.deadline
        (event,) = await collect(rebuilt)
        assert event.payload["status"] == "success" and event.payload["ref"] == {"job_id": job}
        assert fake_cdf.calls("POST", "/estimatequality") == []
        assert fake_cdf.calls("GET", "/estimatequality/a%2Fb%20c")

    @pytest.mark.asyncio
    async def test_on_kill_sends_nothing(self, fake_cdf: FakeCdf) -> None:
        trigger = CogniteAdvancedJoinQualityTrigger(conn_id="cognite_default", ref={"job_id": JOB},
                                                    deadline=None, poll_interval=1, cancel_on_kill=True)
        await trigger.on_kill()
        assert fake_cdf.log == []


class TestSecrets:
    def test_no_secret_in_logs_xcom_result_or_gate_error(
        self, cdf: Any, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
        no_sleep: list[float],
    ) -> None:
        caplog.set_level(logging.DEBUG)
        cdf.post(EQ, json=job_doc("Queued"))
        cdf.get(f"{EQ}/{JOB}", json=scored(10, 10, 10))
        ti = FakeTI()
        with pytest.raises(JobFailedError) as info:
            operator(min_quality_score_percent=50).execute(make_context(ti))
        logs = all_logs(caplog, capfd)
        assert "Advanced join 'assets.to.timeseries' quality" in logs
        for text in (logs, json.dumps(ti.xcoms), str(info.value)):
            assert CLIENT_SECRET not in text and ACCESS_TOKEN not in text
