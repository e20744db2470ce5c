"""Which guard head drives the policy, and the calibrated threshold the policy is built around."""

from __future__ import annotations

DEFAULT_POLICY_HEAD = "prompt_safety/unsafe"


def resolve_policy_head(guards, name: str | None, required: bool = True) -> str | None:
    """The qualified guard head that drives the policy: `name` (a qualified head, or a task whose
    bank has one head), else "prompt_safety/unsafe", else the only head of a one-head bank; with
    several other heads it is an error, or None when not `required` (nothing to switch on)."""
    if guards is None:
        if name is not None:
            raise ValueError(f"policy_head={name!r} given but no guard heads are loaded")
        return None
    heads = list(guards.heads)
    if name is None:
        if DEFAULT_POLICY_HEAD in heads:
            return DEFAULT_POLICY_HEAD
        if len(heads) == 1:
            return heads[0]
        if not required:
            return None
        raise ValueError(f"several guard heads loaded and none is {DEFAULT_POLICY_HEAD!r}: pass "
                         f"policy_head= one of {heads}")
    if name in heads:
        return name
    of_task = [h for h in heads if h.split("/")[0] == name]
    if len(of_task) == 1:
        return of_task[0]
    raise ValueError(f"policy head {name!r} is not loaded: expected one of {heads}")


def policy_threshold(guards, head: str) -> float:
    """The stored calibrated threshold of `head` (0.5 for banks that store none)."""
    thresholds = getattr(guards, "thresholds", None) or {}
    return float(thresholds.get(head, 0.5))

