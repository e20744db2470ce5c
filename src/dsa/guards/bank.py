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
from dsa.decoding import pad_left
from dsa.features import pool
from dsa.guards.heads import GuardInput, PLRHead, RTBHead, build_head

KIND = "dsa_guard"


def last_window(h: torch.Tensor, mask: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last `window` real tokens of each row, right-aligned: [b, s, d] -> [b, w, d], mask [b, w].

    Works for left and right padding (real tokens are where mask is 1).
    """
    b = h.shape[0]
    counts = mask.sum(1)
    w = int(min(window, int(counts.max()))) if b else window
    out = h.new_zeros(b, w, h.shape[-1])
    m = torch.zeros(b, w, dtype=torch.long, device=h.device)
    for r in range(b):
        pos = torch.nonzero(mask[r], as_tuple=True)[0][-w:]
        out[r, w - len(pos):] = h[r, pos]
        m[r, w - len(pos):] = 1
    return out, m


@dataclass
class GuardAdapter:
    """One trained head with its calibration: temperature and threshold per guard head."""

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

    @property
    def taps(self) -> list[str]:
        layers = self.cfg["layers"] if self.arch == "plr" else self.cfg["ladder"]
        return [f"layers.{i}.resid_post" for i in layers]

    @property
    def qualified(self) -> list[str]:
        return [f"{self.task}/{h}" for h in self.heads]

    def inputs(self, cache: dict[str, torch.Tensor], attention_mask: torch.Tensor) -> GuardInput:
        if self.arch == "plr":
            return GuardInput(pooled={(li, how): pool(cache[f"layers.{li}.resid_post"], attention_mask, how)
                                      for li in self.cfg["layers"] for how in self.cfg["poolings"]})
        parts, m = [], None
        for li in self.cfg["ladder"]:
            t, m = last_window(cache[f"layers.{li}.resid_post"].float(), attention_mask, self.window)
            parts.append(t)
        return GuardInput(tokens=torch.stack(parts, 1), mask=m)  # [b, T, w, d]

    def logits(self, cache: dict[str, torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.head(self.inputs(cache, attention_mask)).float()  # [b, heads]

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        t = torch.tensor(self.temperatures, dtype=logits.dtype, device=logits.device)
        return torch.sigmoid(logits / t)

    def save(self, path: str | Path, base_fingerprint: str, base_name: str = "") -> Path:
        config = {"arch": self.arch, "task": self.task, "mode": self.mode, "heads": self.heads,
                  "head": self.cfg, "temperatures": self.temperatures, "thresholds": self.thresholds,
                  "max_length": self.max_length, "window": self.window, "target_fpr": self.target_fpr}
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
                   c["thresholds"], c["max_length"], c["window"], c.get("target_fpr", 0.05), meta.get("info"))


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
    def max_length(self) -> int:
        return max(a.max_length for a in self.adapters)

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
        """Per-token calibrated probabilities {head: [batch, seq]} for streaming (PLR and RTB heads;
        LST heads are skipped). Padding positions get 0."""
        out = {}
        m = attention_mask.float()
        for a in self.adapters:
            if isinstance(a.head, PLRHead):
                with torch.no_grad():
                    z = a.head.token_logits({li: cache[f"layers.{li}.resid_post"] for li in a.cfg["layers"]},
                                          attention_mask)
            elif isinstance(a.head, RTBHead):
                tokens = torch.stack([cache[f"layers.{li}.resid_post"].float() for li in a.cfg["ladder"]], 1)
                with torch.no_grad():
                    z = a.head.token_logits(GuardInput(tokens=tokens, mask=attention_mask))
            else:
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

    PLR heads keep running sums (mean pooling) and the last token's state per layer; RTB and LST
    heads keep a window of the last `window` token states per ladder tap, shifted like a ring
    buffer. Each update is O(d) for PLR and O(window·d) for windowed heads, whatever the length,
    and gives the scores `GuardBank.score` gives on the whole transcript (up to float rounding).
    Every tensor has the batch first, so rows can be selected or appended (dynamic batching).
    """

    def __init__(self, bank: GuardBank, cache: dict[str, torch.Tensor], attention_mask: torch.Tensor):
        self.bank = bank
        m = attention_mask.float()
        self.count = m.sum(1)  # [b]
        self.sums: dict[int, torch.Tensor] = {}  # layer -> [b, d] float
        self.last: dict[int, torch.Tensor] = {}  # layer -> [b, d] float
        self.windows: list[tuple[torch.Tensor, torch.Tensor] | None] = []  # per adapter: [b, T, w, d], [b, w]
        for a in bank.adapters:
            if a.arch == "plr":
                for li in a.cfg["layers"]:
                    h = cache[f"layers.{li}.resid_post"]
                    self.sums.setdefault(li, pool(h, attention_mask, "mean") * self.count.clamp_min(1)[:, None])
                    self.last.setdefault(li, pool(h, attention_mask, "last"))
                self.windows.append(None)
            else:
                parts, wm = [], None
                for li in a.cfg["ladder"]:
                    t, wm = last_window(cache[f"layers.{li}.resid_post"].float(), attention_mask, a.window)
                    parts.append(pad_left(t, a.window, 1))
                self.windows.append((torch.stack(parts, 1), pad_left(wm, a.window, 1)))
        self._scores = bank.score(cache, attention_mask)

    def update(self, cache: dict[str, torch.Tensor], attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Add one token per row (`cache[tap]` is [b, 1, d]); returns the new scores {head: [b]}."""
        self.count = self.count + 1
        for li in self.sums:
            h = cache[f"layers.{li}.resid_post"][:, -1].float()
            self.sums[li] = self.sums[li] + h
            self.last[li] = h
        out = {}
        for a, win in zip(self.bank.adapters, self.windows, strict=True):
            if win is None:
                mean = {li: self.sums[li] / self.count.clamp_min(1)[:, None] for li in a.cfg["layers"]}
                x = GuardInput(pooled={(li, how): (mean[li] if how == "mean" else self.last[li])
                                       for li in a.cfg["layers"] for how in a.cfg["poolings"]})
            else:
                tokens, wm = win
                new = torch.stack([cache[f"layers.{li}.resid_post"][:, -1].float() for li in a.cfg["ladder"]], 1)
                tokens = torch.cat([tokens[:, :, 1:], new[:, :, None]], 2)
                wm = torch.cat([wm[:, 1:], torch.ones_like(wm[:, :1])], 1)
                self.windows[self.bank.adapters.index(a)] = (tokens, wm)
                x = GuardInput(tokens=tokens, mask=wm)
            with torch.no_grad():
                p = a.probs(a.head(x).float())
            for j, q in enumerate(a.qualified):
                out[q] = p[:, j]
        self._scores = out
        return out

    def scores(self) -> dict[str, torch.Tensor]:
        return self._scores

    def select(self, idx: torch.Tensor) -> None:
        self.count = self.count[idx]
        self.sums = {k: v[idx] for k, v in self.sums.items()}
        self.last = {k: v[idx] for k, v in self.last.items()}
        self.windows = [None if w is None else (w[0][idx], w[1][idx]) for w in self.windows]
        self._scores = {h: v[idx] for h, v in self._scores.items()}

    def trim(self, start: int) -> None:
        """Nothing to do: the state has no sequence axis."""

    def merge(self, other: StreamingGuardState, width: int | None = None) -> None:
        """Append `other`'s rows (`width`, the batch's padded length, is not needed here)."""
        self.count = torch.cat([self.count, other.count])
        self.sums = {k: torch.cat([v, other.sums[k]]) for k, v in self.sums.items()}
        self.last = {k: torch.cat([v, other.last[k]]) for k, v in self.last.items()}
        self.windows = [None if w is None else (torch.cat([w[0], o[0]]), torch.cat([w[1], o[1]]))
                        for w, o in zip(self.windows, other.windows, strict=True)]
        self._scores = {h: torch.cat([v, other._scores[h]]) for h, v in self._scores.items()}


def classify(base, bank: GuardBank, inputs: list[str | list[dict]], batch_size: int = 16) -> list[dict]:
    """Score raw inputs (a string = one user message, or chat messages) with one forward each batch.

    Returns per input {"scores": {head: float}, "flags": {head: bool}}.
    """
    from dsa.features import pad_right, tokenize
    from dsa.guards.featurize import render_input
    from dsa.taps import run_with_taps

    texts = [render_input(base, x) for x in inputs]
    ids = tokenize(base, texts, bank.max_length)
    # length-sorted batches: a batch pads to its longest text, so mixing lengths wastes most of it
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    results: list[dict] = [None] * len(ids)  # type: ignore[list-item]
    for k in range(0, len(ids), batch_size):
        rows = order[k:k + batch_size]
        input_ids, mask = pad_right([ids[i] for i in rows], base.tokenizer.pad_token_id)
        with torch.inference_mode():
            _, cache = run_with_taps(base.model, {"input_ids": input_ids.to(base.device),
                                                  "attention_mask": mask.to(base.device)},
                                     bank.taps, spec=base.spec, need_output=False)
            scores = bank.score(cache, mask.to(base.device))
        flags = bank.flags(scores)
        for r, i in enumerate(rows):
            results[i] = {"scores": {q: float(s[r]) for q, s in scores.items()},
                          "flags": {q: bool(f[r]) for q, f in flags.items()}}
    return results
