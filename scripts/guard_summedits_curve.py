"""How far is SummEdits from its 0.70 AUC target, and does more data or another pooling close it?

Linear probes (mean + last token of layers 9, 14, 19, 24, balanced logistic regression, C = 0.01)
on summedits features of the WHOLE training split (3,264 pairs; the guard table trains every
method on a 1,000-pair subset), trained on the first k training documents in a fixed hashed order
(whole documents, as the split keeps them), scored on the fixed test split; plus one probe on the
mean of the last 64 tokens' ladder states (the summary, not the shared document) with all training
documents. One base pass over the 4,651 texts the first time (cached after).

    .venv/bin/python scripts/guard_summedits_curve.py   # -> results/guard-summedits-curve.json + a table
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from dsa.base import load_base
from dsa.guards.featurize import task_features
from dsa.metrics import roc_auc

LAYERS = [9, 14, 19, 24]
C = 0.01


def pooled(f) -> np.ndarray:
    return torch.cat([f.mean[:, LAYERS].flatten(1), f.last[:, LAYERS].flatten(1)], 1).numpy()


def window_mean(f) -> np.ndarray:
    """Mean of the per-token ladder states over each text's last `window` tokens, [n, T * d]."""
    return torch.stack([f.tokens[f.offsets[i]:f.offsets[i + 1]].float().mean(0)
                        for i in range(len(f.ntok))]).flatten(1).numpy()


def probe(x_tr, y_tr, x_va, y_va, x_te, y_te) -> dict:
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-4
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000).fit((x_tr - mu) / sd, y_tr)
    return {"n_train": int(len(y_tr)), "val_auc": roc_auc(y_va, clf.decision_function((x_va - mu) / sd)),
            "test_auc": roc_auc(y_te, clf.decision_function((x_te - mu) / sd))}


def main() -> None:
    torch.set_num_threads(1)
    _, _, sp = task_features(load_base(), "summedits", train_cap=None)
    y = {s: sp[s].labels[:, 0].numpy() for s in sp}
    x = {s: pooled(sp[s].feats) for s in sp}
    groups = np.array(sp["train"].groups)
    docs = sorted(set(groups), key=lambda d: hashlib.sha256(d.encode()).hexdigest())
    rows = {}
    for k in sorted({len(docs) // 8, len(docs) // 4, len(docs) // 2, len(docs)} - {0}):
        keep = np.isin(groups, docs[:k])
        rows[f"{k} documents"] = {"documents": k, **probe(x["train"][keep], y["train"][keep], x["val"], y["val"],
                                                          x["test"], y["test"])}
    w = {s: window_mean(sp[s].feats) for s in sp}
    rows["last-64-token mean, all documents"] = {"documents": len(docs), **probe(w["train"], y["train"], w["val"],
                                                                                  y["val"], w["test"], y["test"])}
    Path("results/guard-summedits-curve.json").write_text(json.dumps(
        {"command": "python scripts/guard_summedits_curve.py", "layers": LAYERS, "C": C, "rows": rows},
        indent=1) + "\n")
    print("| training data | pairs | val AUC | test AUC |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['n_train']} | {r['val_auc']:.3f} | {r['test_auc']:.3f} |")


if __name__ == "__main__":
    main()
