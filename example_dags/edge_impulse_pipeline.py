"""Run an Edge Impulse organizational pipeline and publish a summary of the run.

1. ``run_pipeline``: start the pipeline (or adopt its run in progress) and wait in the triggerer
   until the run finishes; a failed step or a failed start fails the task with Edge Impulse's
   message.
2. ``publish_summary``: log a readable summary and publish it as an event of the
   ``edge_impulse_pipeline_runs`` asset (its ``extra`` holds the summary), so downstream DAGs can be
   scheduled on fresh data and read the numbers.

Ids come from the run's params, then the Airflow Variables ``edge_impulse_organization_id`` /
``edge_impulse_pipeline_id``, then the sandbox's seeds (organization 1, pipeline 12). The
connection is ``edge_impulse_default``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import DAG, Asset, Param, task

from airflow_provider_pipelines.operators.edge_impulse import EdgeImpulseRunPipelineOperator

DAG_ID = "edge_impulse_pipeline"
#: Seconds between status checks (the sandbox is fast; real pipelines run for minutes to hours).
POLL_SECONDS = 2
RUN_SUMMARIES = Asset(name="edge_impulse_pipeline_runs", uri="edge-impulse://organizations/pipelines/runs")


def setting(param: str, variable: str, default: object) -> str:
    """A template: the run's param when given, else the Airflow Variable, else the sandbox seed."""
    return (
        f"{{{{ params.{param} if params.{param} is not none "
        f"else var.value.get('{variable}', {default!r}) }}}}"
    )


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    """The few numbers people look at: steps, files and items, from the operator's result."""
    steps = run.get("steps") or []
    before = run.get("item_count_before") or {}
    after = run.get("item_count_after") or {}
    return {
        "organization_id": run.get("organization_id"),
        "pipeline_id": run.get("pipeline_id"),
        "run_id": run.get("run_id"),
        "state": run.get("state"),
        "created": run.get("created"),
        "finished": run.get("finished"),
        "steps": len(steps),
        "steps_finished": sum(1 for s in steps if s.get("status") == "finished"),
        "files_succeeded": sum(s.get("files_succeeded") or 0 for s in steps),
        "items_before": before.get("itemCount"),
        "items_after": after.get("itemCount"),
        "new_items": (after.get("itemCount") or 0) - (before.get("itemCount") or 0) if after else None,
        "warnings": list(run.get("warnings") or []),
    }


with DAG(
    dag_id=DAG_ID,
    doc_md=__doc__,
    description="Run an Edge Impulse organizational pipeline and publish its summary.",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["edge_impulse", "example"],
    params={
        "organization_id": Param(None, type=["null", "integer"], minimum=1,
                                 description="Organization id (default: Variable or seed 1)."),
        "pipeline_id": Param(None, type=["null", "integer"], minimum=1,
                             description="Organizational pipeline id (default: Variable or seed 12)."),
        "ignore_last_successful_run": Param(False, type="boolean",
                                            description="Re-process everything, not only new data."),
    },
    default_args={"retries": 0},
) as dag:
    # [START howto_operator_edge_impulse_run_pipeline]
    run_pipeline = EdgeImpulseRunPipelineOperator(
        task_id="run_pipeline",
        organization_id=setting("organization_id", "edge_impulse_organization_id", 1),
        pipeline_id=setting("pipeline_id", "edge_impulse_pipeline_id", 12),
        ignore_last_successful_run="{{ params.ignore_last_successful_run }}",
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=timedelta(hours=6),
    )
    # [END howto_operator_edge_impulse_run_pipeline]

    @task(outlets=[RUN_SUMMARIES], multiple_outputs=False)
    def publish_summary(run: dict[str, Any], *, outlet_events: Any = None) -> dict[str, Any]:
        summary = summarize(run)
        print(  # noqa: T201 - the task log is where people read it
            f"Edge Impulse pipeline {summary['pipeline_id']} run {summary['run_id']} {summary['state']}: "
            f"{summary['steps_finished']}/{summary['steps']} steps finished, "
            f"{summary['files_succeeded']} files transformed, items {summary['items_before']} -> "
            f"{summary['items_after']}."
        )
        if outlet_events is not None:
            outlet_events[RUN_SUMMARIES].extra = summary
        return summary

    publish_summary(run_pipeline.output)
