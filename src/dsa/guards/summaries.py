"""What guard heads read of one tap: its full states [b, s, d], or a `TapSummary` pooled inside the
tap's hook (mean, last real token, last `window` real tokens), read alike by `pooled` / `windowed`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsa.features import pool


def last_window(h: torch.Tensor, mask: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last `window` real tokens of each row, right-aligned: [b, s, d] -> [b, w, d], mask [b, w].

    Works for left and right padding (real tokens are where mask is 1).
    """
    b = h.shape[0]
    real = mask.bool()
    w = int(min(window, int(real.sum(1).max()))) if b else window
    from_end = real.flip(1).long().cumsum(1).flip(1)  # 1 at each row's last real token, 2 before it, ...
    rows, cols = torch.nonzero(real & (from_end <= w), as_tuple=True)
    at = w - from_end[rows, cols]
    out = h.new_zeros(b, w, h.shape[-1])
    m = torch.zeros(b, w, dtype=torch.long, device=h.device)
    out[rows, at] = h[rows, cols]
    m[rows, at] = 1
    return out, m


@dataclass
class TapSummary:
    """What guard heads read from one tap of a forward, pooled inside the tap's hook so the full
    [b, s, d] states need not be kept: mean and last real token [b, d] (float32), and the last
    `window` real tokens [b, w, d] (float32, right-aligned) with their mask [b, w]."""

    mean: torch.Tensor | None = None
    last: torch.Tensor | None = None
    window: torch.Tensor | None = None
    window_mask: torch.Tensor | None = None


def pooled(value, mask: torch.Tensor, how: str) -> torch.Tensor:
    """`pool` of a tap's full states, or the same pooling read from its `TapSummary`."""
    if isinstance(value, TapSummary):
        return value.mean if how == "mean" else value.last
    return pool(value, mask, how)


def windowed(value, mask: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`last_window` of a tap's full states (as float32), or the same window read from its `TapSummary`."""
    if isinstance(value, TapSummary):
        w = min(window, value.window.shape[1])
        return value.window[:, value.window.shape[1] - w:], value.window_mask[:, value.window_mask.shape[1] - w:]
    return last_window(value.float(), mask, window)


def tap_name(layer: int) -> str:
    """The dotted tap a guard head reads of `layer` (its residual stream after the layer)."""
    return f"layers.{layer}.resid_post"
