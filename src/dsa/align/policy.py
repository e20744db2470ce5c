"""Policies: guard score in [0, 1] → alignment strength λ, per row.

Factory functions return callables `policy(scores: Tensor[batch]) -> Tensor[batch]`:

    step(threshold=0.5)              λ = 1 if score ≥ threshold else 0 (the DSA paper)
    linear(low=0.2, high=0.8)        0 below `low`, 1 above `high`, straight ramp between
    sigmoid(center=0.5, width=0.05)  λ = σ((score − center) / width)

Every policy is scaled by `max_lambda` and returns exactly 0 for rows it does not align
(so those rows take the base path bit for bit). `make_policy(name, **kw)` picks one by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Policy = Callable[[torch.Tensor], torch.Tensor]


def step(threshold: float = 0.5, max_lambda: float = 1.0) -> Policy:
    def policy(scores: torch.Tensor) -> torch.Tensor:
        return (scores.float() >= threshold).float() * max_lambda

    return policy


def linear(low: float = 0.2, high: float = 0.8, max_lambda: float = 1.0) -> Policy:
    if not high > low:
        raise ValueError(f"linear policy needs high > low, got low={low}, high={high}")

    def policy(scores: torch.Tensor) -> torch.Tensor:
        return ((scores.float() - low) / (high - low)).clamp(0, 1) * max_lambda

    return policy


def sigmoid(center: float = 0.5, width: float = 0.05, floor: float = 0.01,
            max_lambda: float = 1.0) -> Policy:
    """Smooth step; λ below `floor` is set to 0 so clearly benign rows skip the adapter."""
    if width <= 0:
        raise ValueError(f"sigmoid policy needs width > 0, got {width}")

    def policy(scores: torch.Tensor) -> torch.Tensor:
        lam = torch.sigmoid((scores.float() - center) / width)
        return torch.where(lam < floor, torch.zeros_like(lam), lam) * max_lambda

    return policy


def constant(value: float) -> Policy:
    """The same λ for every row (static alignment)."""

    def policy(scores: torch.Tensor) -> torch.Tensor:
        return torch.full_like(scores.float(), float(value))

    return policy


POLICIES: dict[str, Callable[..., Policy]] = {
    "step": step, "linear": linear, "sigmoid": sigmoid, "constant": constant,
}


def make_policy(name: str, **kwargs: float) -> Policy:
    """A policy by name (`step`, `linear`, `sigmoid`, `constant`) with its keyword arguments."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}: expected one of {sorted(POLICIES)}")
    return POLICIES[name](**kwargs)
