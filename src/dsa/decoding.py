"""State of a decoding batch between steps, and the pieces `SafetyModel.prefill` / `decode_step` share.

A `DecodeBatch` holds only tensors and per-row bookkeeping — no hooks, no locks — so a consumer
may abandon it at any step: nothing on the model needs releasing. Rows can leave (`select`) and
batches can be joined (`merge`, left-padding the KV caches), which is what the server's dynamic
batching does at step boundaries. The DSA adapter's KV cache holds only the rows with λ > 0 (the
sub-batch `ad_rows`, kept through both), so rows at λ = 0 never run the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Row:
    """One conversation being decoded: its limits, sampler and what it has produced so far."""

    max_new_tokens: int
    temperature: float = 0.0
    generator: torch.Generator | None = None
    tag: Any = None  # the caller's handle (the server's job)
    picked: int = 0  # tokens sampled (emitted, held or end-of-sequence)
    tokens: list[int] = field(default_factory=list)  # emitted tokens: never flagged ones
    held: list[int] = field(default_factory=list)  # flagged tokens awaiting the debounce verdict
    new: list[int] = field(default_factory=list)  # tokens emitted by the latest step
    streaks: dict[str, int] = field(default_factory=dict)  # response head -> consecutive tokens it flagged
    stop: str | None = None  # "eos" | "length" | "guard" | a caller's reason
    response: dict[str, float] = field(default_factory=dict)  # latest response-guard scores
    language: dict = field(default_factory=dict)  # the prompt's language check (`SafetyModel.prefill`)


class DecodeBatch:
    """Tensors of a batch of rows between decode steps.

    mask [b, s] and the KV caches are left-padded to a common width s; `last_pos` [b, 1] is each
    row's last position; `logits` [b, vocab] are the pending (already mixed) next-token logits.
    `ad_rows` [a] are the rows (ascending) whose adapter state `ad_cache` holds, in its order: the
    rows with λ > 0 (default: every row when there is an `ad_cache`); `ad_cache` is None when a = 0.
    """

    def __init__(self, rows: list[Row], mask: torch.Tensor, last_pos: torch.Tensor, base_cache,
                 ad_cache, lam: torch.Tensor, scores: dict[str, torch.Tensor] | None,
                 logits: torch.Tensor, response_state=None, ad_rows: torch.Tensor | None = None):
        self.rows, self.mask, self.last_pos = rows, mask, last_pos
        self.base_cache, self.ad_cache = base_cache, ad_cache
        if ad_rows is None:
            ad_rows = torch.arange(len(rows) if ad_cache is not None else 0, device=mask.device)
        self.ad_rows = ad_rows.to(device=mask.device, dtype=torch.long)
        if self.ad_cache is not None and not len(self.ad_rows):
            self.ad_cache = None
        self.lam, self.scores, self.logits = lam, scores, logits
        self.response_state = response_state
        self.done = torch.zeros(len(rows), dtype=torch.bool, device=mask.device)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def finished(self) -> bool:
        return bool(self.done.all())

    def finish(self, i: int, reason: str) -> None:
        if not bool(self.done[i]):
            self.rows[i].stop, self.rows[i].held = reason, []
            with torch.inference_mode():  # the flags were made in inference mode
                self.done[i] = True

    def guard_scores(self, i: int) -> dict[str, float]:
        return {h: float(v[i]) for h, v in self.scores.items()} if self.scores else {}

    def select(self, keep: list[int]) -> None:
        """Keep only rows `keep` (in that order), and drop KV columns no kept row attends to."""
        device = self.mask.device
        idx = torch.tensor(keep, dtype=torch.long, device=device)
        self.rows = [self.rows[i] for i in keep]
        self.mask, self.last_pos, self.lam = self.mask[idx], self.last_pos[idx], self.lam[idx]
        self.logits, self.done = self.logits[idx], self.done[idx]
        self.scores = {h: v[idx] for h, v in self.scores.items()} if self.scores else self.scores
        _map_layers(self.base_cache, lambda t: t[idx])
        # the adapter's sub-batch: kept rows that had adapter state, at their new positions
        slot = {int(r): j for j, r in enumerate(self.ad_rows.tolist())}
        kept = [(new, slot[old]) for new, old in enumerate(keep) if old in slot]
        self.ad_rows = torch.tensor([new for new, _ in kept], dtype=torch.long, device=device)
        if not kept:
            self.ad_cache = None
        elif self.ad_cache is not None:
            ad_idx = torch.tensor([j for _, j in kept], dtype=torch.long, device=device)
            _map_layers(self.ad_cache, lambda t: t[ad_idx])
        if self.response_state is not None:
            self.response_state.select(idx)
        real = self.mask.any(0).nonzero()
        start = int(real[0]) if len(real) else self.mask.shape[1]
        if start > 0:
            self.mask = self.mask[:, start:]
            for cache in (self.base_cache, self.ad_cache):
                if cache is not None:
                    _map_layers(cache, lambda t: t[:, :, start:])
            if self.response_state is not None:
                self.response_state.trim(start)

    def can_merge(self, other: DecodeBatch) -> bool:
        """Whether `other` (of the same model) can join this batch: the same guards, plain KV layers.
        The adapter's sub-batches need not match (a batch without λ > 0 rows has none)."""
        same_guard = (self.response_state is None) == (other.response_state is None)
        same_heads = (self.scores is None) == (other.scores is None) and (
            self.scores is None or set(self.scores) == set(other.scores))
        layers_ok = all(_plain_layers(c) for c in (self.base_cache, other.base_cache, self.ad_cache,
                                                     other.ad_cache) if c is not None)
        return same_guard and same_heads and layers_ok

    def merge(self, other: DecodeBatch) -> None:
        """Append `other`'s rows (a fresh prefill) to this batch, left-padding to a common width."""
        if not len(self):
            self.__dict__.update(other.__dict__)
            return
        width = max(self.mask.shape[1], other.mask.shape[1])
        self.mask = torch.cat([pad_left(self.mask, width, 1), pad_left(other.mask, width, 1)])
        self.base_cache = _join_caches(self.base_cache, other.base_cache, width)
        self.ad_cache = _join_caches(self.ad_cache, other.ad_cache, width)
        self.ad_rows = torch.cat([self.ad_rows, other.ad_rows.to(self.ad_rows.device) + len(self)])
        if self.response_state is not None:
            self.response_state.merge(other.response_state, width)
        self.rows += other.rows
        self.last_pos = torch.cat([self.last_pos, other.last_pos])
        self.lam = torch.cat([self.lam, other.lam])
        self.logits = torch.cat([self.logits, other.logits])
        self.done = torch.cat([self.done, other.done])
        if self.scores is not None:
            self.scores = {h: torch.cat([v, other.scores[h]]) for h, v in self.scores.items()}


