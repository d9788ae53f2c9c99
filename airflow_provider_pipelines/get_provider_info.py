"""Provider metadata for Airflow's ``apache_airflow_provider`` entry point.

The connection UI is declared once here: declaratively (``ui-field-behaviour`` and
``conn-fields``, read by Airflow 3.2+) and through the hooks' ``get_ui_field_behaviour()``
classmethods (Airflow 3.0 and 3.1), both built from :data:`CONNECTION_UI`.
"""

from __future__ import annotations

from typing import Any

PACKAGE_NAME = "airflow-provider-pipelines"

#: Per connection type: hidden fields, relabelled fields, placeholders, extra fields.
#:
#: Rules (tests/unit/test_connection_ui.py and the browser test in tests/ui check them): every
#: visible standard field is relabelled with the vendor's word for it, unused ones are hidden, a
#: secret is the ``password`` field or a ``conn-fields`` entry with ``"format": "password"``, the
#: ``extra`` placeholder shows the JSON that Airflow 3.0/3.1 users type (those releases have no
#: ``conn-fields`` form), and every ``conn-fields`` name is an extra key the hook reads.
CONNECTION_UI: dict[str, dict[str, Any]] = {
    "cognite": {
        "hidden-fields": ["schema", "port"],
        "relabeling": {"host": "CDF cluster URL", "login": "Client ID", "password": "Client secret"},
        "placeholders": {
            "host": "https://westeurope-1.cognitedata.com",
            "login": "OAuth client id (app registration)",
            "password": "OAuth client secret",
            "extra": '{"project": "my-project", "token_url": "https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token"}',
        },
        "conn-fields": {
            "project": {"label": "CDF project", "description": "The CDF project name (required).",
                        "schema": {"type": ["string", "null"]}},
            "token_url": {"label": "Token URL",
                          "description": "OAuth 2.0 token endpoint of your identity provider.",
                          "schema": {"type": ["string", "null"]}},
            "scopes": {"label": "Scopes", "description": "Space-separated; default {host}/.default.",
                       "schema": {"type": ["string", "null"]}},
            "token": {"label": "Static token", "description": "A bearer token instead of client credentials.",
                      "schema": {"type": ["string", "null"], "format": "password"}},
        },
    },
    "edge_impulse": {
        "hidden-fields": ["schema", "port", "login"],
        "relabeling": {"host": "Studio URL", "password": "API key"},
        "placeholders": {"host": "https://studio.edgeimpulse.com",
                         "password": "ei_... (organization API key)",
                         "extra": '{"organization_id": 1}'},
        "conn-fields": {
            "organization_id": {"label": "Organization ID",
                                "description": "Optional: the organization the key belongs to; "
                                               "used by Test connection.",
                                "schema": {"type": ["integer", "null"]}},
        },
    },
    "here_platform": {
        "hidden-fields": ["schema", "port"],
        "relabeling": {"host": "Pipeline API base URL", "login": "Access key ID",
                       "password": "Access key secret"},
        "placeholders": {
            "host": "https://pipelines.api.platform.here.com/pipeline-service",
            "login": "here.access.key.id",
            "password": "here.access.key.secret",
            "extra": '{"scope": "hrn:here:authorization::org:project/my-project"}',
        },
        "conn-fields": {
            "token_endpoint_url": {"label": "Token endpoint URL",
                                   "description": "here.token.endpoint.url (default https://account.api.here.com/oauth2/token).",
                                   "schema": {"type": ["string", "null"]}},
            "scope": {"label": "Project scope (HRN)",
                      "description": "here.token.scope, e.g. hrn:here:authorization::org:project/p.",
                      "schema": {"type": ["string", "null"]}},
            # No form field for the ``credentials_properties`` extra: a secret must be a password
            # input, and browsers strip the newlines of a pasted multi-line text from those (checked
            # in tests/ui), which makes the file unreadable. The form has a field per property.
        },
    },
}

_HOOKS = {
    "cognite": ("airflow_provider_pipelines.hooks.cognite.CogniteHook", "Cognite Data Fusion"),
    "edge_impulse": ("airflow_provider_pipelines.hooks.edge_impulse.EdgeImpulseHook", "Edge Impulse"),
    "here_platform": ("airflow_provider_pipelines.hooks.here.HerePipelineHook", "HERE platform"),
}

