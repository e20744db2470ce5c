"""Train a window guard head (`arch: window`, see `dsa.guards.heads.WindowHead`) on per-token states.

    data = window_data(base, cfg)             # texts (train wrapped + padded), labels, per-token states
    prompts = window_prompts(tok, task)       # the same prompts raw (no states): for standalone baselines
    head, info = fit_window(data, cfg)        # mean-pooled warm start, then the max-of-rolling-means loss
    adapter = train_window(base, cfg)         # both, calibrated on val: what `dsa guard train` saves

Training reads the same aggregate inference uses: the loss is taken on `rolling_max` of the per-token
logits of each text (multiple-instance learning: a harmful text needs one harmful window, a benign
text none). The training split is the task's train split (30 % already wrapped by the train
wrapper families) plus, for a seeded share of both classes alike, a copy padded with train filler
before, after or around it (`dsa.data.wrappers.augment`), so length and padding are never label
cues. Val is augmented the same way (train families only) for model choice and calibration;
held-out families and the held-out filler are left to the robustness evaluation.

The parts: `dsa.guards.token_states` (the cached per-token states), `window_prompts` (the prompts and
their padded copies), `window_fit` (the fit and read-out) and `window_eval` (val reports, LOSO); their
names stay importable from here.
"""

from __future__ import annotations

import time

from dsa.base import Base
from dsa.features.text import template_tail_tokens
from dsa.guards.bank import GuardAdapter
from dsa.guards.token_states import CHUNK, TokenStates, token_states
from dsa.guards.window_eval import flag_rates_by_kind, loso_window, val_report
from dsa.guards.window_fit import fit_window, predict_window
from dsa.guards.window_prompts import WindowData, WindowPrompts, kind_group, window_data, window_prompts
from dsa.metrics import roc_auc

__all__ = ["CHUNK", "TokenStates", "WindowData", "WindowPrompts", "fit_window", "flag_rates_by_kind", "kind_group",
           "loso_window", "predict_window", "token_states", "train_window", "val_report", "window_data",
           "window_prompts"]


def train_window(base: Base, cfg) -> GuardAdapter:
    """`dsa guard train` for `arch: window`: every (window, weight decay) candidate of `cfg` fitted on
    the augmented train split, the best val AUC kept, calibrated on val (temperature + threshold at
    `cfg.target_fpr`), test AUC on the plain test split recorded."""
    from dsa.guards.calibrate import calibrated
    from dsa.guards.train import calibrate

    cfg = cfg.resolved(base.n_layers)
    layers = list(cfg.layer_sets[0])
    tail = template_tail_tokens(base) if cfg.tail_drop_share else 0
    t0 = time.perf_counter()
    data = window_data(base, cfg.task, layers, **cfg.augmentation(), splits=("train", "val", "test"))
    feature_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    sweep, best = [], None
    for w in cfg.windows:
        for wd in cfg.weight_decays:
            head, info = fit_window(data, layers, w, base.d_model, weight_decay=wd, epochs=cfg.epochs,
                                    lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed, patience=cfg.patience,
                                    tail_drop_share=cfg.tail_drop_share, tail_tokens=tail,
                                    long_copy_weight=cfg.long_copy_weight)
            sweep.append({"window": w, "weight_decay": wd, **info})
            if best is None or info["val_auc"] > best[0]:
                best = (info["val_auc"], head, w, wd)
    _, head, w, wd = best
    y_va = data.y["val"][:, None].astype(float)
    val_logits = predict_window(head, data.states["val"])
    temps, thresholds = calibrate(val_logits, y_va, cfg.target_fpr)
    val_flags = flag_rates_by_kind(data.kinds["val"], data.y["val"], calibrated(val_logits[:, 0], temps[0]),
                                   thresholds[0])
    test_auc = roc_auc(data.y["test"], predict_window(head, data.states["test"])[:, 0])
    context = int(getattr(base.model.config, "max_position_embeddings", 0) or 8192)
    info = {"val_auc": float(best[0]), "test_auc": float(test_auc), "window": w, "weight_decay": wd,
            "params": sum(p.numel() for p in head.parameters()), "train_seconds": time.perf_counter() - t0,
            "feature_seconds": feature_seconds, "sweep": sweep, "languages": ["en"],
            "val_flag_rates": val_flags,
            "n_train": len(data.y["train"]), "n_val": len(data.y["val"]), "n_test": len(data.y["test"])}
    return GuardAdapter("window", cfg.task, "prompt", ["unsafe"], {"layers": layers, "window": w}, head, temps,
                        thresholds, max_length=context, target_fpr=cfg.target_fpr, info=info)
