"""Does a third class (PHTest `controversial`) teach the prompt guard "edgy" apart from "harmful"?
A probe on the cached prompt_safety features → results/guard-three-level-probe.json.

    OMP_NUM_THREADS=1 python scripts/probe_three_level.py

The shipped guard is a binary read-out (harmful vs benign) and PHTest's 1,191 `controversial`
prompts are left out of its labels. Here they are split 70/10/20 by the same seeded hash as every
other source (`assign_splits`, seed 0), featurised through the shared store, and the same features
as the shipped head (mean + last token of layers 9, 14, 19, 24; standardised) are read out four ways:

- `binary (shipped recipe)`: balanced logistic regression, safe vs unsafe, controversial left out;
- `binary, controversial = safe`: the same with the controversial prompts in the benign label;
- `three-level, u vs rest`: multinomial (safe / controversial / unsafe) logistic regression, score
  log P(unsafe) − log(P(safe) + P(controversial));
- `three-level, u vs safe`: the same fit, score log P(unsafe) − log P(safe), which is linear in the
  features and so fits the shipped PLR head format.

C is chosen on validation AUC (safe vs unsafe; controversial rows are not in any validation metric),
the threshold is at 5 % FPR on the validation safe prompts, and the eval-only sets are reported,
never used to choose. `flag_controversial_test` is the share of held-out controversial prompts
flagged (not a target: the data gives no right answer for them).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dsa.adapter_io import atomic_write_text
from dsa.base import load_base
from dsa.data import load_source
from dsa.data.splits import assign_splits
from dsa.features import text_hash
from dsa.features.store import extract_views, load_features
from dsa.guards.featurize import LADDER_LAYERS, render, store_dir, store_index, task_splits
from dsa.guards.operating import operating_sets, probe_line, probe_readout
from dsa.probe_fit import fit_best_c
from dsa.taps import resolve_layers

REPO = Path(__file__).resolve().parents[1]
LAYERS = (9, 14, 19, 24)  # the shipped guard's layers


def views(index, texts, ladder) -> torch.Tensor:
    f = load_features(index, [text_hash(t) for t in texts], ladder, tokens=False, layers=LAYERS)
    return torch.cat([f.mean.reshape(len(texts), -1), f.last.reshape(len(texts), -1)], 1)


def binary_score(clf, x):
    return clf.decision_function(x)


def u_vs_rest(clf, x):  # classes 0 safe, 1 controversial, 2 unsafe
    lp = clf.predict_log_proba(x)
    return lp[:, 2] - np.logaddexp(lp[:, 0], lp[:, 1])


def u_vs_safe(clf, x):
    z = clf.decision_function(x)
    return z[:, 2] - z[:, 0]


def main() -> None:
    t0 = time.perf_counter()
    base = load_base("smollm2-135m-instruct")
    _, _, splits = task_splits(base, "prompt_safety")
    ladder = tuple(resolve_layers(LADDER_LAYERS, base.n_layers))
    sdir = store_dir(base, 256, 64, ladder)

    contr = assign_splits([r for r in load_source("phtest") if r.meta["harmfulness"] == "controversial"], seed=0)
    c_texts = {s: [render(base, r, "prompt") for r in contr if r.split == s] for s in ("train", "val", "test")}
    extract_views(base, [t for s in c_texts.values() for t in s], "phtest-controversial", tokens=False,
                  layers=LAYERS)
    index = store_index(sdir)

    x = {s: views(index, splits[s].texts, ladder) for s in ("train", "val")}
    xc = {s: views(index, c_texts[s], ladder) for s in c_texts}
    xo = {k: views(index, [base.chat_text(r.main_text) for r in recs], ladder) for k, recs in operating_sets().items()}
    y = {s: splits[s].labels[:, 0].numpy().astype(int) for s in ("train", "val")}

    mu, sd = x["train"].mean(0), x["train"].std(0).clamp_min(1e-4)  # standardised on the binary train rows

    def z(t: torch.Tensor) -> np.ndarray:
        return ((t - mu) / sd).numpy()

    z_tr, z_va, z_c = z(x["train"]), z(x["val"]), {s: z(v) for s, v in xc.items()}
    z_ops = {k: z(v) for k, v in xo.items()}
    fits = {
        "binary (shipped recipe)": (z_tr, y["train"], binary_score),
        "binary, controversial = safe": (np.r_[z_tr, z_c["train"]], np.r_[y["train"], np.zeros(len(z_c["train"]), int)],
                                         binary_score),
        "three-level, u vs rest": (np.r_[z_tr, z_c["train"]], np.r_[2 * y["train"], np.ones(len(z_c["train"]), int)],
                                   u_vs_rest),
        "three-level, u vs safe": (np.r_[z_tr, z_c["train"]], np.r_[2 * y["train"], np.ones(len(z_c["train"]), int)],
                                   u_vs_safe),
    }
    rows = {}
    for name, (xt, yt, fn) in fits.items():
        print(name, flush=True)
        fit = fit_best_c(xt, yt, z_va, y["val"], score_fn=fn, max_iter=1000, verbose=True)
        score, c = fit.score, fit.c
        s_va = score(z_va)
        row, thr = probe_readout(y["val"], s_va, {k: score(v) for k, v in z_ops.items()})  # threshold: 5 % val FPR
        rows[name] = {"C": c, **row, "flag_controversial_test": float((score(z_c["test"]) >= thr).mean())}
        print(probe_line(name, row), f"controversial {rows[name]['flag_controversial_test']:.3f}", flush=True)
    out = {"layers": list(LAYERS), "features": "mean + last token, standardised on the binary train rows",
           "threshold": "5 % FPR on validation safe prompts",
           "n": {"train": len(z_tr), "val": len(z_va), **{f"controversial_{s}": len(v) for s, v in z_c.items()},
                 **{k: len(v) for k, v in z_ops.items()}},
           "readouts": rows, "seconds": round(time.perf_counter() - t0, 1),
           "command": "OMP_NUM_THREADS=1 python scripts/probe_three_level.py"}
    atomic_write_text(REPO / "results" / "guard-three-level-probe.json", json.dumps(out, indent=1) + "\n")
    print("wrote results/guard-three-level-probe.json", file=sys.stderr)


if __name__ == "__main__":
    main()
