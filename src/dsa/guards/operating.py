"""Operating points of the prompt guard on sets it never trains on: flag rates at its stored
threshold, AUC and TPR at a fixed FPR — what decides whether ordinary users get refused.

    sets = operating_sets()                 # {"strongreject": [...prompts], "xstest_safe": [...], ...}
    op = operating_points(scores, sets, threshold)

Eval-only sets: StrongREJECT (harmful), XSTest (safe / unsafe minimal pairs), CoCoNot contrast
(benign but refusable-looking), CoCoNot eval's safety-concern rows (harmful), AlpacaEval (ordinary
instructions).
"""

from __future__ import annotations

import numpy as np

from dsa.data.records import Record
from dsa.data.sources import SAFETY_CONCERNS, load_source
from dsa.metrics import roc_auc

# set name -> (expected label: 1 = should be flagged, 0 = should not)
OPERATING_SETS = {"strongreject": 1, "xstest_unsafe": 1, "xstest_safe": 0, "coconot_contrast_eval": 0,
                  "alpaca_eval": 0, "coconot_eval_safety": 1}


def operating_sets(root=None) -> dict[str, list[Record]]:
    """The records of every operating-point set (see OPERATING_SETS)."""
    xs = load_source("xstest", root)
    return {
        "strongreject": load_source("strongreject", root),
        "xstest_unsafe": [r for r in xs if r.label == 1],
        "xstest_safe": [r for r in xs if r.label == 0],
        "coconot_contrast_eval": load_source("coconot_contrast_eval", root),
        "alpaca_eval": load_source("alpaca_eval", root),
        "coconot_eval_safety": [r for r in load_source("coconot_eval", root)
                                if r.meta.get("category") == SAFETY_CONCERNS],
    }


def tpr_at_fpr(y: np.ndarray, s: np.ndarray, fpr: float) -> float:
    """True-positive rate at the threshold that flags at most `fpr` of the negatives."""
    neg, pos = s[y == 0], s[y == 1]
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    t = np.quantile(neg, 1 - fpr, method="higher")
    return float((pos > t).mean())


def operating_points(scores: dict[str, np.ndarray], threshold: float) -> dict:
    """Flag rate per set at `threshold`; XSTest AUC and TPR at 1 %/5 % FPR (XSTest-safe as the
    negatives, XSTest-unsafe as the positives), plus the same over all eval sets pooled."""
    flag = {k: float((v >= threshold).mean()) for k, v in scores.items()}
    out = {"threshold": float(threshold), "flag_rate": flag, "n": {k: int(len(v)) for k, v in scores.items()}}
    if "xstest_safe" in scores and "xstest_unsafe" in scores:
        y = np.r_[np.zeros(len(scores["xstest_safe"])), np.ones(len(scores["xstest_unsafe"]))]
        s = np.r_[scores["xstest_safe"], scores["xstest_unsafe"]]
        out.update(auc_xstest=roc_auc(y, s), tpr_at_1pct_fpr_xstest=tpr_at_fpr(y, s, 0.01),
                   tpr_at_5pct_fpr_xstest=tpr_at_fpr(y, s, 0.05))
    y = np.concatenate([np.full(len(v), OPERATING_SETS[k]) for k, v in scores.items() if k in OPERATING_SETS])
    s = np.concatenate([v for k, v in scores.items() if k in OPERATING_SETS])
    out.update(auc_pooled=roc_auc(y, s), tpr_at_1pct_fpr=tpr_at_fpr(y, s, 0.01), tpr_at_5pct_fpr=tpr_at_fpr(y, s, 0.05))
    return out


def probe_readout(y_val: np.ndarray, s_val: np.ndarray, eval_scores: dict[str, np.ndarray],
                  val_fpr: float = 0.05) -> tuple[dict, float]:
    """One probe read-out as the precision probes report it: validation AUC and TPR at 1 % FPR,
    and the eval-only operating points at the threshold that gives `val_fpr` on the validation
    negatives (reported, never used to choose). Returns (row, threshold)."""
    thr = float(np.quantile(s_val[y_val == 0], 1 - val_fpr))
    op = operating_points(eval_scores, thr)
    return {"val_auc": roc_auc(y_val, s_val), "val_tpr_at_1pct_fpr": tpr_at_fpr(y_val, s_val, 0.01),
            "eval_only": {k: op[k] for k in ("flag_rate", "auc_xstest", "auc_pooled", "tpr_at_1pct_fpr")}}, thr


def probe_line(name: str, row: dict) -> str:
    """A one-line progress summary of a `probe_readout` row."""
    e, fr = row["eval_only"], row["eval_only"]["flag_rate"]
    return (f"{name:30s} val AUC {row['val_auc']:.4f} TPR@1% {row['val_tpr_at_1pct_fpr']:.3f} | XSTest AUC "
            f"{e['auc_xstest']:.3f} pooled {e['auc_pooled']:.3f} | flagged SR {fr['strongreject']:.3f} "
            f"XS-safe {fr['xstest_safe']:.3f} CoCoNot {fr['coconot_contrast_eval']:.3f}")
