"""Emulator of the Edge Impulse Studio API organizational pipelines (``/v1/api/organizations/...``).

* ``GET  /v1/api/organizations/{organizationId}/pipelines``
* ``GET  /v1/api/organizations/{organizationId}/pipelines/{pipelineId}``
* ``POST /v1/api/organizations/{organizationId}/pipelines/{pipelineId}/run?ignoreLastSuccessfulRun=``
* ``POST /v1/api/organizations/{organizationId}/pipelines/{pipelineId}/stop``

There is no endpoint for a single run: progress shows in the pipeline's ``currentRun`` /
``lastRun``. Every body follows the ``{success, error}`` envelope.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from airflow_provider_pipelines.sandbox._http import base_url, iso_ms_z, json_response, parse_bool
from airflow_provider_pipelines.sandbox.clock import Event, seconds_to_ms
from airflow_provider_pipelines.sandbox.config import (
    EI_ORGANIZATION_ID,
    EI_PIPELINE_BROKEN_START,
    EI_PIPELINE_FAILING,
    EI_PIPELINE_NIGHTLY,
    EI_PROJECT_API_KEY,
    EI_PROJECT_HMAC_KEY,
    resource_knobs,
)

if TYPE_CHECKING:
    from airflow_provider_pipelines.sandbox.state import SandboxState

__all__ = ["EdgeImpulseState", "EiError", "ei_error_body"]


def ei_error_body(message: str) -> dict[str, Any]:
    return {"success": False, "error": message}


class EiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> Response:
        return json_response(ei_error_body(self.message), self.status)


def _size_string(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size // 1024} KB"
    return f"{size // (1024 * 1024)} MB"


_IMPORT_STEP: dict[str, Any] = {
    "name": "Import from bucket",
    "filter": "name LIKE '%.wav'",
    "uploadType": "dataset",
    "transformationBlockId": 55,
    "category": "split",
    "outputDatasetName": "sandbox-keywords",
    "parameters": {"bucket": "sandbox-raw"},
}
_PROJECT_STEP: dict[str, Any] = {
    "name": "Import into project",
    "uploadType": "project",
    "projectId": 501,
    "projectApiKey": EI_PROJECT_API_KEY,
    "projectHmacKey": EI_PROJECT_HMAC_KEY,
    "transformationBlockId": 56,
    "category": "split",
}
_SEEDS: list[tuple[int, str, str, list[dict[str, Any]]]] = [
    (
        EI_PIPELINE_NIGHTLY,
        "nightly",
        "Nightly import into the keywords dataset and project",
        [_IMPORT_STEP, _PROJECT_STEP],
    ),
    (
        EI_PIPELINE_FAILING,
        "nightly-failing",
        "Like nightly, but the project import fails",
        [_IMPORT_STEP, _PROJECT_STEP],
    ),
    (
        EI_PIPELINE_BROKEN_START,
        "broken-start",
        "Its runs cannot start (deleted transformation block)",
        [_IMPORT_STEP],
    ),
]


class EdgeImpulseState:
    """State and HTTP handlers of the Edge Impulse emulator."""

    def __init__(self, sandbox: SandboxState) -> None:
        self.sb = sandbox
        self.pipelines: dict[int, dict[str, Any]] = {}
        self.runs: dict[int, dict[str, Any]] = {}
        self.revoked = False
        self._next_run_id = 1001
        self._next_job_id = 5001

    @property
    def cfg(self) -> dict[str, Any]:
        return self.sb.config["edge_impulse"]

    def reset(self, now: int) -> None:
        self.pipelines = {}
        self.runs = {}
        self.revoked = False
        self._next_run_id = 1001
        self._next_job_id = 5001
        for pid, name, description, steps in _SEEDS:
            self.pipelines[pid] = {
                "id": pid,
                "organizationId": EI_ORGANIZATION_ID,
                "name": name,
                "description": description,
                "intervalStr": "1d",
                "steps": copy.deepcopy(steps),
                "created": now,
                "emailRecipientUids": [],
                "whenToEmail": "never",
                "dataset": "sandbox-keywords",
                "items": {"itemCount": 100, "itemCountChecklistOK": 98, "itemCountChecklistFailed": 2},
                "currentRunId": None,
                "lastRunId": None,
                "lastRunStartError": None,
            }

    def expire_tokens(self) -> int:
        """Edge Impulse issues no tokens: revoke the API keys until the next reset."""
        self.revoked = True
        return len(self.cfg["api_keys"])

    # ------------------------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        base = "/v1/api/organizations/{organizationId}/pipelines"
        api = self._api
        return [
            Route(base, api(self.list_pipelines), methods=["GET"]),
            Route(base + "/{pipelineId}", api(self.get_pipeline), methods=["GET"]),
            Route(base + "/{pipelineId}/run", api(self.run_pipeline), methods=["POST"]),
            Route(base + "/{pipelineId}/stop", api(self.stop_pipeline), methods=["POST"]),
        ]

    def _api(
        self, handler: Callable[[Request, int], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                org = self._authorize(request)
                return await handler(request, org)
            except EiError as exc:
                return exc.response()

        endpoint.__name__ = handler.__name__
        return endpoint

    def _authorize(self, request: Request) -> int:
        key = request.headers.get("x-api-key")
        if not key:
            raise EiError(
                401, "No authentication provided: send an organization API key in the x-api-key header"
            )
        with self.sb.lock:
            org = self.cfg["api_keys"].get(key)
            if org is None:
                raise EiError(401, "Invalid API key")
            if self.revoked:
                raise EiError(401, "API key has been revoked or has expired")
            raw_org = request.path_params["organizationId"]
            if (
                not re.fullmatch(r"\d{1,12}", raw_org)
                or int(raw_org) not in self.cfg["organizations"]
                or int(raw_org) != int(org)
            ):
                raise EiError(
                    int(self.cfg["unknown_status"]),
                    f"Organization {raw_org} not found, or the API key has no access to it",
                )
            return int(raw_org)

    def _pipeline(self, request: Request, org: int) -> dict[str, Any]:
        raw = request.path_params["pipelineId"]
        pipeline = self.pipelines.get(int(raw)) if re.fullmatch(r"\d{1,12}", raw) else None
        if pipeline is None or pipeline["organizationId"] != org:
            raise EiError(int(self.cfg["unknown_status"]), f"Pipeline {raw} not found")
        return pipeline

    # ------------------------------------------------------------------------------------------
    # Views
    # ------------------------------------------------------------------------------------------
    def _run_view(self, run: dict[str, Any]) -> dict[str, Any]:
        steps = []
        for step in run["steps"]:
            view = {k: copy.deepcopy(v) for k, v in step.items() if k != "transformationJob"}
            job = step.get("transformationJob")
            if job is not None:
                job_view = {k: copy.deepcopy(v) for k, v in job.items() if not k.startswith("_")}
                job_view["created"] = iso_ms_z(job["_created"])
                view["transformationJob"] = job_view
            steps.append(view)
        return {
            "id": run["id"],
            "steps": steps,
            "created": iso_ms_z(run["created"]),
            "finished": iso_ms_z(run["finished"]),
            "itemCountBefore": copy.deepcopy(run["itemCountBefore"]),
            "itemCountAfter": copy.deepcopy(run["itemCountAfter"]),
            "itemCountImportIntoProjectFailed": run["itemCountImportIntoProjectFailed"],
        }

    def _pipeline_view(self, pipeline: dict[str, Any], now: int, base: str) -> dict[str, Any]:
        next_midnight = datetime.fromtimestamp(now / 1000, tz=timezone.utc).replace(
            hour=0, minute=0, second=0, microsecond=0
        ) + timedelta(days=1)
        current = self.runs.get(pipeline["currentRunId"]) if pipeline["currentRunId"] else None
        last = self.runs.get(pipeline["lastRunId"]) if pipeline["lastRunId"] else None
        items = pipeline["items"]
        org = pipeline["organizationId"]
        return {
            "id": pipeline["id"],
            "name": pipeline["name"],
            "description": pipeline["description"],
            "intervalStr": pipeline["intervalStr"],
            "steps": copy.deepcopy(pipeline["steps"]),
            "nextRun": iso_ms_z(int(next_midnight.timestamp() * 1000)),
            "created": iso_ms_z(pipeline["created"]),
            "currentRun": self._run_view(current) if current else None,
            "lastRun": self._run_view(last) if last else None,
            "feedingIntoDataset": {
                "dataset": pipeline["dataset"],
                "datasetLink": f"{base}/organization/{org}/data?dataset={pipeline['dataset']}",
                "itemCount": items["itemCount"],
                "itemCountChecklistOK": items["itemCountChecklistOK"],
                "itemCountChecklistError": items["itemCountChecklistFailed"],
                "datasetType": "clinical",
            },
            "emailRecipientUids": list(pipeline["emailRecipientUids"]),
            "lastRunStartError": pipeline["lastRunStartError"],
            "whenToEmail": pipeline["whenToEmail"],
        }

    # ------------------------------------------------------------------------------------------
    # Handlers
    # ------------------------------------------------------------------------------------------
    async def list_pipelines(self, request: Request, org: int) -> Response:
        with self.sb.lock:
            now = self.sb.tick()
            base = base_url(request)
            pipelines = [
                self._pipeline_view(p, now, base)
                for _, p in sorted(self.pipelines.items())
                if p["organizationId"] == org
            ]
        return json_response({"success": True, "pipelines": pipelines})

    async def get_pipeline(self, request: Request, org: int) -> Response:
        with self.sb.lock:
            now = self.sb.tick()
            pipeline = self._pipeline(request, org)
            return json_response(
                {"success": True, "pipeline": self._pipeline_view(pipeline, now, base_url(request))}
            )

    async def run_pipeline(self, request: Request, org: int) -> Response:
        try:
            ignore_last = parse_bool(request.query_params.get("ignoreLastSuccessfulRun"))
        except ValueError as exc:
            raise EiError(200, f"Invalid value for ignoreLastSuccessfulRun: {exc}") from exc
        with self.sb.lock:
            now = self.sb.tick()
            pipeline = self._pipeline(request, org)
            if pipeline["currentRunId"] is not None:
                raise EiError(
                    200, f"Pipeline {pipeline['id']} is already running (run {pipeline['currentRunId']})"
                )
            knobs = resource_knobs(self.cfg, "pipelines", pipeline["id"])
            if knobs["start_error"]:
                pipeline["lastRunStartError"] = knobs["start_error"]
                if knobs["start_error_mode"] == "rejected":
                    raise EiError(200, knobs["start_error"])
                run = self._new_run(pipeline, knobs, now, bool(ignore_last))
                return json_response({"success": True, "error": None, "pipelineRun": self._run_view(run)})
            pipeline["lastRunStartError"] = None
            run = self._new_run(pipeline, knobs, now, bool(ignore_last))
            pipeline["currentRunId"] = run["id"]
            self._start_step(run, 0, now)
            return json_response({"success": True, "error": None, "pipelineRun": self._run_view(run)})

    async def stop_pipeline(self, request: Request, org: int) -> Response:
        with self.sb.lock:
            now = self.sb.tick()
            pipeline = self._pipeline(request, org)
            run = self.runs.get(pipeline["currentRunId"]) if pipeline["currentRunId"] else None
            if run is None:
                raise EiError(200, f"Pipeline {pipeline['id']} has no run in progress")
            event: Event | None = run.get("_event")
            if event is not None:
                event.cancel()
            for step in run["steps"]:
                job = step.get("transformationJob")
                if job is None or not job["inProgress"]:
                    continue
                job["status"] = "failed"
                if job["transformJobStatus"] != "finished":
                    job["transformJobStatus"] = "failed"
                else:
                    job["uploadJobStatus"] = "failed"
                job["inProgress"] = False
                self._spent(job, now)
            run["stopped"] = True
            self._finish_run(run, now, failed=True)
            return json_response({"success": True})

    # ------------------------------------------------------------------------------------------
    # Simulation
    # ------------------------------------------------------------------------------------------
    def _new_run(
        self, pipeline: dict[str, Any], knobs: dict[str, Any], now: int, ignore_last: bool
    ) -> dict[str, Any]:
        run_id = self._next_run_id
        self._next_run_id += 1
        run: dict[str, Any] = {
            "id": run_id,
            "pipelineId": pipeline["id"],
            "created": now,
            "finished": None,
            "steps": [copy.deepcopy(step) for step in pipeline["steps"]],
            "itemCountBefore": copy.deepcopy(pipeline["items"]),
            "itemCountAfter": None,
            "itemCountImportIntoProjectFailed": None,
            "ignoreLastSuccessfulRun": ignore_last,
            "_knobs": knobs,
            "_event": None,
        }
        self.runs[run_id] = run
        return run

    def _schedule(
        self, run: dict[str, Any], when: int, duration_s: float | None, fn: Callable[[int], None]
    ) -> None:
        ms = seconds_to_ms(duration_s)
        run["_event"] = self.sb.scheduler.at(None if ms is None else when + ms, fn)

    @staticmethod
    def _spent(job: dict[str, Any], t: int) -> None:
        seconds = max(0, (t - job["_created"]) // 1000)
        job["totalTimeSpentSeconds"] = seconds
        job["totalTimeSpentString"] = f"{seconds}s"
        job["transformationSummary"]["totalTimeSpentSeconds"] = seconds

    def _start_step(self, run: dict[str, Any], index: int, t: int) -> None:
        knobs = run["_knobs"]
        pipeline = self.pipelines[run["pipelineId"]]
        step = run["steps"][index]
        files = int(knobs["files_per_step"])
        size = files * 32 * 1024
        job_id = self._next_job_id
        self._next_job_id += 1
        job: dict[str, Any] = {
            "id": job_id,
            "organizationId": pipeline["organizationId"],
            "name": f"{pipeline['name']} - {step['name']}",
            "uploadType": step.get("uploadType", "dataset"),
            "status": "waiting",
            "transformJobStatus": "waiting",
            "uploadJobId": None,
            "uploadJobStatus": "waiting",
            "transformationBlockId": step.get("transformationBlockId"),
            "transformationBlockName": f"sandbox-block-{step.get('transformationBlockId')}",
            "category": step.get("category", "split"),
            "totalDownloadFileCount": files,
            "totalDownloadFileSize": size,
            "totalDownloadFileSizeString": _size_string(size),
            "totalUploadFileCount": 0,
            "transformationParallel": 4,
            "transformationSummary": {
                "startedCount": 0,
                "succeededCount": 0,
                "finishedCount": 0,
                "totalFileCount": files,
                "totalTimeSpentSeconds": 0,
            },
            "inProgress": True,
            "emailRecipientUids": [],
            "pipelineId": pipeline["id"],
            "pipelineName": pipeline["name"],
            "pipelineRunId": run["id"],
            "pipelineStep": index,
            "operatesOn": "file",
            "totalTimeSpentSeconds": 0,
            "totalTimeSpentString": "0s",
            "_created": t,
        }
        if step.get("uploadType") == "project":
            job["projectId"] = step.get("projectId")
            job["projectName"] = "sandbox-keywords-project"
        else:
            job["outputDatasetName"] = step.get("outputDatasetName")
        step["transformationJob"] = job

        def created(t1: int) -> None:
            job.update(status="created", transformJobStatus="created")
            self._spent(job, t1)
            self._schedule(run, t1, knobs["created"], transform)

        def transform(t2: int) -> None:
            job.update(status="started", transformJobStatus="started")
            job["transformationSummary"]["startedCount"] = min(files, job["transformationParallel"])
            self._spent(job, t2)
            self._schedule(run, t2, knobs["transform"], end_transform)

        def end_transform(t3: int) -> None:
            summary = job["transformationSummary"]
            summary["startedCount"] = files
            summary["finishedCount"] = files
            self._spent(job, t3)
            if knobs["outcome"] == "failure" and int(knobs["failed_step"]) == index:
                summary["succeededCount"] = max(0, files - 3)
                job.update(status="failed", transformJobStatus="failed", inProgress=False)
                self._finish_run(run, t3, failed=True)
                return
            summary["succeededCount"] = files
            job.update(transformJobStatus="finished", uploadJobStatus="started", uploadJobId=job_id + 100000)
            self._schedule(run, t3, knobs["upload"], end_upload)

        def end_upload(t4: int) -> None:
            job.update(
                status="finished",
                uploadJobStatus="finished",
                inProgress=False,
                uploadJobFilesUploaded=files,
                totalUploadFileCount=files,
            )
            self._spent(job, t4)
            if index + 1 < len(run["steps"]):
                self._start_step(run, index + 1, t4)
            else:
                self._finish_run(run, t4, failed=False)

        self._schedule(run, t, knobs["waiting"], created)

    def _finish_run(self, run: dict[str, Any], t: int, failed: bool) -> None:
        pipeline = self.pipelines[run["pipelineId"]]
        knobs = run["_knobs"]
        run["finished"] = t
        run["_event"] = None
        if not failed:
            items = pipeline["items"]
            added = int(knobs["items_per_run"])
            bad = min(added, int(knobs["items_failed_per_run"]))
            items["itemCount"] += added
            items["itemCountChecklistOK"] += added - bad
            items["itemCountChecklistFailed"] += bad
            run["itemCountImportIntoProjectFailed"] = int(knobs["import_failed"])
        else:
            run["itemCountImportIntoProjectFailed"] = 0
        run["itemCountAfter"] = copy.deepcopy(pipeline["items"])
        if pipeline["currentRunId"] == run["id"]:
            pipeline["currentRunId"] = None
        pipeline["lastRunId"] = run["id"]


def render_error(path: str, status: int, message: str) -> dict[str, Any]:
    return ei_error_body(message)