_INTEGRATIONS = {
    "Cognite Data Fusion": ("cognite", "https://docs.cognite.com/"),
    "Edge Impulse": ("edge_impulse", "https://docs.edgeimpulse.com/"),
    "HERE platform": ("here", "https://docs.here.com/"),
}

#: Modules per kind and vendor, filled in as the vendor slices land.
_MODULES: dict[str, dict[str, list[str]]] = {
    "operators": {"cognite": ["airflow_provider_pipelines.operators.cognite"],
                  "edge_impulse": ["airflow_provider_pipelines.operators.edge_impulse"],
                  "here": ["airflow_provider_pipelines.operators.here"]},
    "sensors": {"cognite": ["airflow_provider_pipelines.sensors.cognite"],
                "edge_impulse": ["airflow_provider_pipelines.sensors.edge_impulse"],
                "here": ["airflow_provider_pipelines.sensors.here"]},
    "hooks": {"cognite": ["airflow_provider_pipelines.hooks.cognite"],
              "edge_impulse": ["airflow_provider_pipelines.hooks.edge_impulse"],
              "here": ["airflow_provider_pipelines.hooks.here"]},
    "triggers": {"cognite": ["airflow_provider_pipelines.triggers.cognite"],
                 "edge_impulse": ["airflow_provider_pipelines.triggers.edge_impulse"],
                 "here": ["airflow_provider_pipelines.triggers.here"]},
}

#: Airflow notifiers (``BaseNotifier``): callbacks usable as ``on_*_callback`` of tasks and DAGs.
NOTIFICATIONS = [
    "airflow_provider_pipelines.callbacks.cognite.CogniteExtractionPipelineRunCallback",
]

EXTRA_LINKS = [
    "airflow_provider_pipelines.links.CogniteEntityMatchingRunLink",
    "airflow_provider_pipelines.links.EdgeImpulsePipelineLink",
    "airflow_provider_pipelines.links.HerePipelineUILink",
    "airflow_provider_pipelines.links.HereLoggingLink",
]


def connection_ui(conn_type: str) -> dict[str, Any]:
    """The ``get_ui_field_behaviour()`` form of :data:`CONNECTION_UI` (Airflow 3.0 / 3.1)."""
    ui = CONNECTION_UI[conn_type]
    return {
        "hidden_fields": list(ui["hidden-fields"]),
        "relabeling": dict(ui["relabeling"]),
        "placeholders": dict(ui["placeholders"]),
    }


def _by_integration(kind: str) -> list[dict[str, Any]]:
    out = []
    for integration, (key, _) in _INTEGRATIONS.items():
        modules = _MODULES[kind].get(key)
        if modules:
            out.append({"integration-name": integration, "python-modules": list(modules)})
    return out


def get_provider_info() -> dict[str, Any]:
    from airflow_provider_pipelines import __version__

    return {
        "package-name": PACKAGE_NAME,
        "name": "Pipelines (Cognite, Edge Impulse, HERE)",
        "description": "Run and watch Cognite Data Fusion, Edge Impulse and HERE platform pipelines.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": name, "external-doc-url": url, "tags": ["service"]}
            for name, (_, url) in _INTEGRATIONS.items()
        ],
        "hooks": _by_integration("hooks"),
        "operators": _by_integration("operators"),
        "sensors": _by_integration("sensors"),
        "triggers": _by_integration("triggers"),
        "connection-types": [
            {
                "hook-class-name": hook,
                "hook-name": name,
                "connection-type": conn_type,
                "ui-field-behaviour": {k: CONNECTION_UI[conn_type][k]
                                       for k in ("hidden-fields", "relabeling", "placeholders")},
                "conn-fields": CONNECTION_UI[conn_type]["conn-fields"],
            }
            for conn_type, (hook, name) in _HOOKS.items()
        ],
        "extra-links": list(EXTRA_LINKS),
        "notifications": list(NOTIFICATIONS),
    }
