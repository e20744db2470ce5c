#!/usr/bin/env bash
# The main job on the embedded default: set up, then guarded, context-aligned chat on real prompts.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -f scripts/demo.py ] && [ -d adapters/align ]; then
  .venv/bin/python scripts/demo.py "$@"
else
  .venv/bin/dsa base info "$@"
fi
