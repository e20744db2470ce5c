#!/usr/bin/env bash
# The test command: set up (see setup.sh), then run every test, unit and integration, then the
# dsa-in-vLLM tests in their own venv (setup-vllm.sh; DSA_SKIP_VLLM=1 leaves them out).
# Extra arguments go to the main pytest run, e.g. `scripts/test.sh -m "not integration"`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check src tests scripts
.venv/bin/pytest -q "$@"
if [ -z "${DSA_SKIP_VLLM:-}" ]; then
    scripts/setup-vllm.sh
    OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=nobind \
        .venv-vllm/bin/pytest -q -m vllm --confcutdir=tests/vllm tests/vllm
fi
