"""What each part of the window guard's recipe buys, on validation data only, and leave-one-source-out
→ results/guard-window-study.json.

    OMP_NUM_THREADS=1 python scripts/window_study.py [--no-loso]
    OMP_NUM_THREADS=1 python scripts/window_study.py --loso-only   # → results/guard-window-loso.json

`--loso-only` runs leave-one-source-out alone, on the data the shipped guard was trained on (the
config's augmentation, long padded copies included) at the shipped guard's window.

Rows (all with the shipped config's layers, learning rate and epochs; val AUC on the plain val
prompts and on their padded copies, each against the whole other class):
- the window widths the config tries (the shipped one is the best val AUC);
- the shipped width trained without the padded copies (does padding augmentation matter?);
- the shipped width trained without the project's contrast prompts (dsa.data.contrast);
- the mean of the token logits instead of the max of rolling means (the read-out that dilutes).
Then leave-one-source-out at the shipped width, as the PLR study does it (`loso_window`).
Nothing here reads an eval-only set.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from dsa.adapter_io import atomic_write_text
from dsa.base import load_base
from dsa.guards.config import GuardTrainConfig
from dsa.guards.window_train import fit_window, loso_window, val_report, window_data

OUT = Path("results/guard-window-study.json")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/guard-prompt_safety.yaml")
    ap.add_argument("--no-loso", action="store_true")
    ap.add_argument("--loso-only", action="store_true",
                    help="only leave-one-source-out, at the shipped guard's window and data")
    ap.add_argument("--guard", default="adapters/guards/prompt_safety", help="with --loso-only: the shipped guard")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = GuardTrainConfig.from_yaml(args.config)
    base = load_base(cfg.base)
    cfg = cfg.resolved(base.n_layers)
    layers = list(cfg.layer_sets[0])
    if args.loso_only:
        return loso_only(base, cfg, layers, args.guard)
    data = window_data(base, cfg.task, layers, seed=cfg.seed, share=cfg.augment_share, pad_tokens=cfg.pad_tokens,
                       splits=("train", "val", "test"))
    fit = dict(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed, patience=cfg.patience)
    wd = cfg.weight_decays[0]
    rows = {}
    for w in cfg.windows:
        head, info = fit_window(data, layers, w, base.d_model, weight_decay=wd, **fit)
        rows[f"window_{w}"] = {**val_report(head, data), "epoch": info["epoch"]}
    best = max(cfg.windows, key=lambda w: rows[f"window_{w}"]["auc"])
    ablations = {
        "no_padded_copies": [i for i, k in enumerate(data.kinds["train"]) if not k.startswith("pad_")],
        "no_contrast_prompts": [i for i, s in enumerate(data.sources["train"]) if s != "project_contrast"],
    }
    for name, idx in ablations.items():
        head, info = fit_window(data, layers, best, base.d_model, weight_decay=wd, train_idx=idx, **fit)
        rows[name] = {**val_report(head, data), "epoch": info["epoch"], "n_train": len(idx)}
    # the diluting read-out: a window as wide as the longest text is the mean over the whole prompt
    head, info = fit_window(data, layers, 100_000, base.d_model, weight_decay=wd, **fit)
    rows["mean_over_prompt"] = {**val_report(head, data), "epoch": info["epoch"]}
    out = {"command": "OMP_NUM_THREADS=1 python scripts/window_study.py", "config": args.config,
           "layers": layers, "selected_window": best, "rows": rows,
           "n": {s: len(data.y[s]) for s in data.y}}
    if not args.no_loso:
        t0 = time.perf_counter()
        out["loso"] = loso_window(data, layers, best, wd, base.d_model, cfg.target_fpr, epochs=min(cfg.epochs, 5),
                                  lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed, patience=cfg.patience)
        out["loso_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(OUT, json.dumps(out, indent=1) + "\n")
    print(json.dumps(rows, indent=1))
    return 0


def loso_only(base, cfg, layers: list[int], guard: str) -> int:
    """Leave-one-source-out of the shipped guard's recipe → results/guard-window-loso.json."""
    from dsa.adapter_io import read_adapter_meta

    shipped = read_adapter_meta(guard)["config"]["head"]
    if list(shipped["layers"]) != layers:
        raise SystemExit(f"{guard} reads layers {shipped['layers']}, the config {layers}")
    data = window_data(base, cfg.task, layers, **cfg.augmentation(), splits=("train", "val", "test"))
    t0 = time.perf_counter()
    epochs = min(cfg.epochs, 5)
    loso = loso_window(data, layers, shipped["window"], cfg.weight_decays[0], base.d_model, cfg.target_fpr,
                       epochs=epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed, patience=cfg.patience)
    out = {"command": "OMP_NUM_THREADS=1 python scripts/window_study.py --loso-only", "config": cfg.task,
           "guard": guard, "layers": layers, "window": shipped["window"], "epochs": epochs,
           "target_fpr": cfg.target_fpr, "loso": loso, "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(Path("results/guard-window-loso.json"), json.dumps(out, indent=1) + "\n")
    print(json.dumps(loso, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
