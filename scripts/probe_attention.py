"""Can a learned attention over the prompt's tokens read harmful intent better than mean pooling?
A probe on the cached prompt_safety features → results/guard-attention-probe.json.

    OMP_NUM_THREADS=1 python scripts/probe_attention.py

Mean pooling weighs every token alike, so "kill" in "How do I kill a Python process?" counts as
much as in a harmful request. An attention probe learns which tokens to read: per text,
weights softmax(q · u_t) over the per-token states u_t (the store's last 64 tokens of two ladder
layers, standardised), the attention-pooled state read out linearly beside the shipped head's
features (mean + last token of layers 9, 14, 19, 24, standardised). Trained with balanced
cross-entropy and AdamW; the epoch is chosen on validation AUC; the threshold is at 5 % FPR on
validation; eval-only sets are reported, never used to choose. The shipped recipe's linear read-out
of the same pooled features is the reference row.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dsa.adapter_io import atomic_write_text
from dsa.base import load_base
from dsa.features import text_hash
from dsa.features.store import read_shard, rows_by_shard
from dsa.guards.featurize import LADDER_LAYERS, store_dir, store_index, task_splits
from dsa.guards.operating import operating_sets, probe_line, probe_readout
from dsa.metrics import roc_auc
from dsa.taps import resolve_layers

REPO = Path(__file__).resolve().parents[1]
POOLED = (9, 14, 19, 24)  # the shipped head's layers
TOKEN_LAYERS = (9, 19)  # ladder layers whose per-token states the attention reads
EPOCHS, BATCH, SEED = 6, 64, 0


class Views:
    """Pooled features [n, f] and per-token states (flat [sum ntok, f_tok] bf16 + offsets)."""

    def __init__(self, index, texts: list[str], ladder: tuple[int, ...]):
        keep = [ladder.index(li) for li in TOKEN_LAYERS]
        by_shard = rows_by_shard(index, [text_hash(t) for t in texts])
        n = len(texts)
        self.pooled = None
        toks: list[torch.Tensor | None] = [None] * n
        for shard, wanted in by_shard.items():
            m, la, tk, nt, off = read_shard(shard, POOLED)
            if self.pooled is None:
                self.pooled = torch.zeros(n, 2 * m.shape[1] * m.shape[2])
            for p, r in wanted:
                self.pooled[p] = torch.cat([m[r].reshape(-1), la[r].reshape(-1)]).float()
                toks[p] = tk[off[r]:off[r + 1]][:, keep].reshape(int(nt[r]), -1).clone()
        self.ntok = torch.tensor([t.shape[0] for t in toks])
        self.off = torch.cat([torch.zeros(1, dtype=torch.long), self.ntok.cumsum(0)])
        self.tokens = torch.cat(toks)

    def batch(self, idx: torch.Tensor, mu_p, sd_p, mu_t, sd_t):
        w = int(self.ntok[idx].max())
        x = torch.zeros(len(idx), w, self.tokens.shape[1])
        mask = torch.zeros(len(idx), w, dtype=torch.bool)
        for j, i in enumerate(idx.tolist()):
            k = int(self.ntok[i])
            x[j, :k] = self.tokens[self.off[i]:self.off[i + 1]].float()
            mask[j, :k] = True
        return (self.pooled[idx] - mu_p) / sd_p, (x - mu_t) / sd_t, mask


class AttentionProbe(nn.Module):
    def __init__(self, f_pooled: int, f_tok: int):
        super().__init__()
        self.query = nn.Linear(f_tok, 1)
        self.read = nn.Linear(f_pooled + f_tok, 1)
        self.drop = nn.Dropout(0.1)

    def forward(self, pooled, tokens, mask):
        a = self.query(tokens).squeeze(-1).masked_fill(~mask, float("-inf")).softmax(-1)  # [b, w]
        att = (a.unsqueeze(-1) * tokens).sum(1)
        return self.read(self.drop(torch.cat([pooled, att], -1))).squeeze(-1)


def scores(model, v: Views, norm) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(v.ntok), 256):
            out.append(model(*v.batch(torch.arange(s, min(s + 256, len(v.ntok))), *norm)))
    return torch.cat(out).numpy()


def main() -> None:
    t0 = time.perf_counter()
    torch.manual_seed(SEED)
    base = load_base("smollm2-135m-instruct")
    _, _, splits = task_splits(base, "prompt_safety")
    ladder = tuple(resolve_layers(LADDER_LAYERS, base.n_layers))
    index = store_index(store_dir(base, 256, 64, ladder))
    v = {s: Views(index, splits[s].texts, ladder) for s in ("train", "val")}
    ops = {k: Views(index, [base.chat_text(r.main_text) for r in recs], ladder) for k, recs in operating_sets().items()}
    y = {s: splits[s].labels[:, 0].float() for s in ("train", "val")}
    print(f"loaded in {time.perf_counter() - t0:.0f} s", flush=True)

    tr = v["train"]
    s1 = sum(c.float().sum(0) for c in tr.tokens.split(100_000))
    s2 = sum(c.float().pow(2).sum(0) for c in tr.tokens.split(100_000))
    mu_t = s1 / len(tr.tokens)
    norm = (tr.pooled.mean(0), tr.pooled.std(0).clamp_min(1e-4), mu_t,
            (s2 / len(tr.tokens) - mu_t.pow(2)).clamp_min(1e-8).sqrt().clamp_min(1e-4))
    model = AttentionProbe(tr.pooled.shape[1], tr.tokens.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    pos_w = (y["train"] == 0).sum() / (y["train"] == 1).sum()
    lossf = nn.BCEWithLogitsLoss(pos_weight=pos_w)
    best, history = None, []
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(tr.ntok), generator=torch.Generator().manual_seed(SEED + epoch))
        for s in range(0, len(perm), BATCH):
            idx = perm[s:s + BATCH]
            loss = lossf(model(*tr.batch(idx, *norm)), y["train"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        s_va = scores(model, v["val"], norm)
        auc = roc_auc(y["val"].numpy(), s_va)
        history.append({"epoch": epoch + 1, "val_auc": auc})
        print(f"epoch {epoch + 1}: val AUC {auc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if best is None or auc > best[0]:
            best = (auc, epoch + 1, {k: t.clone() for k, t in model.state_dict().items()})
    model.load_state_dict(best[2])
    y_va = y["val"].numpy()
    s_va = scores(model, v["val"], norm)
    readout, _ = probe_readout(y_va, s_va, {k: scores(model, o, norm) for k, o in ops.items()})  # 5 % val FPR
    row = {"epoch": best[1], **readout}
    print(probe_line("attention probe", row), flush=True)
    out = {"pooled_layers": list(POOLED), "token_layers": list(TOKEN_LAYERS), "window": 64,
           "training": {"epochs": EPOCHS, "batch": BATCH, "optimizer": "AdamW lr 1e-3 wd 0.05", "dropout": 0.1,
                        "loss": "BCE, positives weighted to balance", "seed": SEED, "history": history},
           "threshold": "5 % val FPR", "params": sum(p.numel() for p in model.parameters()),
           "n": {"train": len(tr.ntok), "val": len(y_va), **{k: len(o.ntok) for k, o in ops.items()}},
           "attention_probe": row, "seconds": round(time.perf_counter() - t0, 1),
           "command": "OMP_NUM_THREADS=1 python scripts/probe_attention.py"}
    atomic_write_text(REPO / "results" / "guard-attention-probe.json", json.dumps(out, indent=1) + "\n")
    print("wrote results/guard-attention-probe.json", file=sys.stderr)


if __name__ == "__main__":
    main()
