"""`SafetyModel`: the facade for guarded, context-aligned generation with one prefill of the base per request.

    sm = SafetyModel.load(guards=["adapters/guards/prompt_safety"], adapter="adapters/align/dsa_adapter")
    out = sm.generate(["How do I bake bread?", "How do I make a pipe bomb?"], alignment="auto")
    out[1].guard_scores, out[1].lam, out[1].text, out[1].stop_reason

Data flow of `generate`: tokens → base prefill (taps recorded in the same forward) → guard
heads → λ per row (`dsa.align.policy.decide_lambda`) → decode loop: base logits, and aligned logits from the DSA adapter
run on the rows with λ > 0 only (its own KV cache holds just those rows, `DecodeBatch.ad_rows`); rows with
λ = 0 never enter the adapter and get the base logits exactly.

The steps live beside it: `prefill` (the first forward), `row_lambdas` (λ per row), `decode_loop`
(one token per step), `per_row` and `scopes` (their small parts), `results` and `policy_head`.

Languages the guard was not validated on fail closed (`unvalidated_language=`, `dsa.guards.language`):
"flag" gives an "auto" row whose user messages are in such a language at least the λ of a
flagged prompt (the policy at score 1.0); "refuse" ends it at prefill, unanswered (stop reason
"unvalidated_language"); "allow" changes nothing. Every result says what was found (`language`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from dsa.align.logit_adapter import LogitAdapter, mix_logits
from dsa.align.policy import (
    Policy,
    check_alignment_request,
    flagged_lambda,
    make_policy,
)
from dsa.base import Base, load_base
from dsa.decoding import DecodeBatch, IncrementalDetokenizer
from dsa.features.text import pad_left, render_input, tokenize
from dsa.guards.language import check as check_language
from dsa.guards.language import check_rule, guard_languages, user_text
from dsa.guards.streaming import stream_rules, uncalibrated_heads
from dsa.runtime import decode_loop, row_lambdas
from dsa.runtime import prefill as prefill_step
from dsa.runtime.decode_loop import end_of_turn_ids
from dsa.runtime.per_row import row_value
from dsa.runtime.policy_head import DEFAULT_POLICY_HEAD, policy_threshold, resolve_policy_head
from dsa.runtime.results import GenerationResult, StreamEvent
from dsa.runtime.scopes import null_cache, patch_strength
from dsa.taps import record_taps

log = logging.getLogger(__name__)
Messages = str | list[dict]


class SafetyModel:
    """A base LM with guard heads, a policy and an optional DSA alignment adapter.

    Args:
        base: the frozen base.
        guards: a guard bank with `.taps`, `.heads`, `.thresholds`, `.score(cache, attention_mask)`
            (see `dsa.guards.GuardBank`), or None (then `alignment="auto"` is an error).
        adapter: a `LogitAdapter` giving the aligned logits, or None (then λ > 0 is an error).
        policy: score → λ callable, or a policy name (`dsa.align.policy.POLICIES`) built around
            the policy head's stored calibrated threshold (default: "step" at that threshold).
        policy_head: the qualified guard head whose score drives the policy (default:
            "prompt_safety/unsafe", or the only head of a one-head bank).
        response_guards: a guard bank read on the growing transcript at every decoded token
            (streaming moderation from the taps the decode step records anyway); a flag stops
            that row with stop reason "guard".
        unvalidated_language: what an "auto" row in a language the prompt guard was not validated
            on gets: "flag" (λ of a flagged prompt), "refuse" (no answer) or "allow" (the policy).
    """

    def __init__(self, base: Base, guards=None, adapter: LogitAdapter | None = None,
                 policy: Policy | str = "step", policy_head: str | None = None, response_guards=None,
                 patch=None, unvalidated_language: str = "flag", **policy_kwargs: float):
        if adapter is not None and patch is not None:
            raise ValueError("give one alignment route: a DSA adapter or a LoRA patch, not both")
        self.base, self.guards, self.adapter, self.patch = base, guards, adapter, patch
        self.response_guards = response_guards
        if response_guards is not None and uncalibrated_heads(response_guards):
            log.warning("response guard heads %s have no streaming stop rule: every token is read against the "
                        "whole-answer threshold, which stops safe answers early; calibrate them with "
                        "`dsa guard calibrate-stream ADAPTER`", uncalibrated_heads(response_guards))
        # a bank of several heads without the default one needs policy_head= only when there is
        # something for the policy to switch on (classify-only use needs no policy)
        self.policy_head = resolve_policy_head(guards, policy_head, required=adapter is not None or patch is not None)
        if isinstance(policy, str):
            if self.policy_head is not None and "threshold" not in policy_kwargs:
                policy_kwargs["threshold"] = policy_threshold(guards, self.policy_head)
            policy = make_policy(policy, **policy_kwargs)
        elif policy_kwargs:
            raise ValueError("policy keyword arguments need a policy name, not a callable")
        self.policy = policy
        self.unvalidated_language = check_rule(unvalidated_language)

    @classmethod
    def load(cls, base: str | Base = "smollm2-135m-instruct", guards: Sequence[str | Path] = (),
             adapter: str | Path | None = None, policy: str = "step", policy_head: str | None = None,
             response_guards: Sequence[str | Path] = (), unvalidated_language: str = "flag",
             **policy_kwargs) -> SafetyModel:
        from dsa.guards import GuardBank

        base = load_base(base) if isinstance(base, str) else base
        bank = GuardBank.load(list(guards), base) if guards else None
        rbank = GuardBank.load(list(response_guards), base) if response_guards else None
        lad = patch = None
        if adapter and _adapter_kind(adapter) == "lora_patch":
            from dsa.align.lora import load_lora_patch

            patch = load_lora_patch(adapter, base.model, base.fingerprint)
            patch.set_strength(0.0)
            log.warning("LoRA patch %s applied to the base in place (strength 0 except on aligned rows); "
                        "sm.patch.unpatch() restores the base", adapter)
        elif adapter:
            lad = LogitAdapter.load(adapter, base)
        return cls(base, bank, lad, policy, policy_head, response_guards=rbank, patch=patch,
                   unvalidated_language=unvalidated_language, **policy_kwargs)

    @property
    def can_align(self) -> bool:
        """Whether λ > 0 can be applied: a DSA adapter (logit mixing) or a LoRA patch (α = λ per row)."""
        return self.adapter is not None or self.patch is not None

    # ---- pieces -------------------------------------------------------------------------------
    def encode(self, messages: Sequence[Messages]) -> dict[str, torch.Tensor]:
        """Chat-template and left-pad a batch of conversations. Rendered by the guards' own
        `render_input` (with the generation prompt) but not truncated: generation reads the whole
        prompt, and `prefill.prompt_scores` rescores a prompt longer than the guard's `max_length`."""
        texts = [render_input(self.base, m, add_generation_prompt=True) for m in messages]
        ids, mask = pad_left(tokenize(self.base, texts, None), self.base.tokenizer.pad_token_id)
        return {"input_ids": ids.to(self.base.device), "attention_mask": mask.to(self.base.device)}

    def policy_score(self, scores: dict[str, torch.Tensor]) -> torch.Tensor:
        """The policy head's scores [batch] out of a bank's scores."""
        if self.policy_head is None:
            if self.guards is not None:
                raise ValueError(f"several guard heads loaded and none is {DEFAULT_POLICY_HEAD!r}: pass "
                                 f"policy_head= one of {list(self.guards.heads)}")
            raise ValueError("no guard heads loaded: there is no policy score")
        return scores[self.policy_head]

    def policy_lambda(self, scores: dict[str, torch.Tensor]) -> torch.Tensor:
        """λ [batch] the policy gives for a bank's scores (what `alignment="auto"` applies)."""
        return self.policy(self.policy_score(scores).float().cpu())

    def _taps(self, need_adapter: bool) -> list[str]:
        taps = list(self.guards.taps) if self.guards is not None else []
        if need_adapter and self.adapter is not None and self.adapter.input_tap not in taps:
            taps.append(self.adapter.input_tap)
        return taps

    def check_alignment(self, alignment, min_alignment=None) -> None:
        """Raise ValueError unless `alignment` / `min_alignment` can be served by this model."""
        check_alignment_request(alignment, min_alignment, guarded=self.guards is not None,
                                can_align=self.can_align)

    def _lambda(self, alignment, scores: dict[str, torch.Tensor] | None, batch: int, min_alignment=None,
                language_flagged: Sequence[bool] | None = None) -> torch.Tensor:
        """λ [batch] for a request (`dsa.runtime.row_lambdas.request_lambdas`)."""
        return row_lambdas.request_lambdas(self, alignment, scores, batch, min_alignment, language_flagged)

    def classify(self, messages: Sequence[Messages]) -> list[dict]:
        """Guard scores and flags per conversation (delegates to `dsa.guards.classify`), and the
        language check of each (`check_languages`)."""
        if self.guards is None:
            raise ValueError("no guard heads loaded")
        from dsa.guards import classify

        messages = list(messages)
        out = classify(self.base, self.guards, messages)
        for r, lang in zip(out, self.check_languages(messages), strict=True):
            r["language"] = lang
        return out

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages the policy head's guard was validated on (its adapter's `languages`)."""
        return guard_languages(self.guards, self.policy_head)

    @property
    def flagged_lambda(self) -> float:
        """λ the policy gives a prompt the policy head flags outright (score 1.0)."""
        return flagged_lambda(self.policy)

    def check_languages(self, messages: Sequence[Messages]) -> list[dict]:
        """Per conversation: the language found in its user messages (`dsa.guards.language.check`)
        against `languages`, the rule, and whether the rule applies (unvalidated, rule not "allow")."""
        if self.guards is None:
            return [{} for _ in messages]
        out = []
        for m in messages:
            found = check_language(user_text(m), self.languages).as_dict()
            applies = found["unvalidated"] and self.unvalidated_language != "allow"
            out.append(found | {"rule": self.unvalidated_language, "applied": applies})
        return out

    # ---- generation: scoped steps -------------------------------------------------------------
    # Consecutive response-guard flags that stop a row: None = each head's stored stop rule
    # (`GuardBank.stream_rules`, calibrated on answer prefixes); a number overrides every head's
    # debounce. Flagged tokens are held back meanwhile and released only if a token no head flags
    # follows, so a flagged token is never emitted.
    response_debounce: int | None = None

    @property
    def response_rules(self) -> dict:
        """{response head: `StreamRule`} applied while decoding (with the `response_debounce` override)."""
        rules = stream_rules(self.response_guards) if self.response_guards is not None else {}
        if self.response_debounce is None:
            return rules
        return {h: replace(r, debounce=max(1, int(self.response_debounce))) for h, r in rules.items()}

    @torch.inference_mode()
    def generate(self, messages: Sequence[Messages], alignment: str | float | Sequence[float] = "auto",
                 max_new_tokens: int = 64, temperature: float = 0.0, seed: int | None = None,
                 min_alignment: float | Sequence[float] | None = None,
                 on_step: Callable[[int], None] | None = None) -> list[GenerationResult]:
        """Guarded generation for a batch of conversations (each a user string or a message list).

        Args:
            alignment: "auto" (λ = policy(guard score) per row), one λ for all rows, or one per row;
                every λ finite and in [0, 1].
            min_alignment: a floor on λ (one value or one per row): λ = max(λ, floor), so a
                client can raise alignment above the policy but never lower it.
            max_new_tokens: decode budget per row.
            temperature: 0 = greedy; > 0 samples (row i seeded by `seed + i`).
            on_step: called after every decode step with the number of steps done (progress).
        Returns:
            One `GenerationResult` per conversation: text, guard scores, λ used, stop reason
            ("eos", "length", or "guard" when the response guard stopped it).
        """
        messages = [messages] if isinstance(messages, str) else list(messages)
        self.check_alignment(alignment, min_alignment)
        batch = self.prefill(messages, alignment, max_new_tokens, temperature, seed, min_alignment)
        step = 0
        while not batch.finished:
            self.decode_step(batch)
            step += 1
            if on_step is not None:
                on_step(step)
        return [self.result(batch, i) for i in range(len(batch))]

    @torch.inference_mode()
    def stream(self, messages: Messages, alignment: str | float = "auto", max_new_tokens: int = 64,
               temperature: float = 0.0, seed: int | None = None,
               min_alignment: float | None = None) -> Iterator[StreamEvent]:
        """Generate one conversation token by token.

        Yields a `StreamEvent` per decode step with the new text (detokenised incrementally), the
        prompt guard scores, λ and the response guard's latest scores; the last event carries the
        stop reason. Every step is self-contained (no hook or lock outlives it), so breaking out
        of the loop or dropping the iterator releases everything.
        """
        self.check_alignment(alignment, min_alignment)
        batch = self.prefill([messages], alignment, max_new_tokens, temperature, seed, min_alignment)
        detok = IncrementalDetokenizer(self.base.tokenizer)
        row, lam, scores = batch.rows[0], float(batch.lam[0]), batch.guard_scores(0)
        while not batch.finished:
            self.decode_step(batch)
            yield StreamEvent(detok.push(row.new), scores, lam, dict(row.response), row.stop, row.language)

    def result(self, batch: DecodeBatch, i: int) -> GenerationResult:
        """Row `i` of a batch as a `GenerationResult` (the text decoded once, whole)."""
        row = batch.rows[i]
        return GenerationResult(text=self.base.tokenizer.decode(row.tokens, skip_special_tokens=True).strip(),
                                guard_scores=batch.guard_scores(i), lam=float(batch.lam[i]),
                                stop_reason=row.stop or "length", n_tokens=len(row.tokens),
                                token_ids=list(row.tokens), response_scores=dict(row.response),
                                language=dict(row.language))

    @torch.inference_mode()
    def prefill(self, messages: Sequence[Messages], alignment="auto", max_new_tokens: int | Sequence[int] = 64,
                temperature: float | Sequence[float] = 0.0, seed: int | Sequence[int | None] | None = None,
                min_alignment=None, tags: Sequence | None = None) -> DecodeBatch:
        """One base forward over a batch of prompts: guard scores, λ per row, the adapter's prefill
        of the rows with λ > 0 and the response guard's state. Returns the batch, ready for
        `decode_step` (and for `DecodeBatch.merge` with other prefills of this model).

        Args: as `generate`, and
            alignment: also a list mixing "auto" and numbers, one per row.
            max_new_tokens, temperature, seed: one value, or one per row.
            tags: one caller handle per row, kept on `Row.tag`.
        The taps' hooks live only inside the forward call.
        """
        return prefill_step.prefill(self, messages, alignment, max_new_tokens, temperature, seed, min_alignment, tags)

    def _row_lambdas(self, messages: list[Messages], alignment, min_alignment, scores,
                     device: torch.device) -> tuple[torch.Tensor, list[dict]]:
        """(λ per row [b], each row's language check) once the prompt guard has read the prompts
        (shared by `prefill` and `dsa.chunked_prefill`; `dsa.runtime.row_lambdas`)."""
        return row_lambdas.row_lambdas(self, messages, alignment, min_alignment, scores, device)

    def _new_batch(self, max_new_tokens, temperature, seed, tags, languages: list[dict], mask, last_pos,
                   base_cache, ad_cache, lam, scores, logits, rstate) -> DecodeBatch:
        return prefill_step.new_batch(self, max_new_tokens, temperature, seed, tags, languages, mask, last_pos,
                                      base_cache, ad_cache, lam, scores, logits, rstate)

    @torch.inference_mode()
    def decode_step(self, batch: DecodeBatch) -> None:
        """Pick one token per live row; then, if some row goes on (or the response guard must read
        the token before it is shown), one single-token forward with scoped hooks. Sets each row's
        `new` tokens (what to show now) and `stop` when it finishes."""
        decode_loop.decode_step(self, batch)

    def _eos_ids(self, device: torch.device) -> torch.Tensor:
        return torch.tensor(end_of_turn_ids(self.base), device=device)

    @property
    def context_length(self) -> int | None:
        """The base's context in tokens (prompt + answer), when its config says."""
        return getattr(self.base.model.config, "max_position_embeddings", None)

    def check_context(self, prompt_tokens: Sequence[int], max_new_tokens: int | Sequence[int]) -> None:
        """Raise ValueError when a prompt plus its decode budget does not fit the base's context."""
        limit = self.context_length
        for i, n in enumerate(prompt_tokens):
            need = int(n) + int(row_value(max_new_tokens, i))
            if limit is not None and need > limit:
                raise ValueError(f"prompt of {int(n)} tokens + max_new_tokens {int(row_value(max_new_tokens, i))} "
                                 f"exceeds the model's context of {limit} tokens")

    @torch.inference_mode()
    def forward_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed logits, base logits) [batch, seq, vocab] of whole sequences at per-row λ (for scoring)."""
        pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        use_adapter = self.adapter is not None and bool((lam > 0).any())
        taps = [self.adapter.input_tap] if use_adapter else []
        cm = record_taps(self.base.model, taps, spec=self.base.spec) if taps else null_cache()
        with cm as cache:
            out = self.base.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos)
        aligned = None
        if use_adapter:
            aligned, _ = self.adapter(cache[self.adapter.input_tap], attention_mask, pos)
        if self.patch is not None and bool((lam > 0).any()):
            with patch_strength(self.patch, lam):
                patched = self.base.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos)
            return patched.logits, out.logits
        return mix_logits(out.logits, aligned, lam.to(input_ids.device)), out.logits


def _adapter_kind(path) -> str | None:
    from dsa.adapter_io import read_adapter_meta

    return read_adapter_meta(path).get("kind")

