"""Does pooling over the user's turn (leaving out the system prompt) read harm better than pooling
over the whole chat text? A probe on the cached prompt_safety features → results/guard-pooling-probe.json.

    OMP_NUM_THREADS=1 python scripts/probe_pooling.py

Every prompt starts with the same system prompt; under causal attention its states are identical
for every prompt, so a whole-text mean is a constant diluted by prompt length plus the signal.
The store keeps per-token states of the last 64 tokens on the ladder layers (4, 9, 14, 19, 24, 29
of SmolLM2); "turn mean" averages those of them that come after the system block (for the ~10 %
of prompts longer than the window, the mean of the last 64 tokens). Each view is read out by the
same linear head as the shipped guard (standardised, balanced logistic regression, C chosen on val
AUC, threshold at 5 % val FPR); rows say val and eval-only numbers (eval-only sets are reported,
never used to choose).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from dsa.adapter_io import atomic_write_text
from dsa.base import load_base
from dsa.features import text_hash
from dsa.features.store import read_shard, rows_by_shard
from dsa.guards.featurize import LADDER_LAYERS, store_dir, store_index, task_splits
from dsa.guards.operating import operating_sets, probe_line, probe_readout
from dsa.probe_fit import PROBE_CS, fit_best_c
from dsa.taps import resolve_layers

REPO = Path(__file__).resolve().parents[1]
LAYERS = (9, 14, 19, 24)  # the shipped guard's layers (all on the ladder)


def stream_views(index, hashes: list[str], n_tokens: list[int], sys_len: int, ladder) -> dict[str, torch.Tensor]:
    """The views of `hashes`, read shard by shard (the whole store does not fit in memory beside
    other jobs): whole-text mean and last token of LAYERS, and the turn mean (mean of the windowed
    token states after the system block)."""
    keep = [ladder.index(li) for li in LAYERS]
    by_shard = rows_by_shard(index, hashes)
    n = len(hashes)
    mean = last = turn = None
    for shard, wanted in by_shard.items():
        m, la, tk, nt, off = read_shard(shard, LAYERS)
        if mean is None:
            f = m.shape[1] * m.shape[2]
            mean, last, turn = torch.zeros(n, f), torch.zeros(n, f), torch.zeros(n, f)
        for p, r in wanted:
            mean[p], last[p] = m[r].reshape(-1).float(), la[r].reshape(-1).float()
            t = tk[off[r]:off[r + 1]][:, keep].float()  # [w, L, d]
            w = t.shape[0]
            first = max(0, sys_len - (n_tokens[p] - w))  # first window index after the system block
            t = t[first:] if first < w else t[-1:]
            turn[p] = t.mean(0).reshape(-1)
    return {"mean+last (shipped)": torch.cat([mean, last], 1), "turn_mean+last": torch.cat([turn, last], 1),
            "turn_mean": turn, "mean": mean, "last": last}


def fit(x_tr, y_tr, x_va, y_va):
    mu, sd = x_tr.mean(0), x_tr.std(0).clamp_min(1e-4)
    z_tr, z_va = ((x_tr - mu) / sd).numpy(), ((x_va - mu) / sd).numpy()
    best = fit_best_c(z_tr, y_tr, z_va, y_va, PROBE_CS, warm_start=True, max_iter=500, seed=0)
    w, b = torch.as_tensor(best.coef, dtype=torch.float32), best.intercept
    return (lambda x: (((x - mu) / sd) @ w + b).numpy()), best.c


def main() -> None:
    t0 = time.perf_counter()
    base = load_base("smollm2-135m-instruct")
    sys_len = len(base.tokenizer(base.chat_text("x").split("<|im_start|>user")[0])["input_ids"])
    _, _, splits = task_splits(base, "prompt_safety")
    ladder = tuple(resolve_layers(LADDER_LAYERS, base.n_layers))
    index = store_index(store_dir(base, 256, 64, ladder))

    def load(texts):
        n_tok = [min(256, len(ids)) for ids in base.tokenizer(list(texts))["input_ids"]]
        return stream_views(index, [text_hash(t) for t in texts], n_tok, sys_len, ladder)

    v = {s: load(splits[s].texts) for s in ("train", "val")}
    vo = {k: load([base.chat_text(r.main_text) for r in recs]) for k, recs in operating_sets().items()}
    y_tr, y_va = splits["train"].labels[:, 0].numpy(), splits["val"].labels[:, 0].numpy()
    rows = {}
    for name in v["train"]:
        score, c = fit(v["train"][name], y_tr, v["val"][name], y_va)
        s_va = score(v["val"][name])
        row, _ = probe_readout(y_va, s_va, {k: score(vo[k][name]) for k in vo})  # threshold: 5 % val FPR
        rows[name] = {"C": c, **row}
        print(probe_line(name, row), flush=True)
    out = {"layers": list(LAYERS), "system_block_tokens": sys_len, "window": 64, "threshold": "5 % val FPR",
           "n": {"train": len(y_tr), "val": len(y_va)}, "views": rows,
           "seconds": round(time.perf_counter() - t0, 1), "command": "python scripts/probe_pooling.py"}
    atomic_write_text(REPO / "results" / "guard-pooling-probe.json", json.dumps(out, indent=1) + "\n")
    print("wrote results/guard-pooling-probe.json", file=sys.stderr)


if __name__ == "__main__":
    main()
