#!/usr/bin/env bash
# Reproduce results/subspace.json, docs/results-subspace.md and docs/img/subspace-*.png:
#
#     bash scripts/subspace_all.sh
#
# Trains the analysis-local updates that are missing (seeded, CPU), then runs `dsa analyze subspace`.
# The two comparison LoRAs share one budget: 64 examples + 16 held out, 2 epochs, batch 4 (32 steps),
# fp32; the full fine-tunes use 48 and 300 examples (their rows in results/subspace.json were kept
# from an earlier run: give FULL_FT=results/subspace.json to reuse a stored row). Pass other dirs (PEFT LoRA or full fine-tuned model dirs, e.g. the alignment module's
# exports) through SAFETY_LORA / TASK_LORA / FULL_FT / FULL_FT_SMALL to analyse those instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DSA=${DSA:-.venv/bin/dsa}
OUT=${OUT:-runs/analysis}
SAFETY_LORA=${SAFETY_LORA:-$OUT/refusal-lora-r16-n64-e2}
TASK_LORA=${TASK_LORA:-$OUT/task-lora-r16-n64-e2}
FULL_FT=${FULL_FT:-$OUT/refusal-full-ft-n300}
FULL_FT_SMALL=${FULL_FT_SMALL:-$OUT/refusal-full-ft-n48}

train() {  # task mode n dir [extra options]
  if [[ "$4" != *.json ]] && [ ! -e "$4/adapter_config.json" ] && [ ! -e "$4/config.json" ]; then
    "$PY" scripts/subspace_train.py --task "$1" --mode "$2" --n "$3" --out "$4" "${@:5}"
  fi
}
LORA_BUDGET=(--held-out 16 --epochs 2 --batch-size 4 --no-autocast)
train refusal lora 64 "$SAFETY_LORA" "${LORA_BUDGET[@]}"
train mmlu_dev lora 64 "$TASK_LORA" "${LORA_BUDGET[@]}"
train refusal full 300 "$FULL_FT"
train refusal full 48 "$FULL_FT_SMALL"

# The alignment module's exports (issue #4), when present: its LoRA refusal patch (PEFT) and full FT.
EXTRA=()
[ -e adapters/align/lora_patch/peft/adapter_config.json ] && EXTRA+=(--compare "align-lora-patch=adapters/align/lora_patch/peft")
[ -e runs/full_ft/config.json ] && EXTRA+=(--compare "align-full-ft=runs/full_ft")

"$DSA" analyze subspace --base smollm2-135m-instruct \
  --adapter "refusal-lora=$SAFETY_LORA" \
  --compare "refusal-full-ft=$FULL_FT" \
  --compare "refusal-full-ft-n48=$FULL_FT_SMALL" \
  --compare "task-lora=$TASK_LORA" "${EXTRA[@]}" \
  --role safety_lora=refusal-lora --role full_ft=refusal-full-ft --role task_lora=task-lora \
  --ks 1,2,4,8,16,32,64,128,256 --k-ref 64 --n-prompts 64 \
  --out results/subspace.json --doc docs/results-subspace.md --img-dir docs/img \
  --doc-command "bash scripts/subspace_all.sh"
