"""Generic binary-classification metrics on scores: ROC-AUC, AUPRC, FPR at a TPR, ECE, curves.

All functions take labels y (0/1; NaN rows are dropped) and scores s (any monotone score for the
ranking metrics; probabilities for ECE).
"""

from __future__ import annotations

import numpy as np


def _clean(y, s) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float).reshape(-1)
    s = np.asarray(s, dtype=float).reshape(-1)
    keep = ~np.isnan(y)
    return y[keep].astype(int), s[keep]


def roc_curve(y, s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), thresholds decreasing, starting at (0, 0); ties form one step."""
    y, s = _clean(y, s)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.where(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    p, n = max(y.sum(), 1), max(len(y) - y.sum(), 1)
    return np.r_[0.0, fps / n], np.r_[0.0, tps / p], np.r_[np.inf, s[distinct]]


def roc_auc(y, s) -> float:
    """Area under the ROC curve (ties count one half); NaN with only one class."""
    y, s = _clean(y, s)
    if len(np.unique(y)) < 2:
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s)
    return float(np.trapezoid(tpr, fpr))


def pr_curve(y, s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds), recall increasing from 0."""
    y, s = _clean(y, s)
    fpr, tpr, thr = roc_curve(y, s)
    p, n = y.sum(), len(y) - y.sum()
    tp, fp = tpr[1:] * p, fpr[1:] * n
    precision = tp / np.maximum(tp + fp, 1)
    return np.r_[1.0, precision], np.r_[0.0, tpr[1:]], thr[1:]


def auprc(y, s) -> float:
    """Average precision: sum over thresholds of (recall step × precision), as sklearn computes it."""
    y, s = _clean(y, s)
    if y.sum() == 0:
        return float("nan")
    precision, recall, _ = pr_curve(y, s)
    return float(np.sum(np.diff(recall) * precision[1:]))


def fpr_at_tpr(y, s, tpr_target: float = 0.95) -> float:
    """The lowest false-positive rate at which the true-positive rate reaches `tpr_target`."""
    y, s = _clean(y, s)
    if len(np.unique(y)) < 2:
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s)
    return float(fpr[np.argmax(tpr >= tpr_target - 1e-12)])


def ece(y, p, n_bins: int = 15) -> float:
    """Expected calibration error of probabilities p with equal-width bins."""
    y, p = _clean(y, p)
    if len(y) == 0:
        return float("nan")
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.sum() / len(y) * abs(y[m].mean() - p[m].mean())
    return float(total)


def binary_report(y, s, p=None) -> dict:
    """{"auc","auprc","fpr_at_95tpr","ece","n_test"} for scores s (and calibrated probabilities p)."""
    y_c, _ = _clean(y, s)
    return {"auc": roc_auc(y, s), "auprc": auprc(y, s), "fpr_at_95tpr": fpr_at_tpr(y, s, 0.95),
            "ece": ece(y, p) if p is not None else float("nan"), "n_test": int(len(y_c))}


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95 % by default); (nan, nan) when n is 0.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at k = 0 or k = n.
    """
    if n <= 0:
        return float("nan"), float("nan")
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    lo = 0.0 if k <= 0 else max(0.0, centre - half)  # exact at the edges (rounding would leave 1 - 1e-16)
    hi = 1.0 if k >= n else min(1.0, centre + half)
    return float(lo), float(hi)
