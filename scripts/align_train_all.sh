#!/usr/bin/env bash
# Build every alignment artefact for the embedded SmolLM2-135M, then evaluate them.
#   adapters/align/lora_patch   (+ peft/ export)    dsa align train configs/align-lora.yaml
#   adapters/align/dsa_adapter                      dsa align train configs/align-dsa.yaml
#   runs/full_ft  (safetensors, load_base(path))    dsa align train configs/align-full-ft.yaml
#   runs/dsa_adapter_dpo  (not shipped: evaluated)  dsa align train configs/align-dsa-dpo.yaml
# Usage: scripts/align_train_all.sh [--eval]   (DSA_CACHE defaults to ./.cache)
set -euo pipefail
cd "$(dirname "$0")/.."
export DSA_CACHE="${DSA_CACHE:-$PWD/.cache}"
DSA=".venv/bin/dsa"
$DSA align train configs/align-lora.yaml
$DSA align train configs/align-dsa.yaml
$DSA align train configs/align-full-ft.yaml
$DSA align train configs/align-dsa-dpo.yaml
if [[ "${1:-}" == "--eval" ]]; then
  $DSA align eval configs/align-eval.yaml
fi
