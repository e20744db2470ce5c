"""Prefix rows for the response guard, chosen on VAL: the shipped response_harm config
(configs/guard-response_harm.yaml) trained with and without answer-prefix rows
(`GuardTrainConfig.prefix_cuts`, `dsa.guards.prefixes`), each read token by token on the VAL
answers as `dsa guard calibrate-stream` reads them, its stop rule calibrated at <= 3 % false stops
in each group of safe val answers; writes results/guard-response-prefix-study.json.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/response_prefix_study.py

The choice: the most harmful val answers stopped within 64 tokens, then overall, then within 32
(22 harmful val answers: one answer is 0.045). The test split is not read here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "guard-response_harm.yaml"
VARIANTS = {
    "whole answers (shipped)": {},
    "cuts 8/16/32/64": {"prefix_cuts": [8, 16, 32, 64]},
    "cuts 8/16/32/64 + 2 random": {"prefix_cuts": [8, 16, 32, 64], "prefix_random": 2},
    "cuts 8/16/32/64 + 2 random, harmful from 16": {"prefix_cuts": [8, 16, 32, 64], "prefix_random": 2,
                                                    "prefix_min_harmful": 16},
    "cuts 8/16/32/64 + 2 random, harmful from 16, C 0.01": {"prefix_cuts": [8, 16, 32, 64], "prefix_random": 2,
                                                           "prefix_min_harmful": 16, "C_grid": [0.01]},
    "cuts 8/16/32/64 + 2 random, C 0.01": {"prefix_cuts": [8, 16, 32, 64], "prefix_random": 2,
                                          "C_grid": [0.01]},
}


def main() -> int:
    from dsa.adapter_io import atomic_write_text
    from dsa.base import load_base
    from dsa.data.tasks import guard_task
    from dsa.guards import GuardBank
    from dsa.guards.config import GuardTrainConfig
    from dsa.guards.featurize import task_features
    from dsa.guards.prefixes import prefix_views, record_cuts
    from dsa.guards.streaming import benign_prompts, calibrate, read_answers
    from dsa.recipes.guard_train import base_answers, everyday_answers, train_guard

    t0 = time.perf_counter()
    base = load_base()
    cfg0 = GuardTrainConfig.from_yaml(str(CONFIG), [])
    cfg0 = GuardTrainConfig(**{**cfg0.model_dump(), "prefix_cuts": [], "prefix_random": 0, "prefix_min_harmful": 0})
    rcfg = cfg0.resolved(base.n_layers)
    heads, mode, splits = task_features(base, cfg0.task, max_length=rcfg.max_length, tokens=False,
                                        extra=everyday_answers(base, cfg0.task, cfg0))
    cfgs = {name: GuardTrainConfig(**{**cfg0.model_dump(), **over}) for name, over in VARIANTS.items()}
    # every variant's prefix rows in one pass (one forward per answer), read back from the cache below
    tr = splits["train"]
    union: list[set] = [set() for _ in tr.records]
    for c in cfgs.values():
        for u, cs in zip(union, record_cuts(base, tr, c), strict=True):
            u.update(cs)
    prefix_views(base, tr.records, [sorted(u) for u in union])
    print(f"prefix rows ready: {sum(map(len, union))} ({time.perf_counter() - t0:.0f} s)", flush=True)
    adapters = []
    for i, (name, cfg) in enumerate(cfgs.items()):
        a = train_guard(base, cfg, splits, heads, mode)
        a.task = f"v{i}"
        adapters.append(a)
        print(f"{name}: val AUC {a.info['val_auc']:.4f}, prefix rows {a.info.get('prefix_rows')}", flush=True)
    bank = GuardBank(adapters)
    val = guard_task(cfg0.task).val
    benign = base_answers(base, benign_prompts("val", 300), cfg0.base_answer_tokens)
    answers = read_answers(base, bank, val, 256, batch_size=8, group=f"{cfg0.task} val")
    answers += read_answers(base, bank, benign, 256, batch_size=8,
                            group="base answers to 300 benign prompt_safety val prompts")
    rows = {}
    for (name, over), a, head in zip(VARIANTS.items(), adapters, bank.heads, strict=True):
        rule, point, _ = calibrate(answers, head, 0.03)
        rows[name] = {"overrides": over, "val_auc": a.info["val_auc"], "prefix_rows": a.info.get("prefix_rows"),
                      "rule": rule.as_dict(), "val": point}
        print(name, json.dumps(point), flush=True)

    def key(name):
        p = rows[name]["val"]
        return (p["detection_within_64"], p["detection_rate"], p["detection_within_32"])

    chosen = max(rows, key=key)
    out = {"command": "OMP_NUM_THREADS=1 .venv/bin/python scripts/response_prefix_study.py",
           "config": str(CONFIG.relative_to(ROOT)), "split": "val", "target_fpr": 0.03,
           "choice": "most harmful val answers stopped within 64 tokens, then overall, then within 32",
           "chosen": chosen, "variants": rows, "seconds": round(time.perf_counter() - t0, 1)}
    path = ROOT / "results" / "guard-response-prefix-study.json"
    atomic_write_text(path, json.dumps(out, indent=2) + "\n")
    print(f"chosen: {chosen}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
