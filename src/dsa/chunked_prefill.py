"""Chunked prefill: a prompt read by the base a bounded number of tokens at a time.

The server's worker reads long prompts and moderation inputs this way, a slice per loop iteration
between the decode steps of the running rows (a token budget per step, as vLLM's chunked prefill),
so an admitted request delays a running stream by one slice, not by its whole prompt. The KV caches
(the base's and the DSA adapter's) and every guard head's state are carried from chunk to chunk, and
the result is a one-shot `SafetyModel.prefill` of the same prompt: the same guard scores (up to float
rounding), λ and first token (tested); the first token is picked only once the whole prompt is read.

    read = ChunkedPrefill(sm, messages, alignment="auto", max_new_tokens=64)
    while not read.done:
        read.advance(128)          # what 128 tokens at an empty context cost (`read_cost`)
    batch = read.finish()          # a `DecodeBatch` for `decode_step`, as `sm.prefill` returns

A budget is in tokens at an empty context: a token read after p cached ones also attends to them,
so it counts 1 + p / span (`read_cost`). `SPAN` is measured: on this project's CPU (SmolLM2-135M in
bfloat16) a 128-token chunk took 0.55 s at an empty context and 1.5 s after 3,600 tokens, and a
slice's time grows as 1 + p / ~1,100 (by FLOPs alone the span would be 3,072: the CPU's attention
is less efficient than its matmuls). A slice late in a 4k prompt is then ~25 tokens where an early
one is 125, and every slice takes about the same time.

A guard head's state across chunks: a window head keeps its last `window` token logits and best
full window (`dsa.guards.prompt_window.PromptWindow`, what the vLLM engine keeps across vLLM's chunks);
PLR heads a running sum (mean pooling) and the last token's state of each tap; RTB/LST heads the
last `window` token states. These are the `TapSummary`s a one-shot prefill pools inside its hooks,
so the heads and the response guard's `stream_state` read them unchanged. `ChunkedClassify` reads
moderation inputs the same way, each as `dsa.guards.classify` reads it.

Not chunked (`chunk_blocker` says why; such prompts are prefilled whole): a LoRA patch (its rows
are prefilled again at α = λ, known only after the whole prompt) and response guards without
running summaries (window heads, banks without `stream_state`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from dsa.align.logit_adapter import mix_rows
from dsa.align.policy import may_align
from dsa.decoding import DecodeBatch, response_state
from dsa.features.text import encode_inputs
from dsa.guards.bank import TapSummary, classify, merge_needs
from dsa.kvcache import kv
from dsa.taps import StopForward, record_taps

SPAN = 1024  # cached tokens that double a token's cost (measured, see above)


def read_cost(tokens: int, past: int, span: int = SPAN) -> int:
    """Budget units of reading `tokens` after `past` cached ones: tokens at an empty context of the
    same FLOPs (each attends to the cache and, on average, half the chunk)."""
    return math.ceil(tokens * (1 + (past + tokens / 2) / span))


def fit_tokens(budget: int, past: int, span: int = SPAN) -> int:
    """The most tokens after `past` cached ones that `budget` pays for (at least one)."""
    a = 1 + past / span  # read_cost(n) = n·a + n²/(2·span) <= budget
    n = int(span * (math.sqrt(a * a + 2 * budget / span) - a))
    while n > 1 and read_cost(n, past, span) > budget:
        n -= 1
    return max(1, n)


def chunk_blocker(sm) -> str | None:
    """Why `sm` cannot prefill in chunks, or None when it can."""
    if sm.patch is not None:
        return "a LoRA patch prefills aligned rows again at α = λ"
    for bank, what in ((sm.guards, "prompt"), (sm.response_guards, "response")):
        if bank is not None and not hasattr(bank, "adapters"):
            return f"the {what} guard is not a GuardBank"
    rbank = sm.response_guards
    if rbank is not None and (not hasattr(rbank, "stream_state")
                              or any(n.get("full") for n in rbank.tap_needs().values())):
        return "a response guard head needs every token's states (a window head)"
    return None


class GuardReader:
    """Some guard heads over one sequence given in chunks (a batch of one): what they read of each
    tap, kept as running summaries, plus the taps `extra_needs` names (the response guard's)."""

    def __init__(self, adapters: Sequence = (), extra_needs: dict | None = None):
        self.adapters = list(adapters)
        self.needs: dict[str, dict] = {}
        # heads that cannot read running `TapSummary`s keep a state of their own (`GuardHead.prompt_state`)
        self.states = {i: s for i, a in enumerate(self.adapters) if (s := a.kind.prompt_state(a)) is not None}
        for i, a in enumerate(self.adapters):
            if i not in self.states:
                merge_needs(self.needs, a.tap_needs())
        merge_needs(self.needs, extra_needs or {})
        if any(n.get("full") for n in self.needs.values()):
            raise ValueError("a head outside the prompt guard needs every token's states: not chunked")
        self.count = 0
        self.sums: dict[str, torch.Tensor] = {}  # [1, d] float32: sum of the states read
        self.last: dict[str, torch.Tensor] = {}  # [1, d] float32
        self.tail: dict[str, torch.Tensor] = {}  # [1, <= window, d] float32: the last states

    @property
    def taps(self) -> list[str]:
        taps = set(self.needs) | {t for s in self.states.values() for t in s.taps}
        return sorted(taps, key=lambda t: int(t.split(".")[1]))

    def extend(self, cache: dict[str, torch.Tensor]) -> None:
        """Read the next chunk's tap states, cache[tap] [1, q, d]."""
        q = 0
        for tap, need in self.needs.items():
            h = cache[tap].float()
            q = h.shape[1]
            if need["mean"]:
                self.sums[tap] = h.sum(1) if tap not in self.sums else self.sums[tap] + h.sum(1)
            if need["last"]:
                self.last[tap] = h[:, -1]
            if need["window"]:
                seq = h if tap not in self.tail else torch.cat([self.tail[tap], h], 1)
                self.tail[tap] = seq[:, -need["window"]:]
        for state in self.states.values():
            q = state.extend(cache)
        self.count += q

    @property
    def mask(self) -> torch.Tensor:
        """The attention mask [1, count] of everything read (no padding)."""
        return torch.ones(1, self.count, dtype=torch.long)

    def summaries(self) -> dict[str, TapSummary]:
        """{tap: TapSummary} of everything read: what a one-shot prefill's hooks pool."""
        out = {}
        for tap, need in self.needs.items():
            tail = self.tail.get(tap)
            out[tap] = TapSummary(mean=self.sums[tap] / max(self.count, 1) if need["mean"] else None,
                                  last=self.last.get(tap), window=tail,
                                  window_mask=None if tail is None else torch.ones(tail.shape[:2], dtype=torch.long))
        return out

    @torch.inference_mode()
    def scores(self) -> dict[str, torch.Tensor]:
        """Calibrated probabilities {qualified head: [1]}, as `GuardBank.score` of the whole sequence."""
        cache, out = self.summaries(), {}
        for i, a in enumerate(self.adapters):
            if i in self.states:
                logits = self.states[i].logits()
            else:
                logits = a.logits(cache, self.mask)
            p = a.probs(logits.float())
            for j, q in enumerate(a.qualified):
                out[q] = p[:, j]
        return out


class SequenceRead:
    """One token sequence through the base in chunks: its KV cache, a `GuardReader`, and with
    `adapter` the DSA adapter's cache and the last token's logits (base and aligned)."""

    def __init__(self, sm, ids: list[int], reader: GuardReader, adapter: bool = False, logits: bool = False,
                 span: int = SPAN):
        from transformers import DynamicCache

        self.sm, self.ids, self.reader, self.logits, self.span = sm, ids, reader, logits, span
        self.read = 0
        self.cache = DynamicCache(config=sm.base.model.config)
        self.ad_cache = DynamicCache(config=sm.adapter.tail.config) if adapter else None
        self.base_logits = self.aligned_logits = None  # [1, vocab] once the last chunk is read

    @property
    def done(self) -> bool:
        return self.read >= len(self.ids)

    @torch.inference_mode()
    def advance(self, budget: int, at_least_one: bool = True) -> int:
        """Read the tokens `budget` pays for (`read_cost`), or with `at_least_one` one token when it
        pays for none (a slice always makes progress); returns their cost."""
        n = min(fit_tokens(budget, self.read, self.span), len(self.ids) - self.read)
        if n <= 0 or budget <= 0 or (not at_least_one and read_cost(n, self.read, self.span) > budget):
            return 0
        cost = read_cost(n, self.read, self.span)
        sm, device = self.sm, self.sm.base.device
        chunk = torch.tensor([self.ids[self.read:self.read + n]], device=device)
        mask = torch.ones(1, self.read + n, dtype=torch.long, device=device)
        pos = torch.arange(self.read, self.read + n, device=device)[None]
        last = self.read + n == len(self.ids)
        taps = self.reader.taps
        if self.ad_cache is not None and sm.adapter.input_tap not in taps:
            taps = [*taps, sm.adapter.input_tap]
        whole = self.logits or self.ad_cache is not None  # else the forward stops after the deepest tap
        with record_taps(sm.base.model, taps, spec=sm.base.spec, stop_after_last=not whole) as cache:
            try:
                out = sm.base.model(input_ids=chunk, attention_mask=mask, position_ids=pos,
                                    **kv(sm.base.model, self.cache), use_cache=True, logits_to_keep=1)
            except StopForward:
                out = None
        self.reader.extend(cache)
        if self.ad_cache is not None:
            aligned, self.ad_cache = sm.adapter(cache[sm.adapter.input_tap], mask, pos, self.ad_cache,
                                                use_cache=True, logits_to_keep=1, logits=last)
            if last:
                self.aligned_logits = aligned[:, -1]
        if last and self.logits:
            self.base_logits = out.logits[:, -1]
        self.read += n
        return cost


class ChunkedClassify:
    """`classify` of moderation inputs in slices of at most `slice_tokens` tokens.

    Inputs whose reads fit a slice are classified whole, several per `classify` call; a longer one
    is read in chunks, once per distinct length its heads read (each head its last `max_length`
    tokens, as `classify`). Scores equal `classify`'s up to float rounding."""

    def __init__(self, sm, inputs: Sequence, slice_tokens: int, span: int = SPAN):
        self.sm, self.inputs, self.slice_tokens, self.span = sm, list(inputs), max(1, int(slice_tokens)), span
        self.bank = sm.guards
        self.lengths = sorted({a.max_length for a in self.bank.adapters})
        self.results: list[dict | None] = [None] * len(self.inputs)
        self.next = 0  # the first input not started
        self.reads: list[tuple[SequenceRead, list]] = []  # the long input being read: (read, its heads' adapters)
        self.ids: list[int] | None = None  # the next input's tokens, once encoded
        self.reading = -1  # the long input being read

    @property
    def done(self) -> bool:
        return self.next >= len(self.inputs) and not self.reads

    def _cost(self, ids: list[int]) -> int:
        """What classifying `ids` whole costs: one read per distinct length its heads read."""
        return sum(read_cost(n, 0, self.span) for n in {min(n, len(ids)) for n in self.lengths})

    @torch.inference_mode()
    def advance(self, budget: int, at_least_one: bool = True) -> int:
        """Spend up to `budget` (`read_cost`) on the next inputs whole or the next chunk of a long
        one (with `at_least_one`, past it by at most one slice when it pays for nothing); returns
        what was spent."""
        used = 0
        while used < budget and not self.done:
            if self.reads:
                read, _ = self.reads[0]
                spent = read.advance(budget - used, at_least_one and not used)
                used += spent
                if read.done:
                    self._finish_read()
                if not spent:
                    break
                continue
            if self.ids is None:
                self.ids = encode_inputs(self.sm.base, [self.inputs[self.next]], None)[0]
            if self._cost(self.ids) > self.slice_tokens:
                self._start_reads()
                continue
            group, cost = [], 0  # whole inputs, as many as the budget left takes
            while self.next < len(self.inputs):
                if self.ids is None:
                    self.ids = encode_inputs(self.sm.base, [self.inputs[self.next]], None)[0]
                c = self._cost(self.ids)
                # past the budget only when nothing else was read in this call (a slice at most)
                if c > self.slice_tokens or (used + cost + c > budget and (group or used or not at_least_one)):
                    break
                group.append(self.next)
                cost += c
                self.next, self.ids = self.next + 1, None
            if not group:
                break
            for i, r in zip(group, classify(self.sm.base, self.bank, [self.inputs[i] for i in group]), strict=True):
                self.results[i] = r
            used += cost
        return used

    def _start_reads(self) -> None:
        ids = self.ids
        for n in sorted({min(n, len(ids)) for n in self.lengths}):
            heads = [a for a in self.bank.adapters if min(a.max_length, len(ids)) == n]
            self.reads.append((SequenceRead(self.sm, ids[-n:], GuardReader(heads), span=self.span), heads))
        self.results[self.next] = {"scores": {}, "flags": {}}
        self.reading, self.next, self.ids = self.next, self.next + 1, None

    def _finish_read(self) -> None:
        read, _ = self.reads.pop(0)
        scores = {q: float(v[0]) for q, v in read.reader.scores().items()}
        out = self.results[self.reading]
        out["scores"] |= scores
        out["flags"] |= {q: s >= self.bank.thresholds[q] for q, s in scores.items()}
        if not self.reads:  # in the bank's head order, as `classify`
            out["scores"] = {q: out["scores"][q] for q in self.bank.heads}
            out["flags"] = {q: out["flags"][q] for q in self.bank.heads}


class ChunkedPrefill:
    """One conversation's `SafetyModel.prefill` in chunks; arguments as `prefill` for one row. A
    prompt longer than some guard head's `max_length` is then rescored as `classify` reads it
    (`ChunkedClassify`), as the one-shot prefill does. The DSA adapter reads the prompt alongside
    the base when the row may get λ > 0 (an "auto" row's λ is known only once the guard has read
    all of it); its state joins the batch only when λ > 0."""

    def __init__(self, sm, messages, alignment="auto", max_new_tokens: int = 64, temperature: float = 0.0,
                 seed: int | None = None, min_alignment=None, tag=None, slice_tokens: int = 128,
                 span: int = SPAN):
        if (why := chunk_blocker(sm)) is not None:
            raise ValueError(f"this model cannot prefill in chunks: {why}")
        self.sm, self.messages = sm, [messages]
        self.alignment, self.min_alignment, self.tag = alignment, min_alignment, tag
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        sm.check_alignment(alignment, min_alignment)
        ids = sm.encode(self.messages)["input_ids"][0].tolist()
        sm.check_context([len(ids)], max_new_tokens)
        rbank = sm.response_guards
        reader = GuardReader(sm.guards.adapters if sm.guards is not None else (),
                             rbank.tap_needs() if rbank is not None else None)
        adapter = sm.adapter is not None and may_align(alignment, min_alignment)
        self.main = SequenceRead(sm, ids, reader, adapter=adapter, logits=True, span=span)
        limit = getattr(sm.guards, "shortest_max_length", None)
        self.rescore = (ChunkedClassify(sm, self.messages, slice_tokens, span)
                        if limit is not None and len(ids) > limit else None)

    def __len__(self) -> int:
        return len(self.main.ids)

    @property
    def done(self) -> bool:
        return self.main.done and (self.rescore is None or self.rescore.done)

    @torch.inference_mode()
    def advance(self, budget: int, at_least_one: bool = True) -> int:
        """Read the prompt's next slice (`SequenceRead.advance`), then its rescoring; returns the cost."""
        used = self.main.advance(budget, at_least_one)
        if self.rescore is not None and self.main.done and used < budget:
            used += self.rescore.advance(budget - used, at_least_one and not used)
        return used

    @torch.inference_mode()
    def finish(self) -> DecodeBatch:
        """The batch of one row, ready for `decode_step` (call once `done`)."""
        sm, reader = self.sm, self.main.reader
        scores = reader.scores() if sm.guards is not None else None
        if self.rescore is not None:
            got = self.rescore.results[0]["scores"]
            scores = {h: torch.tensor([got[h]]) for h in scores}
        device = sm.base.device
        mask = reader.mask.to(device)
        lam, languages = sm._row_lambdas(self.messages, self.alignment, self.min_alignment, scores, device)
        aligned = bool(lam[0] > 0) and self.main.ad_cache is not None  # else the adapter's state is dropped
        rows = torch.zeros(int(aligned), dtype=torch.long, device=device)
        logits = mix_rows(self.main.base_logits, self.main.aligned_logits if aligned else None, lam, rows)
        rstate = response_state(sm.response_guards, reader.summaries(), mask) if sm.response_guards else None
        ad_cache = self.main.ad_cache if aligned else None
        return sm._new_batch(self.max_new_tokens, self.temperature, self.seed, [self.tag], languages, mask,
                             mask.sum(1, keepdim=True) - 1, self.main.cache, ad_cache, lam, scores, logits, rstate)
