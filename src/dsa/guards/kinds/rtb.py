"""RTB: a Res-Tuning bypass over the ladder taps' last `window` tokens (`RTBHead`)."""

from __future__ import annotations

import torch

from dsa.guards.heads import GuardInput, RTBHead
from dsa.guards.kinds.ladder import Ladder
from dsa.guards.summaries import tap_name


class RTB(Ladder):
    arch = "rtb"
    head_type = RTBHead

    def build(self, d_model: int, n_heads: int, cfg: dict) -> RTBHead:
        return RTBHead(d_model, n_heads, len(cfg["ladder"]), cfg.get("width", 64))

    def token_logits(self, head: RTBHead, cfg: dict, cache: dict, mask: torch.Tensor) -> torch.Tensor:
        tokens = torch.stack([cache[tap_name(li)].float() for li in cfg["ladder"]], 1)
        return head.token_logits(GuardInput(tokens=tokens, mask=mask))

    def flops(self, head: RTBHead, seq_len: int) -> float:
        return head.flops_per_token() * seq_len + head.flops_per_sequence()
