"""Blocks scoped to one forward: a LoRA patch at α = λ per row, an empty tap cache, a fresh KV cache."""

from __future__ import annotations

import torch

from dsa.base import Base
from dsa.taps import record_taps


def dynamic_cache(config):
    from transformers import DynamicCache

    return DynamicCache(config=config)


class patch_strength:
    """Within the block a LoRA patch runs at α = λ per row (rows at 0 are the base); 0 after it.
    A no-op without a patch or when every λ is 0."""

    def __init__(self, patch, lam: torch.Tensor):
        self.patch, self.lam = patch, lam

    def __enter__(self):
        if self.patch is not None and bool((self.lam > 0).any()):
            self.patch.set_strength(self.lam.float())
        return self

    def __exit__(self, *exc) -> None:
        if self.patch is not None:
            self.patch.set_strength(0.0)


class null_cache:
    """What `record_taps` gives when no tap is asked for: an empty cache, no hooks."""

    def __enter__(self) -> dict:
        return {}

    def __exit__(self, *exc) -> None:
        return None


def scoped_taps(base: Base, taps: list[str], reduce: dict | None = None):
    """`record_taps` on the base for `taps` (hooks removed on exit); no hooks at all when none."""
    return record_taps(base.model, taps, spec=base.spec, reduce=reduce) if taps else null_cache()
