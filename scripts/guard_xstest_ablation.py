"""What moves XSTest AUC? Linear probes on the cached prompt_safety features with the training
data varied (same val/test/XSTest, same features: mean + last token of layers 9, 14, 19, 24).

    DSA_CACHE=.cache .venv/bin/python scripts/guard_xstest_ablation.py   # -> results/guard-xstest-ablation.json

Variants: the prompt_safety training subset as shipped; without its Alpaca hard negatives; without
HarmfulQA positives (academic-sounding questions on sensitive topics, much like XSTest's safe
prompts); plus 800 Alpaca training *questions* (What/Why/How/... : the same form as XSTest's
prompts) as extra negatives; and both changes. Prints a markdown table.
"""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from dsa.base import load_base
from dsa.data import benign_prompts, guard_task
from dsa.eval.metrics import roc_auc
from dsa.guards.featurize import extract_task_features, task_features, train_subset

LAYERS = [9, 14, 19, 24]
QUESTION = re.compile(r"^(what|why|how|who|where|when|which|can|could|is|are|do|does|should|would)\b", re.I)


def matrix(f) -> np.ndarray:
    return torch.cat([f.mean[:, LAYERS].flatten(1), f.last[:, LAYERS].flatten(1)], 1).numpy()


def main() -> None:
    torch.set_num_threads(1)
    base = load_base()
    _, _, sp = task_features(base, "prompt_safety", progress=False)
    xs = task_features(base, "xstest", progress=False)[2]["test"]
    recs = train_subset("prompt_safety", guard_task("prompt_safety").train)
    harmfulqa = np.array([r.meta.get("subset") == "harmfulqa" for r in recs])
    hard = np.array([bool(r.meta.get("hard_negative")) for r in recs])
    questions = [p for p in benign_prompts("train") if QUESTION.match(p) and len(p) < 200]
    questions = sorted(questions, key=lambda p: hashlib.sha256(p.encode()).hexdigest())[:800]
    xq = matrix(extract_task_features(base, [base.chat_text(p) for p in questions], "ablation_alpaca_questions"))
    xtr, xva, xte, xxs = (matrix(s.feats) for s in (sp["train"], sp["val"], sp["test"], xs))
    ytr, yva, yte, yxs = (s.labels[:, 0].numpy() for s in (sp["train"], sp["val"], sp["test"], xs))
    everything = np.ones(len(ytr), bool)
    variants = {"as shipped": (everything, False), "without hard negatives": (~hard, False),
                "without HarmfulQA": (~harmfulqa, False), "+ 800 Alpaca questions": (everything, True),
                "without HarmfulQA + 800 Alpaca questions": (~harmfulqa, True)}
    rows = {}
    for name, (keep, add_q) in variants.items():
        x, y = xtr[keep], ytr[keep]
        if add_q:
            x, y = np.concatenate([x, xq]), np.concatenate([y, np.zeros(len(xq))])
        mu, sd = x.mean(0), x.std(0) + 1e-4
        best = None
        for c in (0.003, 0.01, 0.03):  # chosen on val AUC, as for the shipped heads
            clf = LogisticRegression(C=c, class_weight="balanced", max_iter=1000).fit((x - mu) / sd, y)
            val = roc_auc(yva, clf.decision_function((xva - mu) / sd))
            if best is None or val > best[0]:
                best = (val, c, clf)
        val, c, clf = best
        s_xs = clf.decision_function((xxs - mu) / sd)
        rows[name] = {"n_train": int(len(y)), "C": c, "val_auc": val,
                      "test_auc": roc_auc(yte, clf.decision_function((xte - mu) / sd)),
                      "xstest_auc": roc_auc(yxs, s_xs),
                      "xstest_safe_flagged_at_0": float((s_xs[yxs == 0] > 0).mean()),
                      "xstest_unsafe_flagged_at_0": float((s_xs[yxs == 1] > 0).mean())}
    out = Path("results/guard-xstest-ablation.json")
    out.write_text(json.dumps({"command": "python scripts/guard_xstest_ablation.py", "layers": LAYERS,
                               "variants": rows}, indent=1) + "\n")
    print("| training data | n train | test AUC | XSTest AUC | XSTest safe flagged | XSTest unsafe flagged |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['n_train']} | {r['test_auc']:.3f} | {r['xstest_auc']:.3f} | "
              f"{r['xstest_safe_flagged_at_0']:.3f} | {r['xstest_unsafe_flagged_at_0']:.3f} |")


if __name__ == "__main__":
    main()
