"""Reading a fitted window head on val: flag rates per kind of training copy (`kind_group`), AUC
on plain and padded texts, and leave-one-source-out (`loso_window`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from dsa.guards.heads import WindowHead
from dsa.guards.window_fit import fit_window, predict_window
from dsa.guards.window_prompts import WindowData, kind_group
from dsa.metrics import roc_auc

log = logging.getLogger(__name__)


def val_filler_prompts(tokenizer, task: str = "prompt_safety", n: int = 60,
                       lengths: Sequence[int] = (300, 1000)) -> list[tuple[str, str, str]]:
    """(class, condition, prompt) triples of the val filler check (scripts/guard_val_filler.py,
    scripts/window_candidates.py): the first `n` benign and harmful prompts of the task's val split (a
    fixed stride), plain and with `lengths` tokens of `FILLER_VAL` before and after, by class, then
    condition, then prompt."""
    from dsa.data import guard_task
    from dsa.data.wrappers import FILLER_VAL, pad

    val = guard_task(task).split("val")
    conds = ["plain"] + [f"pad_{side}_{k}" for side in ("before", "after") for k in lengths]
    out = []
    for label, name in ((0, "benign"), (1, "harmful")):
        prompts = [r.prompt for r in val if r.label == label and r.prompt]
        prompts = prompts[:: max(1, len(prompts) // n)][:n]
        for c in conds:
            for i, x in enumerate(prompts):
                if c != "plain":
                    _, side, k = c.split("_")
                    x = pad(x, int(k), side, tokenizer=tokenizer, pool=FILLER_VAL, seed=i)
                out.append((name, c, x))
    return out


def flag_rates_by_kind(kinds: Sequence[str], y: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """{group: {"benign": flag rate, "harmful": flag rate, "n_benign", "n_harmful"}} at `threshold`
    (`kind_group`): whether a kind of padding moves the operating point, read on val."""
    out = {}
    groups = np.array([kind_group(k) for k in kinds])
    for g in dict.fromkeys(groups.tolist()):
        row = {}
        for name, label in (("benign", 0), ("harmful", 1)):
            m = (groups == g) & (y == label)
            row[name] = float((probs[m] >= threshold).mean()) if m.any() else None
            row[f"n_{name}"] = int(m.sum())
        out[g] = row
    return out


def val_report(head: WindowHead, data: WindowData, idx: Sequence[int] | None = None) -> dict:
    """Val AUC on the plain texts and on the padded copies, each against the whole other class."""
    va = data.states["val"]
    idx = list(range(len(va))) if idx is None else list(idx)
    logits = predict_window(head, va, idx)[:, 0]
    y = data.y["val"][idx]
    kinds = [data.kinds["val"][i] for i in idx]
    out = {"auc": roc_auc(y, logits)}
    for name, keep in (("auc_plain", lambda k: k == "plain"), ("auc_padded", lambda k: k.startswith("pad_"))):
        m = np.array([keep(k) for k in kinds])
        if m.any() and len(np.unique(y[m])) == 2:
            out[name] = roc_auc(y[m], logits[m])
    return out


def loso_window(data: WindowData, layers: Sequence[int], window: int, weight_decay: float, d_model: int,
                target_fpr: float = 0.05, epochs: int = 5, **fit_kw) -> dict:
    """Leave-one-source-out as the PLR study does it: train without one source (its framed and
    padded copies too), threshold at `target_fpr` on val without it, and test on every plain row of
    it (all splits) against the other class's test rows of the other sources."""
    from dsa.guards.calibrate import threshold_for_fpr
    from dsa.guards.operating import tpr_at_fpr

    res = {}
    y_te = data.y["test"]
    for src in sorted(set(data.sources["train"])):
        t0 = time.perf_counter()
        tr_idx = [i for i, x in enumerate(data.sources["train"]) if x != src]
        va_idx = [i for i, x in enumerate(data.sources["val"]) if x != src]
        head, _ = fit_window(data, layers, window, d_model, weight_decay=weight_decay, epochs=epochs,
                             train_idx=tr_idx, val_idx=va_idx, **fit_kw)
        thr = threshold_for_fpr(predict_window(head, data.states["val"], va_idx)[:, 0], data.y["val"][va_idx],
                                target_fpr)
        held, ys = [], []
        for s in ("train", "val", "test"):
            ix = [i for i, (x, k) in enumerate(zip(data.sources[s], data.kinds[s], strict=True))
                  if x == src and k == "plain"]
            if ix:
                held.append(predict_window(head, data.states[s], ix)[:, 0])
                ys.append(data.y[s][ix])
        s_held, y_held = np.concatenate(held), np.concatenate(ys)
        label = int(round(float(y_held.mean())))
        other = [i for i, x in enumerate(data.sources["test"]) if x != src and y_te[i] != label]
        s_other = predict_window(head, data.states["test"], other)[:, 0]
        y = np.r_[y_held, y_te[other]]
        sc = np.r_[s_held, s_other]
        res[src] = {"label": label, "n": int(len(s_held)), "auc": roc_auc(y, sc),
                    "tpr_at_1pct_fpr": tpr_at_fpr(y, sc, 0.01),
                    "flag_rate": float((s_held >= thr).mean()), "seconds": round(time.perf_counter() - t0, 1)}
        log.info("loso %s: auc %.3f flag %.3f", src, res[src]["auc"], res[src]["flag_rate"])
    return res
