"""Policies: a guard's calibrated score in [0, 1] → alignment strength λ, per row.

Every policy is defined around the guard head's stored, calibrated threshold `t` (the score at
which the head flags; `dsa guard train` picks it for a target false-positive rate on validation
data), and every ramp reaches full strength at `t`: a flagged request is always fully aligned,
near-misses below `t` get partial strength.

    step(threshold=t)                λ = 1 if score ≥ t else 0 (the DSA paper)
    linear(threshold=t, width=0.2)   0 below t − width, straight ramp to 1 at t
    sigmoid(threshold=t, width=0.2)  smooth ramp over [t − width, t]: σ at its midpoint, ≥ 0.98 at t
    constant(value)                  the same λ for every row (static alignment)

Every policy is scaled by `max_lambda` and returns exactly 0 for rows it does not align
(so those rows take the base path bit for bit). `make_policy(name, threshold=t, **kw)` picks one
by name. The ramps make λ a function of the score (`reveals_score`), so a server must not show
their λ to clients that may not see scores.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Policy = Callable[[torch.Tensor], torch.Tensor]


def _check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"policy threshold must be a calibrated score in [0, 1], got {threshold}")


def step(threshold: float = 0.5, max_lambda: float = 1.0) -> Policy:
    _check_threshold(threshold)

    def policy(scores: torch.Tensor) -> torch.Tensor:
        return (scores.float() >= threshold).float() * max_lambda

    return policy


def linear(threshold: float = 0.5, width: float = 0.2, max_lambda: float = 1.0) -> Policy:
    _check_threshold(threshold)
    if width <= 0:
        raise ValueError(f"linear policy needs width > 0, got {width}")
    low = threshold - width

    def policy(scores: torch.Tensor) -> torch.Tensor:
        return ((scores.float() - low) / width).clamp(0, 1) * max_lambda

    return policy


def sigmoid(threshold: float = 0.5, width: float = 0.2, floor: float = 0.01,
            max_lambda: float = 1.0) -> Policy:
    """Smooth ramp centred at t − width/2 (σ(4) ≈ 0.98 at t); λ below `floor` is set to 0 so
    clearly benign rows skip the adapter, and λ at or above t is 1."""
    _check_threshold(threshold)
    if width <= 0:
        raise ValueError(f"sigmoid policy needs width > 0, got {width}")
    center, scale = threshold - width / 2, width / 8

    def policy(scores: torch.Tensor) -> torch.Tensor:
        s = scores.float()
        lam = torch.sigmoid((s - center) / scale)
        lam = torch.where(s >= threshold, torch.ones_like(lam), lam)
        return torch.where(lam < floor, torch.zeros_like(lam), lam) * max_lambda

    return policy


def constant(value: float, threshold: float | None = None) -> Policy:
    """The same λ for every row (static alignment); `threshold` is accepted and ignored."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"constant policy needs a value in [0, 1], got {value}")

    def policy(scores: torch.Tensor) -> torch.Tensor:
        return torch.full_like(scores.float(), float(value))

    return policy


POLICIES: dict[str, Callable[..., Policy]] = {
    "step": step, "linear": linear, "sigmoid": sigmoid, "constant": constant,
}


def make_policy(name: str, **kwargs: float) -> Policy:
    """A policy by name (`step`, `linear`, `sigmoid`, `constant`) with its keyword arguments
    (`threshold`: the guard head's calibrated threshold)."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}: expected one of {sorted(POLICIES)}")
    return POLICIES[name](**kwargs)


def reveals_score(policy: Policy | str, threshold: float) -> bool:
    """Whether λ tells more about a score than whether it reaches `threshold` (the guard's flag,
    which `/v1/moderations` gives every client): True for the ramps (`linear`, `sigmoid`), False
    for `step` and `constant`. Decided on scores every 1/1024 and on both sides of `threshold`; a
    policy given by name is built around `threshold`."""
    if isinstance(policy, str):
        policy = make_policy(policy, threshold=threshold)
    t = torch.tensor([threshold], dtype=torch.float32)
    s = torch.cat([torch.linspace(0, 1, 1025), t, torch.nextafter(t, torch.zeros(1))])
    lam, below = policy(s), s < threshold
    return any(bool((part != part[0]).any()) for part in (lam[below], lam[~below]) if part.numel())
