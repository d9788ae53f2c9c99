"""Run a HERE platform pipeline version once, now, on the catalog versions given as params.

``run_now`` activates the version with explicit input catalog versions: HERE bypasses the
version resolver, runs one job on exactly those versions, and deactivates the version again
after the attempt, whatever its outcome. The task waits (deferred) for the activate operation,
then for the job; a failed operation or job fails the task with HERE's message, and the task's
extra links lead to the job's Spark UI and logs.

Trigger it with the catalog versions to process, e.g.::

    airflow dags trigger here_pipeline_run_now --conf '{"input_catalogs":
        {"weather": {"processingType": "changes", "version": 75, "sinceVersion": 70}}}'

The pipeline and version ids come from the run's params, then the Airflow Variables
``here_pipeline_id`` / ``here_pipeline_version_id``, then the sandbox's seeds. The connection is
``here_default``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, Param

from airflow_provider_pipelines.operators.here import HereSchedulePipelineVersionOperator

DAG_ID = "here_pipeline_run_now"
#: Seconds between status checks (the sandbox is fast; a real batch job runs for minutes or hours).
POLL_SECONDS = 2
SEED_PIPELINE = "5f2b5b1e-0000-4000-8000-000000000001"
SEED_VERSION = "5f2b5b1e-0000-4000-8000-0000000000a1"
UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def setting(param: str, variable: str, default: object) -> str:
    """A template: the run's param when given, else the Airflow Variable, else the sandbox seed."""
    return (
        f"{{{{ params.{param} if params.{param} is not none "
        f"else var.value.get('{variable}', {default!r}) }}}}"
    )


with DAG(
    dag_id=DAG_ID,
    doc_md=__doc__,
    description="One-time run of a HERE pipeline version on given input catalog versions.",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["here", "example"],
    # the catalog params reach the operator as dicts (and a missing output catalog as None)
    render_template_as_native_obj=True,
    params={
        "pipeline_id": Param(None, type=["null", "string"], pattern=UUID_PATTERN,
                             description="Pipeline UUID (default: Variable or the sandbox seed)."),
        "pipeline_version_id": Param(None, type=["null", "string"], pattern=UUID_PATTERN,
                                     description="Pipeline version UUID (default: Variable or seed)."),
        "input_catalogs": Param(
            {"weather": {"processingType": "changes", "version": 75, "sinceVersion": 70}},
            type="object", minProperties=1,
            description="Per input catalog id: processingType (changes | reprocess | no_changes), "
                        "version and optional sinceVersion.",
        ),
        "output_catalog": Param(None, type=["null", "object"],
                                description='Optional {"baseVersion": N} of the output catalog.'),
    },
    default_args={"retries": 0},
) as dag:
    # [START howto_operator_here_schedule_pipeline_version]
    run_now = HereSchedulePipelineVersionOperator(
        task_id="run_now",
        pipeline_id=setting("pipeline_id", "here_pipeline_id", SEED_PIPELINE),
        pipeline_version_id=setting("pipeline_version_id", "here_pipeline_version_id", SEED_VERSION),
        input_catalogs="{{ params.input_catalogs }}",
        output_catalog="{{ params.output_catalog }}",
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=timedelta(hours=6),
    )
    # [END howto_operator_here_schedule_pipeline_version]
