"""Guard adapters on disk and a bank of them scored from ONE recorded base forward.

    bank = GuardBank.load(["adapters/guards/prompt_safety"], base)
    _, cache = run_with_taps(base.model, inputs, bank.taps, need_output=False)
    probs = bank.score(cache, inputs["attention_mask"])   # {"prompt_safety/unsafe": [batch]}
    flags = bank.flags(probs)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dsa.adapter_io import load_adapter, save_adapter
from dsa.features import pool
from dsa.guards.heads import GuardInput
from dsa.guards.kinds import GuardHead, build_head, head_kind
from dsa.guards.streaming import StreamRule
from dsa.guards.summaries import TapSummary, last_window, pooled, tap_name, windowed  # noqa: F401 (public here too)

KIND = "dsa_guard"


def merge_needs(into: dict[str, dict], needs: dict[str, dict]) -> dict[str, dict]:
    """Union of two {tap: {"mean", "last", "window", "full"}} requirements (in place into `into`)."""
    for tap, need in needs.items():
        have = into.setdefault(tap, {"mean": False, "last": False, "window": 0, "full": False})
        have["mean"] |= need["mean"]
        have["last"] |= need["last"]
        have["window"] = max(have["window"], need["window"])
        have["full"] |= need.get("full", False)
    return into


def tap_reducers(banks, attention_mask: torch.Tensor, keep_full=()) -> dict:
    """{tap: hook-side reducer} giving each tap's `TapSummary` for every `GuardBank` in `banks`
    (the union of what their heads read). Taps in `keep_full`, and every tap of a bank that cannot
    read summaries, keep their full states."""
    needs: dict[str, dict] = {}
    full = set(keep_full)
    for bank in banks:
        if hasattr(bank, "tap_needs"):
            merge_needs(needs, bank.tap_needs())
        else:
            full |= set(bank.taps)

    def reducer(need):
        def summarise(h: torch.Tensor) -> TapSummary:
            out = TapSummary(mean=pool(h, attention_mask, "mean") if need["mean"] else None,
                             last=pool(h, attention_mask, "last") if need["last"] else None)
            if need["window"]:
                out.window, out.window_mask = last_window(h.float(), attention_mask, need["window"])
            return out
        return summarise

    return {tap: reducer(need) for tap, need in needs.items() if tap not in full and not need["full"]}


@dataclass
class GuardAdapter:
    """One trained head with its calibration: temperature and threshold per guard head, and for a
    response guard the stop rule of each head read token by token (`stream`, written by `dsa guard
    calibrate-stream`: {"rules": [StreamRule fields per head], and how they were chosen})."""

    arch: str
    task: str
    mode: str
    heads: list[str]
    cfg: dict
    head: nn.Module
    temperatures: list[float]
    thresholds: list[float]
    max_length: int = 256
    window: int = 64
    target_fpr: float = 0.05
    info: dict | None = None
    stream: dict | None = None

    @property
    def stream_rules(self) -> list[StreamRule]:
        """Per head, when streaming stops an answer: the rule calibrated on answer prefixes, or,
        without one, the whole-answer threshold at every token with debounce 1 (which stops safe
        answers: a prefix is not a whole answer)."""
        if self.stream:
            return [StreamRule(**r) for r in self.stream["rules"]]
        return [StreamRule(t) for t in self.thresholds]

    @property
    def kind(self) -> GuardHead:
        """The head type (`dsa.guards.kinds`)."""
        return head_kind(self.arch)

    @property
    def taps(self) -> list[str]:
        return [tap_name(i) for i in self.kind.layers(self.cfg)]

    @property
    def qualified(self) -> list[str]:
        return [f"{self.task}/{h}" for h in self.heads]

    def tap_needs(self) -> dict[str, dict]:
        """{tap: {"mean", "last", "window"[, "full"]}}: what this head reads of each tap."""
        return self.kind.tap_needs(self.cfg, self.window)

    def inputs(self, cache: dict[str, torch.Tensor], attention_mask: torch.Tensor) -> GuardInput:
        """The head's input from a forward's taps (full states or `TapSummary`s)."""
        return self.kind.inputs(self.cfg, cache, attention_mask, self.window)

    def logits(self, cache: dict[str, torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.head(self.inputs(cache, attention_mask)).float()  # [b, heads]

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        t = self.__dict__.get("_temperature")
        if t is None or t.dtype != logits.dtype or t.device != logits.device or t.numel() != len(self.temperatures):
            t = self.__dict__["_temperature"] = torch.tensor(self.temperatures, dtype=logits.dtype,
                                                             device=logits.device)
        return torch.sigmoid(logits / t)

    def save(self, path: str | Path, base_fingerprint: str, base_name: str = "") -> Path:
        config = {"arch": self.arch, "task": self.task, "mode": self.mode, "heads": self.heads,
                  "head": self.cfg, "temperatures": self.temperatures, "thresholds": self.thresholds,
                  "max_length": self.max_length, "window": self.window, "target_fpr": self.target_fpr}
        if self.stream:
            config["stream"] = self.stream
        return save_adapter(path, KIND, dict(self.head.state_dict()), config, base_fingerprint, base_name,
                            extra={"info": self.info or {}})

    @classmethod
    def load(cls, path: str | Path, base_fingerprint: str | None, d_model: int) -> GuardAdapter:
        meta, tensors = load_adapter(path, base_fingerprint, kind=KIND)
        c = meta["config"]
        head = build_head(c["arch"], d_model, len(c["heads"]), c["head"])
        head.load_state_dict(tensors)
        head.eval()
        return cls(c["arch"], c["task"], c["mode"], c["heads"], c["head"], head, c["temperatures"],
                   c["thresholds"], c["max_length"], c["window"], c.get("target_fpr", 0.05), meta.get("info"),
                   c.get("stream"))


class GuardBank:
    """Several guard adapters sharing one base forward."""

    def __init__(self, adapters: list[GuardAdapter]):
        self.adapters = adapters
        names = [q for a in adapters for q in a.qualified]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate guard heads in bank: {names}")

    @classmethod
    def load(cls, paths: list[str | Path], base) -> GuardBank:
        """Load adapters for `base`; raises FingerprintMismatch if one was made for another base."""
        return cls([GuardAdapter.load(p, base.fingerprint, base.d_model) for p in paths])

    @property
    def taps(self) -> list[str]:
        return sorted({t for a in self.adapters for t in a.taps}, key=lambda t: int(t.split(".")[1]))

    @property
    def heads(self) -> list[str]:
        return [q for a in self.adapters for q in a.qualified]

    @property
    def thresholds(self) -> dict[str, float]:
        """{qualified head: stored calibrated threshold}."""
        return {q: t for a in self.adapters for q, t in zip(a.qualified, a.thresholds, strict=True)}

    @property
    def stream_rules(self) -> dict[str, StreamRule]:
        """{qualified head: its streaming stop rule} (`GuardAdapter.stream_rules`)."""
        return {q: r for a in self.adapters for q, r in zip(a.qualified, a.stream_rules, strict=True)}

    @property
    def max_length(self) -> int:
        """The most tokens any head reads (each head reads at most its own `max_length`)."""
        return max(a.max_length for a in self.adapters)

    @property
    def shortest_max_length(self) -> int:
        """Inputs longer than this are read truncated by some head (`classify` scores them)."""
        return min(a.max_length for a in self.adapters)

    def tap_needs(self) -> dict[str, dict]:
        """{tap: {"mean", "last", "window"}} over every head of the bank."""
        out: dict[str, dict] = {}
        for a in self.adapters:
            merge_needs(out, a.tap_needs())
        return out

    def tap_reducers(self, attention_mask: torch.Tensor) -> dict:
        """Hook-side reducers for `record_taps(reduce=...)`: each tap pooled where it is produced."""
        return tap_reducers([self], attention_mask)

    def score(self, cache: dict[str, torch.Tensor], attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Calibrated probabilities {qualified head: [batch]} from one forward's taps."""
        out = {}
        for a in self.adapters:
            p = a.probs(a.logits(cache, attention_mask))
            for j, q in enumerate(a.qualified):
                out[q] = p[:, j]
        return out

    def flags(self, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{head: bool [batch]}: score >= the head's stored threshold."""
        thr = self.thresholds
        return {q: s >= thr[q] for q, s in scores.items()}

    def score_tokens(self, cache: dict[str, torch.Tensor], attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-token calibrated probabilities {head: [batch, seq]} for streaming (heads with a
        per-token read-out, `GuardHead.token_logits`: PLR and RTB; others are skipped). Padding
        positions get 0."""
        out = {}
        m = attention_mask.float()
        for a in self.adapters:
            with torch.no_grad():
                z = a.kind.token_logits(a.head, a.cfg, cache, attention_mask)
            if z is None:
                continue
            p = a.probs(z.float())  # [b, s, heads]
            for j, q in enumerate(a.qualified):
                out[q] = p[..., j] * m
        return out


    def stream_state(self, cache: dict[str, torch.Tensor], attention_mask: torch.Tensor) -> StreamingGuardState:
        """Running per-row state of every head over a transcript whose prefix is in `cache`; each
        `update` with one new token's taps costs O(1) in the transcript length (see below)."""
        return StreamingGuardState(self, cache, attention_mask)


class StreamingGuardState:
    """Incremental response-guard scoring for a growing transcript, one token per `update`.

    Each head keeps its type's running state (`GuardHead.stream`): PLR heads running sums (mean
    pooling) and the last token's state of their layers; RTB and LST heads a window of the last
    `window` token states per ladder tap, shifted like a ring buffer; window heads their last
    `window` token logits and best window. Each update is O(d) for PLR and O(window·d) for windowed
    heads, whatever the length, and gives the scores `GuardBank.score` gives on the whole transcript
    (up to float rounding). Every tensor has the batch first, so rows can be selected or appended
    (dynamic batching). The prefix's taps may be full states or `TapSummary`s.
    """

    def __init__(self, bank: GuardBank, cache: dict[str, torch.Tensor], attention_mask: torch.Tensor):
        self.bank = bank
        with torch.no_grad():
            self.streams = [a.kind.stream(a, cache, attention_mask) for a in bank.adapters]
        self._scores = bank.score(cache, attention_mask)

    def update(self, cache: dict[str, torch.Tensor],
               attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Add one token per row (`cache[tap]` is [b, 1, d]); returns the new scores {head: [b]}."""
        out = {}
        for a, stream in zip(self.bank.adapters, self.streams, strict=True):
            with torch.no_grad():
                p = a.probs(stream.update(cache).float())
            for j, q in enumerate(a.qualified):
                out[q] = p[:, j]
        self._scores = out
        return out

    def scores(self) -> dict[str, torch.Tensor]:
        return self._scores

    def select(self, idx: torch.Tensor) -> None:
        self.streams = [s.select(idx) for s in self.streams]
        self._scores = {h: v[idx] for h, v in self._scores.items()}

    def trim(self, start: int) -> None:
        """Nothing to do: the state has no sequence axis."""

    def merge(self, other: StreamingGuardState, width: int | None = None) -> None:
        """Append `other`'s rows (`width`, the batch's padded length, is not needed here)."""
        self.streams = [s.merge(o) for s, o in zip(self.streams, other.streams, strict=True)]
        self._scores = {h: torch.cat([v, other._scores[h]]) for h, v in self._scores.items()}


def classify(base, bank: GuardBank, inputs: list[str | list[dict]], batch_size: int = 16) -> list[dict]:
    """Score raw inputs (a string = one user message, or chat messages) with one forward each batch.
    Each head reads the last `max_length` tokens of its own (the render-and-truncate of its
    training): heads whose `max_length` covers an input share one forward of it, and a shorter
    head gets a forward of the input truncated to its length.

    Returns per input {"scores": {head: float}, "flags": {head: bool}}.
    """
    from dsa.features.text import encode_inputs, pad_right
    from dsa.taps import run_with_taps

    ids = encode_inputs(base, inputs, None)
    lengths = sorted({a.max_length for a in bank.adapters})
    # one job per (input, tokens read): length-sorted batches, since a batch pads to its longest row
    jobs = sorted({(i, min(n, len(x))) for i, x in enumerate(ids) for n in lengths}, key=lambda j: (j[1], j[0]))
    scores: list[dict] = [{} for _ in ids]
    flags: list[dict] = [{} for _ in ids]
    for k in range(0, len(jobs), batch_size):
        rows = jobs[k:k + batch_size]
        input_ids, mask = pad_right([ids[i][-n:] for i, n in rows], base.tokenizer.pad_token_id)
        with torch.inference_mode():
            _, cache = run_with_taps(base.model, {"input_ids": input_ids.to(base.device),
                                                  "attention_mask": mask.to(base.device)},
                                     bank.taps, spec=base.spec, need_output=False,
                                     reduce=tap_reducers([bank], mask.to(base.device)))
            got = bank.score(cache, mask.to(base.device))
        hit = bank.flags(got)
        for r, (i, n) in enumerate(rows):
            for a in bank.adapters:
                if min(a.max_length, len(ids[i])) == n:  # the rows this head reads
                    scores[i] |= {q: float(got[q][r]) for q in a.qualified}
                    flags[i] |= {q: bool(hit[q][r]) for q in a.qualified}
    return [{"scores": {q: s[q] for q in bank.heads}, "flags": {q: f[q] for q in bank.heads}}
            for s, f in zip(scores, flags, strict=True)]
