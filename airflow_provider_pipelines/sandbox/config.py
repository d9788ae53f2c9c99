"""Seed identifiers and the simulation configuration of the sandbox.

The seed ids below are a public contract: the demo, the example DAGs and other tests use them.
The configuration is a nested JSON-compatible dict. :data:`DEFAULT_CONFIG` holds every knob with
its default; a user config (``--config FILE.json``, ``create_app(config=...)``,
``POST /_sandbox/config``) is deep-merged on top and validated against it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

# --------------------------------------------------------------------------------------------
# Seed ids (documented in docs/sandbox.md)
# --------------------------------------------------------------------------------------------
# Cognite
COGNITE_PROJECT = "sandbox"
COGNITE_TENANT = "sandbox-tenant"
COGNITE_CLIENT_ID = "sandbox-client"
COGNITE_CLIENT_SECRET = "sandbox-client-secret"  # noqa: S105 - public sandbox credential
COGNITE_STATIC_TOKEN = "sandbox-static-token"  # noqa: S105 - public sandbox credential
EM_PIPELINE_ASSETS_ID = 1
EM_PIPELINE_ASSETS_XID = "sandbox.em.assets"
EM_PIPELINE_FAILING_ID = 2
EM_PIPELINE_FAILING_XID = "sandbox.em.failing"
JOIN_GOOD = "sandbox.join.good"
JOIN_POOR = "sandbox.join.poor"
JOIN_FAILING = "sandbox.join.failing"
EXTPIPE_EXTRACTOR_ID = 1
EXTPIPE_EXTRACTOR_XID = "sandbox-extractor"
EXTPIPE_CONTEXT_ID = 2
EXTPIPE_CONTEXT_XID = "sandbox-contextualization"
EXTPIPE_DATASET_ID = 9000

# Edge Impulse
EI_API_KEY = "ei_sandbox_0123456789abcdef"
EI_ORGANIZATION_ID = 1
EI_PIPELINE_NIGHTLY = 12
EI_PIPELINE_FAILING = 13
EI_PIPELINE_BROKEN_START = 14
# Secret-looking values the real API returns on project steps: clients must redact them.
EI_PROJECT_API_KEY = "ei_project_secret_key_7d3f0a9b1c2e4f5a6b7c8d9e0f1a2b3c"
EI_PROJECT_HMAC_KEY = "ei_project_secret_hmac_4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d"

# HERE
HERE_ACCESS_KEY_ID = "SANDBOXACCESSKEYID"
HERE_ACCESS_KEY_SECRET = "sandbox-access-key-secret"  # noqa: S105 - public sandbox credential
HERE_CLIENT_ID = "sandbox-here-client-id"  # the app's client id (NOT the access key id: 401310)
HERE_PROJECT_HRN = "hrn:here:authorization::sandbox:project/sandbox-project"
HERE_PIPELINE_OK = "5f2b5b1e-0000-4000-8000-000000000001"
HERE_VERSION_OK = "5f2b5b1e-0000-4000-8000-0000000000a1"
HERE_VERSION_OK_SIBLING = "5f2b5b1e-0000-4000-8000-0000000000a3"
HERE_PIPELINE_FAILING = "5f2b5b1e-0000-4000-8000-000000000002"
HERE_VERSION_FAILING = "5f2b5b1e-0000-4000-8000-0000000000a2"
HERE_TEMPLATE_OK = "5f2b5b1e-0000-4000-8000-0000000000f1"
HERE_TEMPLATE_FAILING = "5f2b5b1e-0000-4000-8000-0000000000f2"

# --------------------------------------------------------------------------------------------
# Default simulation knobs
# --------------------------------------------------------------------------------------------
_EM_MATCHES: list[dict[str, Any]] = [
    {
        "matchType": "model",
        "score": 0.98,
        "source": {"id": 101, "externalId": "ts.21PT1019.PV", "name": "21PT1019.PV"},
        "target": {"id": 201, "externalId": "asset.21PT1019", "name": "21PT1019"},
    },
    {
        "matchType": "model",
        "score": 0.91,
        "source": {"id": 102, "externalId": "ts.21TT1020.PV", "name": "21TT1020.PV"},
        "target": {"id": 202, "externalId": "asset.21TT1020", "name": "21TT1020"},
    },
    {
        "matchType": "model",
        "score": 0.74,
        "source": {"id": 103, "externalId": "ts.23FT0042.PV", "name": "23FT0042.PV"},
        "target": {"id": 203, "externalId": "asset.23FT0042", "name": "23-FT-0042"},
    },
]
_EM_SUGGESTED_RULES: list[dict[str, Any]] = [
    {
        "matches": [
            {"source": {"id": 101, "name": "21PT1019.PV"}, "target": {"id": 201, "name": "21PT1019"}},
            {"source": {"id": 102, "name": "21TT1020.PV"}, "target": {"id": 202, "name": "21TT1020"}},
        ],
        "inputPattern": "[N][L][N].[L]",
        "predictPattern": "[N][L][N]",
        "numMatches": 2,
        "avgScore": 0.945,
        "matchIndex": [0, 1],
    }
]
_EM_GENERATED_RULES: list[dict[str, Any]] = [
    {
        "matches": [
            {
                "sourceKeyField": "name",
                "targetKeyField": "name",
                "source": {"id": 101, "name": "21PT1019.PV"},
                "target": {"id": 201, "name": "21PT1019"},
                "existingMatchType": "model",
                "consistentMatch": True,
            }
        ],
        "numConflicts": 0,
        "numOverlaps": 1,
    }
]

DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 0,
    # clock.mode: "real" | "manual"; clock.start: epoch seconds (default: now)
    "clock": {"mode": "real", "start": None},
    "request_log_size": 10000,
    "cognite": {
        "tenant": COGNITE_TENANT,
        "projects": [COGNITE_PROJECT],
        "client_id": COGNITE_CLIENT_ID,
        "client_secret": COGNITE_CLIENT_SECRET,
        "static_tokens": [COGNITE_STATIC_TOKEN],
        "token_lifetime": 3600,
        "unknown_project_status": 403,
        # Accepted values of the cdf-version header per API group; "" = header absent.
        "cdf_versions": {
            "entity_matching": ["20230101-beta", "beta", "20230101-alpha", "alpha"],
            "advanced_joins": ["20230101-alpha", "alpha"],
            "extpipes": ["", "20230101", "20230101-beta", "beta"],
        },
        "entity_matching": {
            "default": {
                "queued": 1.0,
                "running": 2.0,
                "outcome": "success",
                "error_message": "Entity matching failed: no target entities matched the filter",
                "matches": [],
                "suggested_rules": [],
                "generated_rules": [],
                "errors": [],
            },
            "pipelines": {
                EM_PIPELINE_ASSETS_XID: {
                    "matches": _EM_MATCHES,
                    "suggested_rules": _EM_SUGGESTED_RULES,
                    "generated_rules": _EM_GENERATED_RULES,
                },
                EM_PIPELINE_FAILING_XID: {
                    "outcome": "failure",
                    "error_message": "Pipeline failed: source data set 404 contains no time series",
                },
            },
        },
        "estimate_quality": {
            "default": {
                "queued": 1.0,
                "running": 2.0,
                "outcome": "success",
                "error_message": "Estimate quality failed: RAW table not found",
                "quality": 50.0,
                "confidence": 50.0,
                "contextualization": 50.0,
            },
            # The known advanced joins: other external ids answer 400 with "missing".
            "joins": {
                JOIN_GOOD: {"quality": 92.5, "confidence": 88.0, "contextualization": 75.0},
                JOIN_POOR: {"quality": 41.0, "confidence": 60.0, "contextualization": 30.0},
                JOIN_FAILING: {
                    "outcome": "failure",
                    "error_message": (
                        "Estimate quality failed: RAW table 'sandbox_db.known_matches' not found"
                    ),
                },
            },
        },
        "extpipes": {"max_list_limit": 1000, "max_message_length": 1000},
    },
    "edge_impulse": {
        "api_keys": {EI_API_KEY: EI_ORGANIZATION_ID},
        "organizations": [EI_ORGANIZATION_ID],
        # HTTP status for unknown organization / pipeline (the OpenAPI declares only 200).
        "unknown_status": 200,
        "default": {
            # per step: waiting -> created -> transform started -> upload started -> finished
            "waiting": 0.25,
            "created": 0.25,
            "transform": 0.5,
            "upload": 0.25,
            "outcome": "success",
            "failed_step": 0,
            "files_per_step": 10,
            "items_per_run": 10,
            "items_failed_per_run": 1,
            "import_failed": 0,
            "start_error": None,
            # "accepted": POST run answers success:true, the run never appears (lastRunStartError set)
            # "rejected": POST run answers success:false with the start error
            "start_error_mode": "accepted",
        },
        "pipelines": {
            str(EI_PIPELINE_NIGHTLY): {},
            str(EI_PIPELINE_FAILING): {"outcome": "failure", "failed_step": 1},
            str(EI_PIPELINE_BROKEN_START): {
                "start_error": "Failed to start pipeline: transformation block 57 has been deleted",
            },
        },
    },
    "here": {
        "access_keys": {HERE_ACCESS_KEY_ID: HERE_ACCESS_KEY_SECRET},
        "client_ids": [HERE_CLIENT_ID],
        "project_scopes": [HERE_PROJECT_HRN],
        "token_lifetime": 3600,
        "timestamp_window": 300,
        "default": {
            "operation_accepted": 0.3,
            "operation_processing": 0.7,
            "operation_outcome": "success",
            "operation_message": "Operation failed with error - Main class not found",
            "job_starting": 0.5,
            "job_running": 2.0,
            "job_outcome": "completed",
            "scheduled_job_delay": 2.0,
            # false | true (redirect to {url}/pipeline-service-alt) | "http://other-base/pipeline-service"
            "redirect": False,
        },
        "versions": {
            HERE_VERSION_OK: {},
            HERE_VERSION_OK_SIBLING: {},
            HERE_VERSION_FAILING: {"job_outcome": "failed"},
        },
    },
}

# Sections whose keys are free (resource ids); their values are validated against a template.
_FREE_MAPS: dict[tuple[str, ...], tuple[str, ...] | None] = {
    ("cognite", "entity_matching", "pipelines"): ("cognite", "entity_matching", "default"),
    ("cognite", "estimate_quality", "joins"): ("cognite", "estimate_quality", "default"),
    ("edge_impulse", "pipelines"): ("edge_impulse", "default"),
    ("edge_impulse", "api_keys"): None,
    ("here", "versions"): ("here", "default"),
    ("here", "access_keys"): None,
}

_ENUMS: dict[str, tuple[Any, ...]] = {
    "mode": ("real", "manual"),
    "outcome": ("success", "failure"),
    "job_outcome": ("completed", "failed"),
    "operation_outcome": ("success", "failure"),
    "start_error_mode": ("accepted", "rejected"),
}

# Knobs that are durations in seconds (None/"inf" = never).
DURATION_KEYS = frozenset(
    {
        "queued",
        "running",
        "waiting",
        "created",
        "transform",
        "upload",
        "operation_accepted",
        "operation_processing",
        "job_starting",
        "job_running",
        "scheduled_job_delay",
    }
)


class ConfigError(ValueError):
    """A configuration patch is invalid."""


def default_config() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT_CONFIG)


def _template_for(path: tuple[str, ...]) -> Any:
    node: Any = DEFAULT_CONFIG
    for key in path:
        node = node[key]
    return node


def _check_value(path: tuple[str, ...], key: str, value: Any, template: Any) -> Any:
    where = ".".join((*path, key))
    if key in DURATION_KEYS:
        if value is None or value in ("inf", "never"):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where}: a duration must be a number >= 0, null or 'inf'")
        if isinstance(value, float) and math.isinf(value):
            return None
        return float(value)
    if key in _ENUMS:
        if value not in _ENUMS[key]:
            raise ConfigError(f"{where}: must be one of {list(_ENUMS[key])}")
        return value
    if key == "start":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{where}: must be epoch seconds (a number) or null")
        return value
    if key == "start_error":
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string or null")
        return value
    if template is None:
        return value
    if isinstance(template, bool):
        if key == "redirect":
            if not isinstance(value, bool | str):
                raise ConfigError(f"{where}: must be a boolean or a base URL")
            return value
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be a boolean")
        return value
    if isinstance(template, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: must be a number")
        return value
    if isinstance(template, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string")
        return value
    if isinstance(template, list):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: must be a list")
        return copy.deepcopy(value)
    return value


def _merge_into(target: dict[str, Any], patch: Mapping[str, Any], path: tuple[str, ...]) -> None:
    if path in _FREE_MAPS:
        template_path = _FREE_MAPS[path]
        for key, value in patch.items():
            skey = str(key)
            if template_path is None:
                target[skey] = copy.deepcopy(value)
                continue
            if value is None:  # delete a resource override
                target.pop(skey, None)
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"{'.'.join((*path, skey))}: must be an object")
            template = _template_for(template_path)
            current = target.setdefault(skey, {})
            for knob, knob_value in value.items():
                if knob not in template:
                    raise ConfigError(
                        f"{'.'.join((*path, skey))}: unknown knob {knob!r} (known: {sorted(template)})"
                    )
                current[knob] = _check_value((*path, skey), knob, knob_value, template[knob])
        return
    template = _template_for(path) if path else DEFAULT_CONFIG
    for key, value in patch.items():
        if key not in template:
            where = ".".join(path) or "<root>"
            raise ConfigError(f"{where}: unknown key {key!r} (known: {sorted(template)})")
        sub_template = template[key]
        if isinstance(sub_template, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{'.'.join((*path, key))}: must be an object")
            _merge_into(target.setdefault(key, {}), value, (*path, key))
        else:
            target[key] = _check_value(path, key, value, sub_template)


def merge_config(base: Mapping[str, Any], patch: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return ``base`` deep-merged with ``patch`` (validated); ``base`` is not modified."""
    merged = copy.deepcopy(dict(base))
    if patch:
        if not isinstance(patch, Mapping):
            raise ConfigError("the configuration must be a JSON object")
        _merge_into(merged, patch, ())
    return merged


def resource_knobs(section: Mapping[str, Any], map_key: str, *keys: str | int | None) -> dict[str, Any]:
    """The knobs of one resource: the section's ``default`` overlaid with every matching override.

    Overrides are applied in the order of ``keys`` (e.g. external id, then numeric id), so a
    resource configured by either of its keys gets that configuration, and the later key wins
    where both set the same knob.
    """
    knobs = copy.deepcopy(dict(section["default"]))
    overrides = section.get(map_key, {})
    for key in keys:
        if key is None:
            continue
        override = overrides.get(str(key))
        if override is not None:
            knobs.update(copy.deepcopy(override))
    for name in DURATION_KEYS & knobs.keys():
        value = knobs[name]
        if isinstance(value, str) or (isinstance(value, float) and math.isinf(value)):
            knobs[name] = None
    return knobs
