#!/usr/bin/env bash
# Regenerate results/guard.json, docs/results-guard.md and docs/img/guard-*.png.
# Features (one base pass per text) and baseline predictions are cached under $DSA_CACHE and
# runs/guard_preds/, so a second run only retrains the heads (seconds to minutes).
#   scripts/guard_results.sh            # every guard task
#   scripts/guard_results.sh --tasks prompt_safety toxigen
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
if [ "$#" -eq 0 ]; then set -- --all; fi
.venv/bin/dsa guard eval "$@"
