"""λ per row of a request: the alignment asked for (one value, one per row, or "auto" rows mixed
with numbers) checked against the model, the policy's λ on the "auto" rows, the floors, and the
unvalidated-language rule, by `dsa.align.policy.decide_lambdas`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from dsa.align.policy import decide_lambdas, lambda_per_row
from dsa.runtime.per_row import is_mixed, lambda_floors

if TYPE_CHECKING:
    from dsa.runtime.safety_model import Messages, SafetyModel


def row_lambdas(sm: SafetyModel, messages: list[Messages], alignment, min_alignment, scores,
                device: torch.device) -> tuple[torch.Tensor, list[dict]]:
    """(λ per row [b], each row's language check) once the prompt guard has read the prompts
    (shared by `prefill` and `dsa.chunked_prefill`)."""
    found = language_rule(sm, messages, alignment)
    lam = request_lambdas(sm, alignment, scores, len(messages), min_alignment,
                          language_flagged=[bool(f) and f["applied"] for f in found])
    return lam.to(device), found


def request_lambdas(sm: SafetyModel, alignment, scores: dict[str, torch.Tensor] | None, batch: int, min_alignment=None,
                    language_flagged: Sequence[bool] | None = None) -> torch.Tensor:
    """λ [batch] by `dsa.align.policy.decide_lambdas`, once the request is checked here
    (`SafetyModel._lambda`).

    `alignment` is "auto", one λ, one per row, or (the server's batches) a list mixing "auto"
    and numbers; `min_alignment` a floor (one value or one per row); `language_flagged` the
    rows the unvalidated-language rule flags."""
    if is_mixed(alignment):
        if len(alignment) != batch:
            raise ValueError(f"got {len(alignment)} alignment values for a batch of {batch}")
        floors = lambda_floors(min_alignment, batch)
        for a, f in zip(alignment, floors.tolist() if floors is not None else [None] * batch, strict=True):
            sm.check_alignment(a, f)
        rows = list(alignment)
    else:
        sm.check_alignment(alignment, min_alignment)
        rows = (["auto"] * batch if isinstance(alignment, str)
                else lambda_per_row(alignment, batch, "alignment").tolist())
        floors = lambda_floors(min_alignment, batch)
    policy = sm.policy_lambda(scores) if "auto" in rows else None
    flagged = sm.flagged_lambda if language_flagged is not None and any(language_flagged) else None
    return decide_lambdas(policy, rows, floors, can_align=sm.can_align, language_flagged=language_flagged,
                          flagged_lambda=flagged)


def language_rule(sm: SafetyModel, messages: list[Messages], alignment) -> list[dict]:
    """The language check of each row. The rule applies to "auto" rows only (`decide_lambda`
    raises their λ to the flagged λ); rows with a fixed λ (an override) are reported, not changed."""
    found = sm.check_languages(messages)
    rows = alignment if isinstance(alignment, list | tuple) else [alignment] * len(messages)
    for f, a in zip(found, rows, strict=True):
        if f:
            f["applied"] = f["applied"] and a == "auto"
    return found
