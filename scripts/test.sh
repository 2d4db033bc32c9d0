#!/usr/bin/env bash
# Set up and run the whole test suite, offline (models load from site-packages).
# Extra arguments go to pytest, e.g.  scripts/test.sh -m 'not e2e'
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck disable=SC1091
. "${VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_HOME="${PREFECT_HOME:-$(mktemp -d -t corpus-search-prefect-XXXX)}"
python -m pytest -q "$@"
