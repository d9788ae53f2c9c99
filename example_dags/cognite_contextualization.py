"""Daily contextualization on Cognite Data Fusion, gated on data quality.

1. ``wait_for_extractor``: wait until the extractor reports a ``success`` run created since the
   start of this run's data interval (deferred: no worker slot while waiting).
2. ``run_entity_matching``: run the entity matching pipeline (deferred).
3. ``estimate_join_quality``: estimate the advanced join's quality and fail the DAG when a score
   is under its minimum (deferred; minimums are DAG params).
4. ``report_success``: report a ``success`` run on the contextualization extraction pipeline,
   dated at the end of the data interval, so CDF's monitoring sees every day.

If a task fails, its failure callback reports a ``failure`` run carrying the error instead.

Safe to backfill: every run waits for, and reports, its own data interval
(``airflow backfill create --dag-id cognite_contextualization --from-date ... --to-date ...``).

Ids and names come, in this order, from the run's params (``--conf`` / the trigger form), from
Airflow Variables (``cognite_em_pipeline_id``, ``cognite_advanced_join``,
``cognite_extractor_pipeline``, ``cognite_report_pipeline``), or default to the sandbox's seeds
(``pipelines-sandbox serve``). The connection is ``cognite_default``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, Param

from airflow_provider_pipelines.callbacks.cognite import CogniteExtractionPipelineRunCallback
from airflow_provider_pipelines.operators.cognite import (
    CogniteAdvancedJoinQualityOperator,
    CogniteEntityMatchingPipelineRunOperator,
    CogniteExtractionPipelineRunOperator,
)
from airflow_provider_pipelines.sensors.cognite import CogniteExtractionPipelineRunSensor

try:  # Airflow >= 3.1
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow 3.0
    from airflow.timetables.interval import CronDataIntervalTimetable  # type: ignore[no-redef,assignment]

DAG_ID = "cognite_contextualization"
#: Seconds between status checks. The sandbox's jobs take seconds; real CDF jobs take minutes,
#: so use 30-60 s there (the interval grows by itself up to ``max_poll_interval``).
POLL_SECONDS = 2
#: The RAW table of known matches that the advanced join's quality is estimated against.
MATCHER = {
    "type": "raw",
    "dbName": "sandbox_db",
    "tableName": "known_matches",
    "fromColumnKey": "timeseries_external_id",
    "toColumnKey": "asset_external_id",
}


def setting(param: str, variable: str, default: object) -> str:
    """A template: the run's param when given, else the Airflow Variable, else the sandbox seed."""
    return (
        f"{{{{ params.{param} if params.{param} is not none "
        f"else var.value.get('{variable}', {default!r}) }}}}"
    )


EXTRACTOR = setting("extractor_pipeline", "cognite_extractor_pipeline", "sandbox-extractor")
REPORT_TO = setting("report_pipeline", "cognite_report_pipeline", "sandbox-contextualization")
#: The day this run covers. A run triggered without a logical date has no data interval: it
#: waits for an extractor report made after it was triggered, and reports at that time.
INTERVAL_START = "{{ data_interval_start or dag_run.run_after }}"
INTERVAL_END = "{{ data_interval_end or dag_run.run_after }}"

with DAG(
    dag_id=DAG_ID,
    doc_md=__doc__,
    description="Wait for the extractor, run entity matching, gate on advanced-join quality, report to CDF.",
    # daily intervals [00:00, 24:00) UTC: each run knows the day it covers
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=3,
    dagrun_timeout=timedelta(hours=6),
    tags=["cognite", "example"],
    params={
        "em_pipeline_id": Param(None, type=["null", "integer"], minimum=1,
                                description="Entity matching pipeline id (default: Variable or seed 1)."),
        "advanced_join": Param(None, type=["null", "string"],
                               description="Advanced join external id (default: sandbox.join.good)."),
        "extractor_pipeline": Param(None, type=["null", "string"],
                                    description="Extraction pipeline whose success run we wait for."),
        "report_pipeline": Param(None, type=["null", "string"],
                                 description="Extraction pipeline this DAG reports its runs to."),
        "min_quality_score_percent": Param(80, type="number", minimum=0, maximum=100),
        "min_confidence_percent": Param(70, type="number", minimum=0, maximum=100),
        "min_contextualization_score_percent": Param(60, type="number", minimum=0, maximum=100),
    },
    default_args={
        # a retry would reattach to the remote job its first try started (never a second run), but
        # here a failure should be reported at once
        "retries": 0,
        # a task callback runs in the worker and its report carries the task's error (the vendor's
        # message); the DAG-level form (on the DAG) also covers dagrun_timeout but not the error text
        # [START howto_callback_cognite_extraction_pipeline_run]
        "on_failure_callback": CogniteExtractionPipelineRunCallback(
            REPORT_TO, status="failure", created_time=INTERVAL_END,
        ),
        # [END howto_callback_cognite_extraction_pipeline_run]
    },
) as dag:
    # [START howto_sensor_cognite_extraction_pipeline_run]
    wait_for_extractor = CogniteExtractionPipelineRunSensor(
        task_id="wait_for_extractor",
        external_id=EXTRACTOR,
        statuses=["success"],
        # reports since the start of the day this run covers: a backfilled day waits for its own
        created_after=INTERVAL_START,
        deferrable=True,
        poke_interval=POLL_SECONDS,
        timeout=3 * 3600,
    )
    # [END howto_sensor_cognite_extraction_pipeline_run]

    # [START howto_operator_cognite_entity_matching_pipeline_run]
    run_entity_matching = CogniteEntityMatchingPipelineRunOperator(
        task_id="run_entity_matching",
        pipeline_id=setting("em_pipeline_id", "cognite_em_pipeline_id", 1),
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=timedelta(hours=2),
    )
    # [END howto_operator_cognite_entity_matching_pipeline_run]

    # [START howto_operator_cognite_advanced_join_quality]
    estimate_join_quality = CogniteAdvancedJoinQualityOperator(
        task_id="estimate_join_quality",
        advanced_join_external_id=setting("advanced_join", "cognite_advanced_join", "sandbox.join.good"),
        matcher=MATCHER,
        min_quality_score_percent="{{ params.min_quality_score_percent }}",
        min_confidence_percent="{{ params.min_confidence_percent }}",
        min_contextualization_score_percent="{{ params.min_contextualization_score_percent }}",
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=timedelta(hours=1),
    )
    # [END howto_operator_cognite_advanced_join_quality]

    # [START howto_operator_cognite_extraction_pipeline_run]
    report_success = CogniteExtractionPipelineRunOperator(
        task_id="report_success",
        external_id=REPORT_TO,
        status="success",
        message=(
            "Contextualized {{ (data_interval_start or dag_run.run_after) | ds }}: entity matching job "
            "{{ ti.xcom_pull(task_ids='run_entity_matching', key='job_id') }}, quality "
            "{{ ti.xcom_pull(task_ids='estimate_join_quality')['qualityScorePercent'] }}%"
        ),
        created_time=INTERVAL_END,
    )
    # [END howto_operator_cognite_extraction_pipeline_run]

    wait_for_extractor >> run_entity_matching >> estimate_join_quality >> report_success
