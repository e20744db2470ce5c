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

The λ of a request row is decided here too, and only here (the HF runtime, the vLLM model and the
HTTP app all call these):

    check_alignment_request(...)       is the request valid for this model (ValueError otherwise)
    request_alignment(value, exact=, guarded=)   a caller's value → (alignment, floor, mode)
    decide_lambda(policy_λ, alignment, floor)    one row's λ; `decide_lambdas` for a batch

    alignment "auto"        λ = the policy's λ (of the guard score)
    alignment a number      λ = that number exactly (an override)
    floor                   λ = max(λ, floor): a floor only ever raises λ
    language rule           an "auto" row whose prompt is in a language the guard was not
                            validated on gets at least `flagged_lambda` (a fixed λ is left alone)
    no adapter              λ = 0 (nothing can apply it; `check_alignment_request` refuses λ > 0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

Policy = Callable[[torch.Tensor], torch.Tensor]
Alignment = str | float  # "auto" (the policy decides) or a fixed λ in [0, 1]


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


def flagged_lambda(policy: Policy) -> float:
    """λ a policy gives a prompt its head flags outright (score 1.0)."""
    return float(policy(torch.tensor([1.0]))[0])


# ---- the λ of a request row ---------------------------------------------------------------------
class AlignmentRequest(NamedTuple):
    """What a caller's requested value means for a row: `alignment` ("auto" or a fixed λ), the
    `floor` on λ (None: none) and the `mode` a server reports ("auto", "floor", "override",
    "unguarded")."""

    alignment: Alignment
    floor: float | None
    mode: str


def request_alignment(value: Alignment | None, *, exact: bool, guarded: bool) -> AlignmentRequest:
    """A caller's requested λ (`value`: None or "auto" for none) as (alignment, floor, mode), failing
    closed: where a guard policy decides (`guarded`), a number is a floor on the policy's λ (it can
    only make answers safer) unless `exact` (an API key with the "override" permission, or an
    engine request marked exact on an engine that allows it), which sets λ to it. Without a guard
    policy λ is the value asked (0 when none).

    Returns:
        `AlignmentRequest`: "auto" → ("auto", None, "auto"); exact → (value, None, "override");
        guarded → ("auto", value, "floor"); otherwise (value or 0.0, None, "unguarded").
    """
    if value is None or value == "auto":
        return AlignmentRequest("auto", None, "auto") if guarded else AlignmentRequest(0.0, None, "unguarded")
    if exact:
        return AlignmentRequest(float(value), None, "override")
    if guarded:
        return AlignmentRequest("auto", float(value), "floor")
    return AlignmentRequest(float(value), None, "unguarded")


def effective_floor(alignment: Alignment, floor: float | None = None, *, language_flagged: bool = False,
                    flagged_lambda: float | None = None) -> float:
    """The floor on a row's λ: `floor` (0 when None), raised to `flagged_lambda` for an "auto" row
    the unvalidated-language rule flags. A fixed λ (an override) is not raised."""
    low = 0.0 if floor is None else float(floor)
    if language_flagged and alignment == "auto":
        if flagged_lambda is None:
            raise ValueError("language_flagged needs flagged_lambda (the policy's λ at score 1.0)")
        low = max(low, float(flagged_lambda))
    return low


def decide_lambda(policy_lambda: float | None, alignment: Alignment = "auto", floor: float | None = None, *,
                  can_align: bool = True, language_flagged: bool = False,
                  flagged_lambda: float | None = None) -> float:
    """λ of one request row, from values `check_alignment_request` has accepted.

    Args:
        policy_lambda: the policy's λ for the row's guard score (None when no row is "auto").
        alignment: "auto" (λ = `policy_lambda`) or a fixed λ (used exactly).
        floor: λ is at least this (None: 0); a floor never lowers λ.
        can_align: whether an alignment adapter can apply λ; without one λ is 0.
        language_flagged: the row's prompt is in a language the guard was not validated on and
            the rule flags it: an "auto" row gets at least `flagged_lambda`.
    Returns:
        λ in [0, 1].
    """
    if not can_align:
        return 0.0
    if isinstance(alignment, str):
        if alignment != "auto":
            raise ValueError(f"alignment must be 'auto' or a number, got {alignment!r}")
        if policy_lambda is None:
            raise ValueError("alignment='auto' needs the policy's λ")
        lam = float(policy_lambda)
    else:
        lam = float(alignment)
    return max(lam, effective_floor(alignment, floor, language_flagged=language_flagged,
                                    flagged_lambda=flagged_lambda))


def decide_lambdas(policy_lambda: torch.Tensor | Sequence[float] | None, alignment: Sequence[Alignment],
                   floor: torch.Tensor | Sequence[float | None] | None = None, *, can_align: bool = True,
                   language_flagged: Sequence[bool] | None = None,
                   flagged_lambda: float | None = None) -> torch.Tensor:
    """`decide_lambda` for each row of a batch: λ [batch] float32. Every argument but the
    scalars has one entry per row (`policy_lambda` may be None when no row is "auto")."""
    n = len(alignment)
    policy = [None] * n if policy_lambda is None else [float(x) for x in policy_lambda]
    floors = [None] * n if floor is None else [None if x is None else float(x) for x in floor]
    flags = [False] * n if language_flagged is None else list(language_flagged)
    if not len(policy) == len(floors) == len(flags) == n:
        raise ValueError(f"decide_lambdas needs one value per row: {len(policy)} policy λ, {len(floors)} "
                         f"floors, {len(flags)} language flags for {n} rows")
    return torch.tensor([decide_lambda(policy[i], alignment[i], floors[i], can_align=can_align,
                                       language_flagged=flags[i], flagged_lambda=flagged_lambda)
                         for i in range(n)], dtype=torch.float32)


# ---- validation ---------------------------------------------------------------------------------
def check_alignment_request(alignment, min_alignment, *, guarded: bool, can_align: bool) -> None:
    """Raise ValueError unless a model with (`guarded`: a prompt guard, `can_align`: an alignment
    adapter) can serve this alignment request ("auto", one λ or one per row) and floor
    (shared by the HF runtime and the vLLM engine)."""
    if isinstance(alignment, str):
        if alignment != "auto":
            raise ValueError(f"alignment must be 'auto', a number or one number per row, got {alignment!r}")
        if not guarded:
            raise ValueError("alignment='auto' needs a prompt guard (none loaded)")
        if not can_align:
            raise ValueError("alignment='auto' needs an alignment adapter (none loaded): without one "
                             "no λ can be applied; pass alignment=0 to generate unaligned")
    else:
        lambda_values(alignment, "alignment")
    if not can_align and may_align(alignment, min_alignment):
        raise ValueError("alignment > 0 needs a DSA alignment adapter (none loaded)")


def lambda_values(x, name: str) -> torch.Tensor:
    """λ values as a flat float tensor; each must be a finite number in [0, 1]."""
    if isinstance(x, bool) or (isinstance(x, Sequence) and any(isinstance(v, bool) for v in x)):
        raise ValueError(f"{name} must be a number in [0, 1], not a boolean")
    try:
        t = torch.as_tensor(x, dtype=torch.float32).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be 'auto', a number in [0, 1] or one number per row, got {x!r}") from None
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or bool((t > 1).any()):
        raise ValueError(f"{name} must be finite and in [0, 1], got {x!r}")
    return t


def lambda_per_row(x, batch: int, name: str) -> torch.Tensor:
    """`lambda_values` of one value or one per row, as [batch]."""
    t = lambda_values(x, name)
    t = t.expand(batch).clone() if t.numel() == 1 else t
    if t.numel() != batch:
        raise ValueError(f"got {t.numel()} {name} values for a batch of {batch}")
    return t


def may_align(alignment, min_alignment) -> bool:
    """Whether some row may get λ > 0 (so the adapter's input tap is needed)."""
    if isinstance(alignment, str) or bool(lambda_values(alignment, "alignment").ne(0).any()):
        return True
    return min_alignment is not None and bool(lambda_values(min_alignment, "min_alignment").ne(0).any())