def _plain_layers(cache) -> bool:
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _join_caches(mine, theirs, width: int):
    """Rows of `theirs` after those of `mine`, each left-padded to `width` columns (either may be
    None: an adapter sub-batch without rows)."""
    if mine is None or theirs is None:
        cache = theirs if mine is None else mine
        if cache is not None:
            _map_layers(cache, lambda t: pad_left(t, width, 2))
        return cache
    for a, b in zip(mine.layers, theirs.layers, strict=True):
        a.keys = torch.cat([pad_left(a.keys, width, 2), pad_left(b.keys, width, 2)])
        a.values = torch.cat([pad_left(a.values, width, 2), pad_left(b.values, width, 2)])
    return mine


def _map_layers(cache, fn) -> None:
    if cache is None:
        return
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys, layer.values = fn(layer.keys), fn(layer.values)


def pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Left-pad `t` with zeros along `dim` to `width` entries (no copy when it is already that wide)."""
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim)


class TranscriptState:
    """Response-guard state for banks without incremental scoring: keeps every tap state of the
    transcript (aligned with the batch mask) and rescores it whole each step — O(T) per token.
    `GuardBank.stream_state` replaces this with O(1) running state."""

    def __init__(self, bank, cache: dict[str, torch.Tensor], attention_mask: torch.Tensor):
        self.bank = bank
        self.states = {t: cache[t] for t in bank.taps}  # [b, s, d]
        self.mask = attention_mask

    def update(self, cache: dict[str, torch.Tensor], attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        self.states = {t: torch.cat([v, cache[t]], 1) for t, v in self.states.items()}
        self.mask = attention_mask
        return self.bank.score(self.states, attention_mask)

    def select(self, idx: torch.Tensor) -> None:
        self.states = {t: v[idx] for t, v in self.states.items()}
        self.mask = self.mask[idx]

    def trim(self, start: int) -> None:
        self.states = {t: v[:, start:] for t, v in self.states.items()}
        self.mask = self.mask[:, start:]

    def merge(self, other: TranscriptState, width: int) -> None:
        self.states = {t: torch.cat([pad_left(v, width, 1), pad_left(other.states[t], width, 1)])
                       for t, v in self.states.items()}
        self.mask = torch.cat([pad_left(self.mask, width, 1), pad_left(other.mask, width, 1)])


def response_state(bank, cache: dict[str, torch.Tensor], attention_mask: torch.Tensor):
    """Incremental state when the bank offers it (`GuardBank.stream_state`), else a transcript."""
    if hasattr(bank, "stream_state"):
        return bank.stream_state(cache, attention_mask)
    return TranscriptState(bank, cache, attention_mask)


def pick_tokens(logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
    """Next token per row [b]: greedy where temperature is 0, else sampled with the row's generator."""
    nxt = logits.argmax(-1)
    for i, row in enumerate(rows):
        if row.temperature > 0:
            z = logits[i].float()
            # shifting by the max first keeps tiny temperatures finite (1e-300 → one-hot, not NaN)
            probs = torch.softmax((z - z.max()) / row.temperature, -1)
            if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0:
                continue  # degenerate distribution: keep the greedy pick
            nxt[i] = torch.multinomial(probs.cpu(), 1, generator=row.generator).item()
    return nxt


def make_generator(seed: int | None) -> torch.Generator | None:
    return torch.Generator().manual_seed(seed % 2**64) if seed is not None else None


class IncrementalDetokenizer:
    """Text deltas of a growing token list without re-decoding the whole answer each step.

    Decodes only a short window of recent tokens (a byte split across tokens waits for the rest);
    leading whitespace is dropped and trailing whitespace held back, so the deltas add up to
    `decode(all tokens).strip()`.
    """

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix = self.read = 0
        self.pending, self.started = "", False

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def push(self, ids: list[int]) -> str:
        if not ids:
            return ""
        self.ids += ids
        prev = self._decode(self.ids[self.prefix:self.read])
        new = self._decode(self.ids[self.prefix:])
        if new.endswith("\ufffd"):
            return ""  # an incomplete multi-byte character: wait for its next byte
        delta = new[len(prev):]  # (a tokenizer that rewrites earlier text would lose that rewrite)
        self.prefix, self.read = self.read, len(self.ids)
        text = self.pending + delta
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        shown = text.rstrip()
        self.pending = text[len(shown):]
        return shown
