"""Window: a per-token linear probe read out as the max of `window`-token rolling means (`WindowHead`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsa.decoding import pad_left
from dsa.guards.heads import GuardInput, WindowHead, rolling_max
from dsa.guards.prompt_window import PromptWindow
from dsa.guards.summaries import last_window, tap_name


@dataclass
class RollingMax:
    """A window head's streaming state: the last `window` token logits per row [b, w, h] (oldest
    first), how many real tokens the row has [b], and the best full-window mean so far [b, h]
    (-inf while the row is shorter than a window). The score equals `rolling_max` over the whole
    transcript."""

    buf: torch.Tensor
    count: torch.Tensor
    best: torch.Tensor
    window: int

    @classmethod
    def start(cls, z: torch.Tensor, mask: torch.Tensor, window: int) -> RollingMax:
        count = mask.sum(1)
        full = rolling_max(z, mask * (mask.sum(1, keepdim=True) >= window), window)  # rows >= window
        buf, _ = last_window(z, mask, window)
        buf = pad_left(buf, window, 1)  # [b, window, h], zeros before a short row's first token
        return cls(buf, count, full, window)

    def update(self, z_new: torch.Tensor) -> torch.Tensor:
        """Add one token's logits [b, h] per row; returns the rows' scores [b, h] (without bias)."""
        self.buf = torch.cat([self.buf[:, 1:], z_new[:, None]], 1)
        self.count = self.count + 1
        n = self.count.clamp(max=self.window).to(self.buf.dtype)[:, None]  # [b, 1]
        mean = self.buf.sum(1) / n
        full = (self.count >= self.window)[:, None]
        self.best = torch.where(full, torch.maximum(self.best, mean), self.best)
        return torch.where(full, self.best, mean)

    def select(self, idx: torch.Tensor) -> RollingMax:
        return RollingMax(self.buf[idx], self.count[idx], self.best[idx], self.window)

    def merge(self, other: RollingMax) -> RollingMax:
        return RollingMax(torch.cat([self.buf, other.buf]), torch.cat([self.count, other.count]),
                           torch.cat([self.best, other.best]), self.window)


@dataclass
class WindowStream:
    """A window head's streaming state: its `RollingMax` of per-token logits."""

    head: WindowHead
    layers: list[int]
    state: RollingMax

    def update(self, cache: dict) -> torch.Tensor:
        z = self.head.token_logits({li: cache[tap_name(li)][:, -1:] for li in self.layers})
        return self.state.update(z[:, 0]) + self.head.net.bias

    def select(self, idx: torch.Tensor) -> WindowStream:
        return WindowStream(self.head, self.layers, self.state.select(idx))

    def merge(self, other: WindowStream) -> WindowStream:
        return WindowStream(self.head, self.layers, self.state.merge(other.state))


class WindowPrompt:
    """A window head over one prompt read in chunks: its `PromptWindow` of per-token logits."""

    def __init__(self, head: WindowHead, layers: list[int]):
        self.head, self.layers, self.window = head, list(layers), PromptWindow(head.window)
        self.taps = [tap_name(li) for li in self.layers]

    def extend(self, cache: dict) -> int:
        with torch.no_grad():
            z = self.head.token_logits({li: cache[tap_name(li)] for li in self.layers})
        self.window.extend(z[0])  # [q, heads]
        return z.shape[1]

    def logits(self) -> torch.Tensor:
        return self.window.best[None] + self.head.net.bias


class Window:
    arch = "window"
    head_type = WindowHead
    reads_tokens = True
    cached_features = False  # trains on its own per-token states (`dsa.guards.window_train.train_window`)
    vllm_reads = "token_logits"

    def build(self, d_model: int, n_heads: int, cfg: dict) -> WindowHead:
        return WindowHead(d_model, n_heads, cfg["layers"], cfg.get("window", 16))

    def layers(self, cfg: dict) -> list[int]:
        return cfg["layers"]

    def tap_needs(self, cfg: dict, window: int) -> dict[str, dict]:
        # every token's states (the head projects them to one logit each)
        return {tap_name(li): {"mean": False, "last": False, "window": 0, "full": True} for li in cfg["layers"]}

    def inputs(self, cfg: dict, cache: dict, mask: torch.Tensor, window: int) -> GuardInput:
        return GuardInput(states={li: cache[tap_name(li)] for li in cfg["layers"]}, mask=mask)

    def token_logits(self, head: WindowHead, cfg: dict, cache: dict, mask: torch.Tensor) -> None:
        return None  # a window's score is not a per-token one

    def stream(self, adapter, cache: dict, mask: torch.Tensor) -> WindowStream:
        head, layers = adapter.head, adapter.cfg["layers"]
        z = head.token_logits({li: cache[tap_name(li)] for li in layers})
        return WindowStream(head, layers, RollingMax.start(z, mask, head.window))

    def prompt_state(self, adapter) -> WindowPrompt:
        return WindowPrompt(adapter.head, adapter.cfg["layers"])

    def flops(self, head: WindowHead, seq_len: int) -> float:
        head_f = head.flops_per_token() * seq_len + head.flops_per_sequence()
        return head_f + 4 * head.net.out_features * seq_len  # cumulative sums and the max

    def cached_input(self, feats, idx: list[int], cfg: dict) -> GuardInput:
        raise NotImplementedError("window heads read per-token states, not the cached task features")

    def fit_norm(self, head: WindowHead, feats, cfg: dict) -> None:
        raise NotImplementedError("window heads train by their own recipe (`dsa.guards.window_train`)")

    def fit(self, cfg, train, val, d_model: int):
        raise NotImplementedError("window heads train by their own recipe (`dsa.guards.window_train`)")

    def check(self, cfg) -> None:
        if cfg.data or not cfg.windows or not cfg.weight_decays:
            raise ValueError("arch window trains on a guard task (not --data) with non-empty windows and "
                             "weight_decays")
