"""The server's rule for prompts in a language the prompt guard was not validated on.

    rule = LanguageRule.for_model(sm, config)   # None for a model without guard heads
    found = rule.check(messages)                 # the "language" entry of the response's dsa block

"flag" (default): a request whose alignment the guard policy decides gets at least the λ of a
flagged prompt (a floor, so both engines honour it; the HF runtime applies the same rule itself).
"refuse": the server answers `REFUSAL` without generating (finish_reason "content_filter").
"allow": nothing changes. Keys with a fixed λ ("override") are reported, not changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dsa.guards.language import check, check_rule, guard_languages, user_text

REFUSAL = ("I can't answer this request: this server's safety checks are not validated for its "
           "language. Please ask in a supported language ({languages}).")


@dataclass(frozen=True)
class LanguageRule:
    rule: str  # "flag" | "refuse" | "allow"
    validated: tuple[str, ...]
    flagged_lambda: float | None  # λ of a flagged prompt; None without a policy (unguarded)

    @classmethod
    def for_model(cls, sm, config) -> LanguageRule | None:
        """The rule `config.unvalidated_language` sets (None: the model's own, else "flag"), made
        the model's too where it applies one itself; None when the model has no guard heads."""
        rule = check_rule(config.unvalidated_language or getattr(sm, "unvalidated_language", "flag"))
        if hasattr(sm, "unvalidated_language"):
            sm.unvalidated_language = rule  # the server's setting governs the model it serves
        if sm.guards is None:
            return None
        return cls(rule, guard_languages(sm.guards, sm.policy_head), _flagged_lambda(sm))

    def check(self, messages: Sequence[dict], mode: str, show: bool) -> dict:
        """The language of the user messages and what the rule does with it for a request whose
        λ comes from `mode` ("auto" / "floor": the policy; "override" / "unguarded": fixed).
        Confidence and reason only when `show` (like guard scores, they help tune an evasion)."""
        found = check(user_text(messages), self.validated)
        applies = found.unvalidated and self.rule != "allow"
        if self.rule == "flag":
            applies = applies and mode in ("auto", "floor") and self.flagged_lambda is not None
        out = {"lang": found.lang, "unvalidated": found.unvalidated, "rule": self.rule, "applied": applies}
        if show:
            out |= {"confidence": round(found.confidence, 4), "reason": found.reason}
        return out

    def refusal(self) -> str:
        return REFUSAL.format(languages=", ".join(self.validated))

    def health(self) -> dict:
        return {"validated_languages": list(self.validated), "unvalidated_language": self.rule}


def _flagged_lambda(sm) -> float | None:
    """λ the served policy gives a prompt its head flags outright (score 1.0)."""
    if sm.adapter is None or sm.policy_head is None:
        return None
    from dsa.align.policy import flagged_lambda, make_policy
    from dsa.runtime import policy_threshold

    policy = sm.policy
    if isinstance(policy, str):  # an engine that keeps the policy's name (vLLM) builds it as it does
        policy = make_policy(policy, threshold=policy_threshold(sm.guards, sm.policy_head))
    return flagged_lambda(policy)
