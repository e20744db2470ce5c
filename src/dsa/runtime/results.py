"""What `SafetyModel.generate` returns per conversation and what `SafetyModel.stream` yields per step."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenerationResult:
    text: str
    guard_scores: dict[str, float]
    lam: float
    stop_reason: str  # "eos" | "length"
    n_tokens: int
    token_ids: list[int] = field(default_factory=list)
    response_scores: dict[str, float] = field(default_factory=dict)
    language: dict = field(default_factory=dict)  # `SafetyModel.check_languages` for this prompt


@dataclass
class StreamEvent:
    """One step of `SafetyModel.stream`: new text, prompt guard scores, λ, response guard scores,
    and (on the last event only) the stop reason."""

    text: str
    guard_scores: dict[str, float]
    lam: float
    response_scores: dict[str, float]
    stop_reason: str | None
    language: dict = field(default_factory=dict)

