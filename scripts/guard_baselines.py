"""Compute (and cache under runs/guard_preds/) the standalone baselines for the guard tasks.

    .venv/bin/python scripts/guard_baselines.py [TASK ...]
"""

import logging
import sys

from dsa.guards.evaluate import EVAL_TASKS
from dsa.guards.report import baseline_predictions

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    tasks = sys.argv[1:] or ["prompt_safety", "toxigen", "openai_moderation", "response_harm", "summedits"]
    for method in ("tfidf_lr", "minilm_finetune"):
        for task in tasks:
            assert task in EVAL_TASKS
            baseline_predictions(task, method, compute=True)
            logging.info("%s %s done", task, method)
