#!/usr/bin/env bash
# Reproduce results/subspace.json, docs/results-subspace.md and docs/img/subspace-*.png:
#
#     bash scripts/subspace_all.sh
#
# Trains the analysis-local updates that are missing (seeded; ~5-20 min each on a CPU), then runs
# `dsa analyze subspace`. Point SAFETY_LORA / FULL_FT / TASK_LORA at other update dirs (PEFT LoRA or
# full fine-tuned model dirs) to analyse those instead, e.g. the alignment module's exports.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DSA=${DSA:-.venv/bin/dsa}
OUT=${OUT:-runs/analysis}
SAFETY_LORA=${SAFETY_LORA:-$OUT/refusal-lora-r16}
FULL_FT=${FULL_FT:-$OUT/refusal-full-ft}
TASK_LORA=${TASK_LORA:-$OUT/task-lora-r16}

train() {  # task mode dir
  if [ ! -e "$3/dsa_training.json" ] && [ ! -e "$3/adapter_config.json" ] && [ ! -e "$3/config.json" ]; then
    "$PY" scripts/subspace_train.py --task "$1" --mode "$2" --out "$3"
  fi
}
train refusal lora "$SAFETY_LORA"
train refusal full "$FULL_FT"
train mmlu_dev lora "$TASK_LORA"

"$DSA" analyze subspace --base smollm2-135m-instruct \
  --adapter "refusal-lora=$SAFETY_LORA" \
  --compare "refusal-full-ft=$FULL_FT" \
  --compare "task-lora=$TASK_LORA" \
  --ks 1,2,4,8,16,32,64,128,256 --k-ref 64 --n-prompts 64 \
  --out results/subspace.json --doc docs/results-subspace.md --img-dir docs/img --doc-command "bash scripts/subspace_all.sh"
