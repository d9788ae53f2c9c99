"""Gate on the quality of several CDF advanced joins at once, with dynamic task mapping.

1. ``plan_gates``: turn the ``gates`` param (one entry per advanced join, each with its own
   minimum scores) into one set of operator arguments per join, checking them first.
2. ``estimate_quality``: one mapped, deferred ``CogniteAdvancedJoinQualityOperator`` per join, all
   in parallel; while they wait they hold no worker slot, only a light poll in the triggerer.
   Each fails on its own when a score is under its minimum.
3. ``quality_report``: one line per join with its three scores.

The same pattern maps entity matching pipelines::

    CogniteEntityMatchingPipelineRunOperator.partial(task_id="match", deferrable=True).expand(
        pipeline_id=[1, 7, 42]
    )

The default gates use the sandbox's seeded advanced joins; the connection is ``cognite_default``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_pipelines.operators.cognite import THRESHOLDS, CogniteAdvancedJoinQualityOperator

DAG_ID = "cognite_quality_gates"
POLL_SECONDS = 2
MATCHER = {
    "type": "raw",
    "dbName": "sandbox_db",
    "tableName": "known_matches",
    "fromColumnKey": "timeseries_external_id",
    "toColumnKey": "asset_external_id",
}
DEFAULT_GATES = [
    {"advanced_join_external_id": "sandbox.join.good", "min_quality_score_percent": 80,
     "min_confidence_percent": 70},
    # a join that is still being curated: a lower bar, but a bar
    {"advanced_join_external_id": "sandbox.join.poor", "min_quality_score_percent": 40,
     "min_confidence_percent": 50},
]

with DAG(
    dag_id=DAG_ID,
    doc_md=__doc__,
    description="Estimate several advanced joins' quality in parallel (mapped, deferred) and gate on each.",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["cognite", "example", "dynamic-task-mapping"],
    params={
        "gates": Param(
            DEFAULT_GATES, type="array", minItems=1,
            items={"type": "object", "required": ["advanced_join_external_id"]},
            description="One object per advanced join: advanced_join_external_id and optional "
                        + ", ".join(THRESHOLDS) + ".",
        ),
    },
    default_args={"retries": 0},
) as dag:

    @task
    def plan_gates(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One kwargs dict per join; unknown keys fail here, before any request is sent."""
        allowed = {"advanced_join_external_id", *THRESHOLDS}
        plans = []
        for index, gate in enumerate((params or {})["gates"]):
            unknown = sorted(set(gate) - allowed)
            if unknown:
                raise ValueError(f"gates[{index}] has unknown key(s) {unknown}; allowed: {sorted(allowed)}.")
            plans.append(dict(gate))
        return plans

    # [START howto_operator_cognite_advanced_join_quality_mapped]
    estimate_quality = CogniteAdvancedJoinQualityOperator.partial(
        task_id="estimate_quality",
        matcher=MATCHER,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=3600,
        map_index_template="{{ task.advanced_join_external_id }}",
    ).expand_kwargs(plan_gates())
    # [END howto_operator_cognite_advanced_join_quality_mapped]

    @task
    def quality_report(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = [
            {
                "advanced_join": r.get("advanced_join_external_id"),
                "job_id": r.get("job_id"),
                "quality": r.get("qualityScorePercent"),
                "confidence": r.get("confidencePercent"),
                "contextualization": r.get("contextualizationScorePercent"),
            }
            # index access: iterating a lazy XCom sequence probes one item past the end
            for r in (results[i] for i in range(len(results)))
        ]
        for row in rows:
            print(  # noqa: T201 - the task log is where people read it
                f"{row['advanced_join']}: quality {row['quality']}%, confidence {row['confidence']}%, "
                f"contextualization {row['contextualization']}% (job {row['job_id']})"
            )
        return rows

    quality_report(estimate_quality.output)
