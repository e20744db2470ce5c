"""Fitting a window head on per-token states: a mean-pooled warm start, then the loss on
`rolling_max` of the per-token logits (the aggregate inference reads), and its read-out
(`predict_window`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch

from dsa.features.text import length_buckets
from dsa.guards.heads import WindowHead, rolling_max
from dsa.guards.token_states import TokenStates
from dsa.guards.window_prompts import WindowData, kind_group
from dsa.metrics import roc_auc

log = logging.getLogger(__name__)


def _standardise(head: WindowHead, states: TokenStates, n: int = 200_000, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(states.values.shape[0], generator=g)[:n]
    x = states.values[rows].float()
    head.mu.copy_(x.mean(0))
    head.sd.copy_(x.std(0).clamp_min(1e-3))


def _z(head: WindowHead, x: torch.Tensor) -> torch.Tensor:
    """Per-token logits (no bias) [b, s, h] of concatenated states [b, s, L·d]."""
    return ((x - head.mu) / head.sd) @ head.net.weight.T


def predict_window(head: WindowHead, states: TokenStates, idx: Sequence[int] | None = None,
                   batch_tokens: int = 65536) -> np.ndarray:
    """Logits [n, heads] of texts `idx` (default all), the inference read-out with the bias."""
    idx = list(range(len(states))) if idx is None else list(idx)
    lens = states.lengths()
    out = torch.zeros(len(idx), head.net.out_features)
    with torch.no_grad():
        for b in length_buckets([int(lens[i]) for i in idx], batch_tokens, 256):
            x, m = states.batch([idx[j] for j in b])
            out[b] = rolling_max(_z(head, x), m, head.window) + head.net.bias
    return out.numpy()


def fit_window(data: WindowData, layers: Sequence[int], window: int, d_model: int, *, weight_decay: float = 1e-3,
               epochs: int = 8, warm_epochs: int = 2, lr: float = 2e-3, batch_size: int = 64, seed: int = 0,
               patience: int = 2, train_idx: Sequence[int] | None = None,
               val_idx: Sequence[int] | None = None, tail_drop_share: float = 0.0,
               tail_tokens: int = 0, long_copy_weight: float = 1.0) -> tuple[WindowHead, dict]:
    """Fit one window head: `warm_epochs` on the mean of the token logits (a stable start), then the
    rolling-max loss; keeps the epoch with the best val AUC. `train_idx` / `val_idx` restrict the
    texts used (leave-one-source-out). For a seeded `tail_drop_share` of the training texts (both
    classes alike) the loss may not read their last `tail_tokens` tokens (the chat template's end
    after the request, `template_tail_tokens`), so the head must find a request in its own tokens,
    not only in the assistant turn's opening after it; inference reads every token.
    `long_copy_weight` weights the loss of the long padded copies (long filler and documents, both
    classes): a long text has many windows, so a benign one has many chances to be flagged."""
    torch.manual_seed(seed)
    head = WindowHead(d_model, 1, list(layers), window)
    tr, va = data.states["train"], data.states["val"]
    tr_idx = list(range(len(tr))) if train_idx is None else list(train_idx)
    va_idx = list(range(len(va))) if val_idx is None else list(val_idx)
    y_all = torch.as_tensor(data.y["train"], dtype=torch.float32)
    y_tr = y_all[tr_idx]
    w_all = torch.tensor([long_copy_weight if kind_group(k) in ("pad_long", "pad_doc") else 1.0
                          for k in data.kinds.get("train") or ["plain"] * len(tr)])
    _standardise(head, tr, seed=seed)  # over all train tokens (a held-out source shifts it little)
    with torch.no_grad():
        head.net.weight.zero_()
        head.net.bias.zero_()
    pos_weight = ((y_tr == 0).sum() / (y_tr == 1).sum().clamp_min(1)).reshape(1)
    opt = torch.optim.AdamW(head.net.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    best = (-1.0, None, -1)
    history = []
    all_lens = tr.lengths().tolist()
    lens = [all_lens[i] for i in tr_idx]
    drop = torch.rand(len(tr), generator=torch.Generator().manual_seed(seed + 1)) < tail_drop_share
    for ep in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(tr_idx), generator=g).tolist()
        batches = _shuffled_buckets(order, lens, batch_size, g)  # similar lengths, seeded order
        for b in batches:
            x, m = tr.batch([tr_idx[i] for i in b])
            if tail_tokens and tail_drop_share:
                for r, i in enumerate(b):
                    n = lens[i]
                    if drop[tr_idx[i]] and n > tail_tokens:
                        m[r, n - tail_tokens:n] = 0
            z = _z(head, x)  # [b, s, 1]
            if ep < warm_epochs:
                agg = (z * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)
            else:
                agg = rolling_max(z, m, window)
            logit = (agg + head.net.bias)[:, 0]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logit, y_tr[b], weight=w_all[[tr_idx[i] for i in b]], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
        auc = roc_auc(data.y["val"][va_idx], predict_window(head, va, va_idx)[:, 0])
        history.append({"epoch": ep + 1, "val_auc": float(auc), "seconds": round(time.perf_counter() - t0, 1)})
        log.info("window W=%d wd=%g epoch %d: val AUC %.4f (%.0f s)", window, weight_decay, ep + 1, auc,
                 time.perf_counter() - t0)
        if ep >= warm_epochs - 1 and auc > best[0] + 1e-4:
            best = (auc, {k: v.clone() for k, v in head.state_dict().items()}, ep + 1)
        elif ep >= warm_epochs and ep + 1 - best[2] > patience:
            break
    head.load_state_dict(best[1])
    head.eval()
    return head, {"val_auc": float(best[0]), "epoch": best[2], "history": history}


def _shuffled_buckets(order: list[int], lens: list[int], batch_size: int, g: torch.Generator) -> list[list[int]]:
    """Batches of `batch_size` texts of similar length, in a seeded random order."""
    by_len = sorted(order, key=lambda i: lens[i])
    batches = [by_len[k:k + batch_size] for k in range(0, len(by_len), batch_size)]
    perm = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in perm]
