#!/usr/bin/env bash
# The one-command demo: every example DAG through `airflow dags test` against the local sandbox,
# with a summary. Creates ./.venv (pip install -e '.[dev]') on the first run if no environment
# with this checkout exists. Exit code 0 only if every DAG run succeeded. See scripts/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ] && [ -z "${PIPELINES_DEMO_PYTHON:-}" ]; then
    exec .venv/bin/python scripts/demo.py "$@"
fi
exec "${PYTHON:-python3}" scripts/demo.py "$@"
