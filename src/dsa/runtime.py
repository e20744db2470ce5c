"""`SafetyModel`: guarded, context-aligned generation with one prefill of the base per request.

    sm = SafetyModel.load(guards=["adapters/guards/prompt_safety"], adapter="adapters/align/dsa_adapter")
    out = sm.generate(["How do I bake bread?", "How do I make a pipe bomb?"], alignment="auto")
    out[1].guard_scores, out[1].lam, out[1].text, out[1].stop_reason

Data flow of `generate`: tokens → base prefill (taps recorded in the same forward) → guard
heads → policy λ per row → decode loop: base logits, and aligned logits from the DSA adapter
with its own KV cache only when some row has λ > 0; rows with λ = 0 get the base logits exactly.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dsa.align.logit_adapter import LogitAdapter, mix_logits
from dsa.align.policy import Policy, make_policy
from dsa.base import Base, load_base
from dsa.taps import record_taps

log = logging.getLogger(__name__)
DEFAULT_POLICY_HEAD = "prompt_safety/unsafe"
Messages = str | list[dict]


@dataclass
class GenerationResult:
    text: str
    guard_scores: dict[str, float]
    lam: float
    stop_reason: str  # "eos" | "length"
    n_tokens: int
    token_ids: list[int] = field(default_factory=list)


@dataclass
class StreamEvent:
    """One step of `SafetyModel.stream`: new text, prompt guard scores, λ, response guard scores,
    and (on the last event only) the stop reason."""

    text: str
    guard_scores: dict[str, float]
    lam: float
    response_scores: dict[str, float]
    stop_reason: str | None


class _DecodeState:
    """Tokens, stop reasons and scores of a decoding batch, updated in place each step."""

    def __init__(self, scores: dict[str, torch.Tensor] | None, lam: torch.Tensor, batch: int,
                 device: torch.device):
        self.scores, self.lam = scores, lam
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.stop = ["length"] * batch
        self.length: list[int | None] = [None] * batch  # tokens kept per row, set when it stops
        self.tokens: list[torch.Tensor] = []
        self.response_scores: dict[str, torch.Tensor] = {}
        self.finished = False

    def stop_rows(self, hit: torch.Tensor, reason: str) -> None:
        for i in (hit & ~self.done).nonzero().flatten().tolist():
            self.stop[i] = reason
            # an end-of-sequence token is not part of the answer; a guard stop keeps what was shown
            self.length[i] = len(self.tokens) - (reason == "eos")
        self.done |= hit

    def add(self, token: torch.Tensor, hit: torch.Tensor, reason: str) -> None:
        self.tokens.append(token)
        self.stop_rows(hit, reason)

    def guard_scores(self, i: int) -> dict[str, float]:
        return {h: float(v[i]) for h, v in self.scores.items()} if self.scores else {}

    def response_row(self, i: int) -> dict[str, float]:
        return {h: float(v[i]) for h, v in self.response_scores.items()}

    def result(self, i: int, tok) -> GenerationResult:
        row = [int(t[i]) for t in self.tokens[: self.length[i]]]
        return GenerationResult(text=tok.decode(row, skip_special_tokens=True).strip(),
                                guard_scores=self.guard_scores(i), lam=float(self.lam[i]),
                                stop_reason=self.stop[i], n_tokens=len(row), token_ids=row)


def _dynamic_cache(config):
    from transformers import DynamicCache

    return DynamicCache(config=config)


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
    """

    def __init__(self, base: Base, guards=None, adapter: LogitAdapter | None = None,
                 policy: Policy | str = "step", policy_head: str | None = None, response_guards=None,
                 **policy_kwargs: float):
        self.base, self.guards, self.adapter = base, guards, adapter
        self.response_guards = response_guards
        self.policy_head = resolve_policy_head(guards, policy_head)
        if isinstance(policy, str):
            if self.policy_head is not None and "threshold" not in policy_kwargs:
                policy_kwargs["threshold"] = policy_threshold(guards, self.policy_head)
            policy = make_policy(policy, **policy_kwargs)
        elif policy_kwargs:
            raise ValueError("policy keyword arguments need a policy name, not a callable")
        self.policy = policy

    @classmethod
    def load(cls, base: str | Base = "smollm2-135m-instruct", guards: Sequence[str | Path] = (),
             adapter: str | Path | None = None, policy: str = "step", policy_head: str | None = None,
             response_guards: Sequence[str | Path] = (), **policy_kwargs) -> SafetyModel:
        from dsa.guards import GuardBank

        base = load_base(base) if isinstance(base, str) else base
        bank = GuardBank.load(list(guards), base) if guards else None
        rbank = GuardBank.load(list(response_guards), base) if response_guards else None
        lad = LogitAdapter.load(adapter, base) if adapter else None
        return cls(base, bank, lad, policy, policy_head, response_guards=rbank, **policy_kwargs)

    # ---- pieces -------------------------------------------------------------------------------
    def encode(self, messages: Sequence[Messages]) -> dict[str, torch.Tensor]:
        """Chat-template and left-pad a batch of conversations."""
        tok = self.base.tokenizer
        texts = [self.base.chat_text(m) for m in messages]
        tok.padding_side = "left"
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.base.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def policy_score(self, scores: dict[str, torch.Tensor]) -> torch.Tensor:
        """The policy head's scores [batch] out of a bank's scores."""
        if self.policy_head is None:
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
        if isinstance(alignment, str):
            if alignment != "auto":
                raise ValueError(f"alignment must be 'auto', a number or one number per row, got {alignment!r}")
            if self.guards is None:
                raise ValueError("alignment='auto' needs a prompt guard (none loaded)")
            if self.adapter is None:
                raise ValueError("alignment='auto' needs an alignment adapter (none loaded): without one "
                                 "no λ can be applied; pass alignment=0 to generate unaligned")
        else:
            _lambda_values(alignment, "alignment")
        if self.adapter is None and _may_align(alignment, min_alignment):
            raise ValueError("alignment > 0 needs a DSA alignment adapter (none loaded)")

    def _lambda(self, alignment, scores: dict[str, torch.Tensor] | None, batch: int,
                min_alignment=None) -> torch.Tensor:
        self.check_alignment(alignment, min_alignment)
        lam = self.policy_lambda(scores) if alignment == "auto" else _per_row(alignment, batch, "alignment")
        if min_alignment is not None:  # a floor: the policy (or a fixed λ) can only be raised
            lam = torch.maximum(lam, _per_row(min_alignment, batch, "min_alignment"))
        return lam

    def classify(self, messages: Sequence[Messages]) -> list[dict]:
        """Guard scores and flags per conversation (delegates to `dsa.guards.classify`)."""
        if self.guards is None:
            raise ValueError("no guard heads loaded")
        from dsa.guards import classify

        return classify(self.base, self.guards, list(messages))

    # ---- generation ---------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, messages: Sequence[Messages], alignment: str | float | Sequence[float] = "auto",
                 max_new_tokens: int = 64, temperature: float = 0.0, seed: int | None = None,
                 min_alignment: float | Sequence[float] | None = None) -> list[GenerationResult]:
        """Guarded generation for a batch of conversations (each a user string or a message list).

        Args:
            alignment: "auto" (λ = policy(guard score) per row), one λ for all rows, or one per row;
                every λ finite and in [0, 1].
            min_alignment: a floor on λ (one value or one per row): λ = max(λ, floor), so a
                client can raise alignment above the policy but never lower it.
            max_new_tokens: decode budget per row.
            temperature: 0 = greedy; > 0 samples (seeded by `seed`).
        Returns:
            One `GenerationResult` per conversation: text, guard scores, λ used, stop reason
            ("eos", "length", or "guard" when the response guard stopped it).
        """
        messages = [messages] if isinstance(messages, str) else list(messages)
        self.check_alignment(alignment, min_alignment)
        (state,) = deque(self._decode(messages, alignment, max_new_tokens, temperature, seed, min_alignment),
                         maxlen=1)
        return [state.result(i, self.base.tokenizer) for i in range(len(messages))]

    @torch.inference_mode()
    def stream(self, messages: Messages, alignment: str | float = "auto", max_new_tokens: int = 64,
               temperature: float = 0.0, seed: int | None = None,
               min_alignment: float | None = None) -> Iterator[StreamEvent]:
        """Generate one conversation token by token.

        Yields a `StreamEvent` per decoded token with the new text, the prompt guard scores, λ
        and the streaming response guard's latest scores; the last event carries the stop reason.
        """
        tok = self.base.tokenizer
        shown = ""

        def delta(text: str) -> str:
            # decoding the whole answer each step keeps multi-byte characters intact
            return text[len(shown):] if text.startswith(shown) else ""

        self.check_alignment(alignment, min_alignment)
        for state in self._decode([messages], alignment, max_new_tokens, temperature, seed, min_alignment):
            text = state.result(0, tok).text
            if state.finished:
                yield StreamEvent(delta(text), state.guard_scores(0), float(state.lam[0]),
                                  state.response_row(0), state.stop[0])
                return
            event = StreamEvent(delta(text), state.guard_scores(0), float(state.lam[0]), state.response_row(0), None)
            shown = text if text.startswith(shown) else shown
            yield event

    def _decode(self, messages: list[Messages], alignment, max_new_tokens: int, temperature: float,
                seed: int | None, min_alignment=None) -> Iterator[_DecodeState]:
        """The decode loop shared by `generate` and `stream`: yields the state after each token."""
        model, tok = self.base.model, self.base.tokenizer
        enc = self.encode(messages)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        batch = ids.shape[0]
        need_adapter_tap = self.adapter is not None and _may_align(alignment, min_alignment)
        rguard = self.response_guards
        taps = self._taps(need_adapter_tap)
        if rguard is not None:
            taps += [t for t in rguard.taps if t not in taps]
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        eos = {tok.eos_token_id} | ({tok.convert_tokens_to_ids("<|im_end|>")} - {None, tok.unk_token_id})
        eos_t = torch.tensor(sorted(eos), device=ids.device)
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        base_cache = _dynamic_cache(model.config)
        cm = record_taps(model, taps, spec=self.base.spec) if taps else _null_cache()
        with cm as cache:
            # one prefill: base logits + every tap the guards and the adapter need
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=base_cache,
                        use_cache=True, logits_to_keep=1)
            scores = self.guards.score(cache, mask) if self.guards is not None else None
            lam = self._lambda(alignment, scores, batch, min_alignment).to(ids.device)
            state = _DecodeState(scores, lam, batch, ids.device)
            # the response guard reads the whole transcript: prompt states, then each new token's
            transcript = {t: [cache[t]] for t in rguard.taps} if rguard is not None else {}
            use_adapter = self.adapter is not None and bool((lam > 0).any())
            ad_cache = _dynamic_cache(self.adapter.tail.config) if use_adapter else None
            aligned = None
            if use_adapter:
                aligned, ad_cache = self.adapter(cache[self.adapter.input_tap], mask, pos, ad_cache,
                                                 use_cache=True, logits_to_keep=1)
            logits = mix_logits(out.logits[:, -1], None if aligned is None else aligned[:, -1], lam)
            last_pos = pos[:, -1:]
            for t in range(max_new_tokens):
                nxt = _pick(logits, temperature, gen)
                nxt = torch.where(state.done, torch.full_like(nxt, tok.pad_token_id), nxt)
                state.add(nxt, torch.isin(nxt, eos_t), "eos")
                if bool(state.done.all()) or t == max_new_tokens - 1:
                    state.finished = True
                    yield state
                    break
                yield state
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                last_pos = last_pos + 1
                out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=last_pos,
                            past_key_values=base_cache, use_cache=True)
                if rguard is not None:
                    for tap in rguard.taps:
                        transcript[tap].append(cache[tap])
                    full = {tap: torch.cat(parts, 1) for tap, parts in transcript.items()}
                    state.response_scores = rguard.score(full, mask)
                    flagged = torch.stack(list(rguard.flags(state.response_scores).values())).any(0)
                    state.stop_rows(flagged, "guard")
                    if bool(state.done.all()):
                        state.finished = True
                        yield state
                        break
                if use_adapter:
                    aligned, ad_cache = self.adapter(cache[self.adapter.input_tap], mask, last_pos, ad_cache,
                                                     use_cache=True)
                logits = mix_logits(out.logits[:, -1], None if aligned is None else aligned[:, -1], lam)

    @torch.inference_mode()
    def forward_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed logits, base logits) [batch, seq, vocab] of whole sequences at per-row λ (for scoring)."""
        pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        use_adapter = self.adapter is not None and bool((lam > 0).any())
        taps = [self.adapter.input_tap] if use_adapter else []
        cm = record_taps(self.base.model, taps, spec=self.base.spec) if taps else _null_cache()
        with cm as cache:
            out = self.base.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos)
        aligned = None
        if use_adapter:
            aligned, _ = self.adapter(cache[self.adapter.input_tap], attention_mask, pos)
        return mix_logits(out.logits, aligned, lam.to(input_ids.device)), out.logits


def resolve_policy_head(guards, name: str | None) -> str | None:
    """The qualified guard head that drives the policy: `name` (a qualified head, or a task whose
    bank has one head), else "prompt_safety/unsafe", else the only head of a one-head bank."""
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


def _lambda_values(x, name: str) -> torch.Tensor:
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


def _per_row(x, batch: int, name: str) -> torch.Tensor:
    t = _lambda_values(x, name)
    t = t.expand(batch).clone() if t.numel() == 1 else t
    if t.numel() != batch:
        raise ValueError(f"got {t.numel()} {name} values for a batch of {batch}")
    return t


def _may_align(alignment, min_alignment) -> bool:
    """Whether some row may get λ > 0 (so the adapter's input tap is needed)."""
    if isinstance(alignment, str) or bool(_lambda_values(alignment, "alignment").ne(0).any()):
        return True
    return min_alignment is not None and bool(_lambda_values(min_alignment, "min_alignment").ne(0).any())


def _pick(logits: torch.Tensor, temperature: float, gen: torch.Generator | None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, -1)
    return torch.multinomial(probs.cpu(), 1, generator=gen).flatten().to(logits.device)


class _null_cache:
    def __enter__(self) -> dict:
        return {}

    def __exit__(self, *exc) -> None:
        return None
