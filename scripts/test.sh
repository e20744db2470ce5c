#!/usr/bin/env bash
# The test command: set up (see setup.sh), then run every test, unit and integration.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not integration"`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check src tests scripts
.venv/bin/pytest -q "$@"
