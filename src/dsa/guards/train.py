"""Train guard heads on cached one-pass features: class-balanced loss, early stopping on val AUC,
seeded; calibration (temperature + threshold at a target FPR on val) stored with the head.

The base is never back-propagated through: heads read cached (detached) states. The functions
take the head type (`dsa.guards.kinds.GuardHead`, e.g. `head_kind("rtb")` or `adapter.kind`), not
its name: the head types call them from their `fit`, so this module stays below their registry.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from dsa.guards.calibrate import calibrated, fit_temperature, threshold_for_fpr
from dsa.guards.featurize import TaskFeatures
from dsa.guards.heads import GuardInput
from dsa.metrics import roc_auc
from dsa.train import TrainSpec, fit

if TYPE_CHECKING:
    from dsa.guards.kinds import GuardHead

log = logging.getLogger(__name__)


def guard_input(feats: TaskFeatures, idx: Sequence[int], kind: GuardHead, cfg: dict) -> GuardInput:
    """A batch of cached features in the form a head of type `kind` reads (`GuardHead.cached_input`)."""
    return kind.cached_input(feats, list(idx), cfg)


def _device(head: nn.Module) -> torch.device:
    return next(head.parameters()).device


def _to(x: GuardInput, device: torch.device) -> GuardInput:
    """The batch on the head's device (a no-op on the CPU)."""
    if x.pooled is not None:
        return GuardInput(pooled={k: v.to(device) for k, v in x.pooled.items()})
    return GuardInput(tokens=x.tokens.to(device), mask=x.mask.to(device))


def mean_auc(y: np.ndarray, s: np.ndarray) -> float:
    aucs = [roc_auc(y[:, j], s[:, j]) for j in range(y.shape[1])]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _pos_weight(y: torch.Tensor) -> torch.Tensor:
    known = ~torch.isnan(y)
    pos = torch.nansum(y, 0)
    return ((known.sum(0) - pos) / pos.clamp_min(1)).clamp(0.05, 50.0)


def balanced_bce(logits: torch.Tensor, y: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """BCE with per-head positive weight neg/pos; NaN labels (not annotated) are masked out."""
    known = ~torch.isnan(y)
    loss = nn.functional.binary_cross_entropy_with_logits(
        logits, torch.nan_to_num(y), pos_weight=pos_weight, reduction="none")
    return (loss * known).sum() / known.sum().clamp_min(1)


def predict(head: nn.Module, feats: TaskFeatures, kind: GuardHead, cfg: dict, batch_size: int = 256) -> np.ndarray:
    head.eval()
    n = feats.ntok.shape[0]
    out = []
    with torch.no_grad():
        for k in range(0, n, batch_size):
            x = _to(guard_input(feats, range(k, min(n, k + batch_size)), kind, cfg), _device(head))
            out.append(head(x).float().cpu())
    return torch.cat(out).numpy()


def fit_torch(kind: GuardHead, train: TaskFeatures, y_tr: torch.Tensor, val: TaskFeatures, y_va: torch.Tensor,
              cfg: dict, d_model: int, *, seed: int = 0, epochs: int = 10, patience: int = 2,
              lr: float = 1e-3, weight_decay: float = 0.01, batch_size: int = 64) -> nn.Module:
    """AdamW on a class-balanced BCE; keep the epoch with the best mean val AUC."""
    torch.manual_seed(seed)
    head = kind.build(d_model, y_tr.shape[1], cfg)
    kind.fit_norm(head, train, cfg)
    pw = _pos_weight(y_tr)
    state = {"best": None, "auc": -1.0, "bad": 0, "t0": time.perf_counter()}

    def loss_fn(rows: list[int]) -> tuple[torch.Tensor, dict]:
        dev = _device(head)
        x = _to(guard_input(train, rows, kind, cfg), dev)
        return balanced_bce(head(x), y_tr[rows].to(dev), pw.to(dev)), {}

    def end_of_epoch(ep: int) -> bool:
        auc = mean_auc(y_va.numpy(), predict(head, val, kind, cfg))
        head.train()
        log.info("%s epoch %d: val auc %.4f (%.0fs)", kind.arch, ep + 1, auc, time.perf_counter() - state["t0"])
        state["t0"] = time.perf_counter()
        if auc > state["auc"] + 1e-4:
            state.update(best=copy.deepcopy(head.state_dict()), auc=auc, bad=0)
            return False
        state["bad"] += 1
        return state["bad"] > patience

    head.train()
    spec = TrainSpec(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                     mixed_precision="no", desc=f"guard {kind.arch}")
    g = torch.Generator().manual_seed(seed)
    fit(loss_fn, range(y_tr.shape[0]), list(head.parameters()), spec, modules=[head],
        order=lambda _ep: torch.randperm(y_tr.shape[0], generator=g).tolist(), on_epoch=end_of_epoch)
    best = state["best"]
    head.load_state_dict(best)
    head.cpu().eval()
    return head


def calibrate(val_logits: np.ndarray, y_va: np.ndarray, target_fpr: float) -> tuple[list[float], list[float]]:
    """Per head: temperature fitted on val, then the threshold on calibrated val probabilities."""
    temps, thresholds = [], []
    for j in range(y_va.shape[1]):
        t = fit_temperature(val_logits[:, j], y_va[:, j])
        k = ~np.isnan(y_va[:, j])
        temps.append(t)
        thresholds.append(threshold_for_fpr(calibrated(val_logits[k, j], t), y_va[k, j], target_fpr))
    return temps, thresholds
