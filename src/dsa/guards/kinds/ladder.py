"""What RTB and LST heads share: both read the last `window` token states of their ladder taps
(`GuardInput.tokens` [b, T, w, d]) and train on the cached ladder tokens of the feature store."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dsa.decoding import pad_left
from dsa.guards.heads import GuardInput
from dsa.guards.summaries import tap_name, windowed


@dataclass
class LadderStream:
    """The last `window` token states per ladder tap [b, T, w, d] and their mask [b, w], shifted
    like a ring buffer: O(window·d) per token whatever the length."""

    head: nn.Module
    taps: list[str]
    tokens: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def start(cls, adapter, cache: dict, mask: torch.Tensor) -> LadderStream:
        taps = [tap_name(li) for li in adapter.cfg["ladder"]]
        parts, wm = [], None
        for t in taps:
            x, wm = windowed(cache[t], mask, adapter.window)
            parts.append(pad_left(x, adapter.window, 1))
        return cls(adapter.head, taps, torch.stack(parts, 1), pad_left(wm, adapter.window, 1))

    def update(self, cache: dict) -> torch.Tensor:
        new_t = torch.stack([cache[t][:, -1].float() for t in self.taps], 1)
        self.tokens = torch.cat([self.tokens[:, :, 1:], new_t[:, :, None]], 2)
        self.mask = torch.cat([self.mask[:, 1:], torch.ones_like(self.mask[:, :1])], 1)
        return self.head(GuardInput(tokens=self.tokens, mask=self.mask))

    def select(self, idx: torch.Tensor) -> LadderStream:
        return LadderStream(self.head, self.taps, self.tokens[idx], self.mask[idx])

    def merge(self, other: LadderStream) -> LadderStream:
        return LadderStream(self.head, self.taps, torch.cat([self.tokens, other.tokens]),
                            torch.cat([self.mask, other.mask]))


class Ladder:
    """The shared part of the RTB and LST head types (each adds `build`, `flops`, `token_logits`)."""

    reads_tokens = True
    cached_features = True
    vllm_reads = None  # not inside vLLM yet

    def layers(self, cfg: dict) -> list[int]:
        return cfg["ladder"]

    def tap_needs(self, cfg: dict, window: int) -> dict[str, dict]:
        return {tap_name(li): {"mean": False, "last": False, "window": window} for li in cfg["ladder"]}

    def inputs(self, cfg: dict, cache: dict, mask: torch.Tensor, window: int) -> GuardInput:
        parts, m = [], None
        for li in cfg["ladder"]:
            t, m = windowed(cache[tap_name(li)], mask, window)
            parts.append(t)
        return GuardInput(tokens=torch.stack(parts, 1), mask=m)  # [b, T, w, d]

    def stream(self, adapter, cache: dict, mask: torch.Tensor) -> LadderStream:
        return LadderStream.start(adapter, cache, mask)

    def prompt_state(self, adapter) -> None:
        return None

    def cached_input(self, feats, idx: list[int], cfg: dict) -> GuardInput:
        tokens, mask = feats.padded_tokens(idx)
        keep = [feats.ladder_layers.index(li) for li in cfg["ladder"]]
        return GuardInput(tokens=tokens[:, keep], mask=mask)

    def fit_norm(self, head: nn.Module, feats, cfg: dict, max_tokens: int = 50_000) -> None:
        keep = [feats.ladder_layers.index(li) for li in cfg["ladder"]]
        g = torch.Generator().manual_seed(0)
        rows = torch.randperm(feats.tokens.shape[0], generator=g)[:max_tokens]
        t = feats.tokens[rows][:, keep].float()  # [n, T, d]
        head.norm.mu.copy_(t.mean(0).unsqueeze(1))
        head.norm.sd.copy_(t.std(0).clamp_min(1e-3).unsqueeze(1))

    def fit(self, cfg, train, val, d_model: int) -> tuple[nn.Module, dict]:
        from dsa.guards.train import fit_torch

        hcfg = {"ladder": cfg.ladder, "width": cfg.width, "attn_heads": cfg.attn_heads}
        head = fit_torch(self, train.feats, train.labels, val.feats, val.labels, hcfg, d_model,
                         seed=cfg.seed, epochs=cfg.epochs, patience=cfg.patience, lr=cfg.lr,
                         weight_decay=cfg.weight_decay, batch_size=cfg.batch_size)
        return head, hcfg

    def check(self, cfg) -> None:
        pass
