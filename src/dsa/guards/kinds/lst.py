"""LST: a ladder side network over the ladder taps' last `window` tokens (`LSTHead`)."""

from __future__ import annotations

import torch

from dsa.guards.heads import LSTHead
from dsa.guards.kinds.ladder import Ladder


class LST(Ladder):
    arch = "lst"
    head_type = LSTHead

    def build(self, d_model: int, n_heads: int, cfg: dict) -> LSTHead:
        return LSTHead(d_model, n_heads, len(cfg["ladder"]), cfg.get("width", 64), cfg.get("attn_heads", 4))

    def token_logits(self, head: LSTHead, cfg: dict, cache: dict, mask: torch.Tensor) -> None:
        return None  # its side attention reads the whole window: no per-token read-out

    def flops(self, head: LSTHead, seq_len: int) -> float:
        return head.flops_per_token(seq_len) * seq_len + head.flops_per_sequence()
