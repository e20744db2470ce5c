#!/usr/bin/env bash
# Build the shipped guard adapters under adapters/guards/ (one per task; config = configs/guard-<task>.yaml).
# Seeded and trained on the cached features, so it reproduces the heads evaluated by scripts/guard_results.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
for task in "${@:-prompt_safety toxigen summedits response_harm openai_moderation}"; do
  for t in $task; do
    .venv/bin/dsa guard train "configs/guard-$t.yaml"
  done
done
