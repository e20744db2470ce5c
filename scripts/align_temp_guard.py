"""TEMPORARY prompt-safety guard for the alignment eval, used only while the shipped guard
(adapters/guards/prompt_safety, issue #3) is absent: a PLR probe (mean + last pooling of
layer 15) fitted by logistic regression on 384 + 384 prompt_safety *train* prompts, written in
the guard engineer's GuardAdapter format to runs/temp_guard/prompt_safety (git-ignored).

    DSA_CACHE=.cache python scripts/align_temp_guard.py
"""

import hashlib

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from dsa.base import load_base
from dsa.data import guard_task
from dsa.features import pool
from dsa.guards.bank import GuardAdapter
from dsa.guards.heads import build_head
from dsa.taps import run_with_taps

LAYER, N, OUT = 15, 384, "runs/temp_guard/prompt_safety"


def pick(rows, n):
    return sorted(rows, key=lambda r: hashlib.sha256(r.id.encode()).hexdigest())[:n]


if __name__ == "__main__":
    torch.set_num_threads(2)
    base = load_base()
    train = guard_task("prompt_safety").train
    rows = pick([r for r in train if r.label == 1 and len(r.main_text) < 600], N) + \
        pick([r for r in train if r.label == 0 and len(r.main_text) < 600], N)
    tok = base.tokenizer
    tok.padding_side = "left"
    feats = []
    for i in range(0, len(rows), 32):
        texts = [base.chat_text(r.main_text) for r in rows[i:i + 32]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            _, cache = run_with_taps(base.model, dict(enc), [f"layers.{LAYER}.resid_post"], need_output=False)
        h = cache[f"layers.{LAYER}.resid_post"]
        feats.append(torch.cat([pool(h, enc["attention_mask"], "mean"), pool(h, enc["attention_mask"], "last")], -1))
        print(i, flush=True)
    x = torch.cat(feats).numpy()
    y = np.array([r.label for r in rows])
    mu, sd = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=0.05, max_iter=3000).fit((x - mu) / sd, y)
    print("train acc", clf.score((x - mu) / sd, y))
    cfg = {"layers": [LAYER], "poolings": ["mean", "last"], "hidden": 0}
    head = build_head("plr", base.d_model, 1, cfg)
    head.mu.copy_(torch.tensor(mu))
    head.sd.copy_(torch.tensor(sd))
    head.net.weight.data.copy_(torch.tensor(clf.coef_, dtype=torch.float32))
    head.net.bias.data.copy_(torch.tensor(clf.intercept_, dtype=torch.float32))
    adapter = GuardAdapter("plr", "prompt_safety", "prompt", ["unsafe"], cfg, head, [1.0], [0.5], 256, 64, 0.05,
                           {"temporary": "alignment-eval stand-in until adapters/guards/prompt_safety ships"})
    adapter.save(OUT, base.fingerprint, base.name)
    print("wrote", OUT)
