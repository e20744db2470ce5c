"""Temperature scaling and decision thresholds chosen on validation for a target FPR."""

from __future__ import annotations

import math

import numpy as np
import torch


def fit_temperature(logits, y) -> float:
    """The T > 0 minimising the NLL of sigmoid(logits / T) on labelled rows (NaN rows skipped)."""
    z = torch.as_tensor(np.asarray(logits, dtype=float)).reshape(-1)
    t = torch.as_tensor(np.asarray(y, dtype=float)).reshape(-1)
    keep = ~torch.isnan(t)
    z, t = z[keep], t[keep]
    if len(t) == 0 or t.min() == t.max():
        return 1.0
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z / log_t.exp(), t)
        loss.backward()
        return loss

    opt.step(closure)
    temp = float(log_t.detach().exp())
    return temp if math.isfinite(temp) and temp > 1e-3 else 1.0


def calibrated(logits, temperature: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=float) / temperature))


def threshold_for_fpr(probs, y, target_fpr: float = 0.05) -> float:
    """Smallest threshold whose FPR on the negatives of (probs, y) is at most `target_fpr`
    (flag when prob >= threshold)."""
    p = np.asarray(probs, dtype=float).reshape(-1)
    y = np.asarray(y, dtype=float).reshape(-1)
    neg = np.sort(p[y == 0])[::-1]
    if len(neg) == 0:
        return 0.5
    k = int(math.floor(target_fpr * len(neg)))  # at most k negatives may reach the threshold
    if k >= len(neg):
        return float(neg[-1])
    return float(np.nextafter(neg[k], np.inf))
