#!/usr/bin/env bash
# Regenerate results/guard.json, docs/results-guard.md and docs/img/guard-*.png.
# Features (one base pass per text) and baseline predictions are cached under $DSA_CACHE and
# runs/guard_preds/, so a second run only retrains the heads (seconds to minutes).
#   scripts/guard_results.sh            # every guard task
#   scripts/guard_results.sh --tasks prompt_safety toxigen
# The zero-shot baseline (the base asked through a guard prompt, a second base pass per text) is
# run on the short-input tasks only; summedits (512-token documents) and response_harm (256-token
# answers) would each cost more CPU time than every DSA head together.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
if [ "$#" -eq 0 ]; then set -- --all; fi
.venv/bin/python scripts/guard_baselines.py --methods zero_shot prompt_safety toxigen openai_moderation
.venv/bin/dsa guard eval --baselines minilm_finetune,tfidf_lr "$@"
