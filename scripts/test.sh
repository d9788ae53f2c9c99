#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy), tests (pytest: unit, sandbox, integration,
# end-to-end on real Airflow components) and the documentation build (Sphinx, warnings as errors).
# Creates ./.venv with the package and its dev extra if it does not exist yet.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
if ! "$VENV/bin/python" -c "import airflow_provider_pipelines, pytest, ruff, sphinx, xdist, myst_parser" 2>/dev/null; then
  echo "== installing the package with its dev and docs extras"
  "$VENV/bin/pip" install -q -e '.[dev,docs]'
fi
echo "== ruff"
"$VENV/bin/ruff" check airflow_provider_pipelines tests example_dags benchmarks scripts
echo "== mypy"
"$VENV/bin/mypy" airflow_provider_pipelines
echo "== sphinx (warnings are errors)"
"$VENV/bin/sphinx-build" -q -W --keep-going -b html docs docs/_build/html
if [ "$#" -gt 0 ]; then
  exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
fi
echo "== pytest: unit, sandbox, integration, reliability (2 workers)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -n 2 -m "not e2e and not ui"
echo "== pytest: end to end on real Airflow components, and the connection forms in a browser"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "e2e or ui"
