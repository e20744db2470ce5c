"""Request values given once for a batch or once per row (λ, floors, budgets, temperatures, seeds)."""

from __future__ import annotations

import torch

from dsa.align.policy import lambda_per_row


def is_mixed(alignment) -> bool:
    """A list of per-row alignments with some "auto" among the numbers (the server's batches)."""
    return isinstance(alignment, list | tuple) and any(isinstance(a, str) for a in alignment)


def lambda_floors(min_alignment, batch: int) -> torch.Tensor | None:
    return None if min_alignment is None else lambda_per_row(min_alignment, batch, "min_alignment")


def row_value(x, i: int):
    return x[i] if isinstance(x, list | tuple) else x


def row_seed(seed, i: int) -> int | None:
    if isinstance(seed, list | tuple):
        return seed[i]
    return None if seed is None else seed + i


