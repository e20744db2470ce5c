"""Compute (and cache under runs/guard_preds/) the standalone baselines for the guard tasks.

    .venv/bin/python scripts/guard_baselines.py [--methods tfidf_lr,minilm_finetune,zero_shot] [TASK ...]
"""

import argparse
import logging

from dsa.recipes.guard_report import BASELINES, baseline_predictions
from dsa.recipes.guard_train import EVAL_TASKS

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default=",".join(BASELINES), help="comma-separated baselines")
    ap.add_argument("tasks", nargs="*", help=f"guard tasks (default: {' '.join(EVAL_TASKS)})")
    args = ap.parse_args()
    methods, tasks = args.methods.split(","), args.tasks or list(EVAL_TASKS)
    bad = [m for m in methods if m not in BASELINES] + [t for t in tasks if t not in EVAL_TASKS]
    if bad:
        ap.error(f"unknown {', '.join(bad)}: methods are {', '.join(BASELINES)}; tasks {', '.join(EVAL_TASKS)}")
    base = None
    if "zero_shot" in methods:
        from dsa.base import load_base

        base = load_base()
    for method in methods:
        for task in tasks:
            baseline_predictions(task, method, compute=True, base=base)
            logging.info("%s %s done", task, method)
