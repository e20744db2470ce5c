"""Flag rates of window guards on the val split, per kind of copy (plain, framed, short train
filler, long repetitive filler, padding made of other benign val prompts) and, for the plain val
prompts, per length (naturally long everyday prompts: a guard must not flag long traffic because it
is long), at each guard's stored threshold, and at one common val FPR (guards calibrated on different
val mixes compared at one operating point). Writes results/guard-val-flags.json.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/guard_val_flags.py adapters/guards/prompt_safety [more guards] \
        [--set key=value ...]   (config overrides, e.g. --set corpus_pad_share=0.08 to read corpus-padded copies too)

Val is not eval-only: this is the check a new guard is chosen by (does any kind of benign padding
move the operating point?), before the robustness report reads the eval-only sets. Every guard is
read on the same val copies, built by configs/guard-prompt_safety.yaml's augmentation settings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


BUCKETS = ((0, 128), (128, 384), (384, 1 << 30))  # tokens read (chat template included)


def by_length(lengths: np.ndarray, plain: np.ndarray, y: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """{"lo-hi": {"benign", "harmful" flag rates, "n_benign", "n_harmful"}} over the plain prompts."""
    out = {}
    for lo, hi in BUCKETS:
        row = {}
        for name, label in (("benign", 0), ("harmful", 1)):
            m = plain & (y == label) & (lengths >= lo) & (lengths < hi)
            row[name] = float((probs[m] >= threshold).mean()) if m.any() else None
            row[f"n_{name}"] = int(m.sum())
        out[f"{lo}-{hi if hi < 1 << 30 else 'inf'}"] = row
    return out


def main() -> int:
    from dsa.adapter_io import atomic_write_text
    from dsa.base import load_base
    from dsa.guards.bank import GuardAdapter
    from dsa.guards.calibrate import calibrated, threshold_for_fpr
    from dsa.guards.config import GuardTrainConfig
    from dsa.guards.window_train import flag_rates_by_kind, kind_group, predict_window, window_data
    from dsa.metrics import roc_auc

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("guards", nargs="+")
    p.add_argument("--config", default="configs/guard-prompt_safety.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the config (the val copies' augmentation)")
    p.add_argument("--equal-fpr-without", default="pad_corpus,pad_doc", metavar="GROUPS",
                   help="also read every guard at the threshold giving the config's target FPR on val without "
                        "these kinds of copy (the shipped guard's val mix), so guards calibrated on different "
                        "val mixes are compared at one FPR")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "guard-val-flags.json")
    args = p.parse_args()
    t0 = time.perf_counter()
    base = load_base()
    cfg = GuardTrainConfig.from_yaml(args.config, args.overrides).resolved(base.n_layers)
    layers = list(cfg.layer_sets[0])
    data = window_data(base, cfg.task, layers, **cfg.augmentation(), splits=("val",))
    y = data.y["val"]
    lengths = data.states["val"].lengths().numpy()
    plain = np.array([k == "plain" for k in data.kinds["val"]])
    without = {g for g in args.equal_fpr_without.split(",") if g}
    mix = np.array([kind_group(k) not in without for k in data.kinds["val"]])
    rows = {}
    for g in args.guards:
        a = GuardAdapter.load(g, base.fingerprint, base.d_model)
        if a.arch != "window" or list(a.head.layers) != layers:
            raise SystemExit(f"{g}: a window guard on layers {layers} is needed, got {a.arch} {a.cfg}")
        logits = predict_window(a.head, data.states["val"])[:, 0]
        probs = calibrated(logits, a.temperatures[0])
        rows[g] = {"threshold": a.thresholds[0], "val_auc": roc_auc(y, logits),
                   "flag_rates": flag_rates_by_kind(data.kinds["val"], y, probs, a.thresholds[0]),
                   "plain_by_tokens": by_length(lengths, plain, y, probs, a.thresholds[0])}
        thr = threshold_for_fpr(probs[mix], y[mix], cfg.target_fpr)
        rows[g]["at_equal_fpr"] = {"fpr": cfg.target_fpr, "without": sorted(without), "threshold": thr,
                                   "flag_rates": flag_rates_by_kind(data.kinds["val"], y, probs, thr)}
        print(g, json.dumps(rows[g]["flag_rates"]), json.dumps(rows[g]["at_equal_fpr"]["flag_rates"]))
    command = " ".join(["python scripts/guard_val_flags.py", *args.guards, *(f"--set {o}" for o in args.overrides)])
    out = {"command": command, "config": args.config, "overrides": args.overrides,
           "n_val": int(len(y)), "guards": rows, "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
