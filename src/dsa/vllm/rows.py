"""Per-request dsa state inside a vLLM worker process, kept in the persistent batch's row order.

vLLM V1 tells logits processors which requests enter, leave and move within the persistent
batch (`BatchUpdate`), every step, before the model's forward; the rows of the forward's flat
token batch and of `compute_logits` follow that same order. `DSARowState` is such a processor
that changes no logits: it only mirrors the batch into `ROWS`, which the dsa model reads (the
request's `extra_args["dsa_alignment"]` and prompt length) and writes (pooled guard taps, window
heads' running state, guard scores, λ). Both live in the worker process, so the model and the
processor share `ROWS`.

A request's λ is fixed when its prompt has been read (guard scores come from the prompt); the
guard scores and λ of a request that passed `extra_args["dsa_request_key"]` are kept in
`ROWS.results` until the caller fetches them (`DSAWorkerExtension.dsa_pop_results`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from dsa.extras import needs_extra

with needs_extra("vllm", "vLLM integration (dsa.vllm)"):
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

ALIGNMENT_KEY = "dsa_alignment"
EXACT_KEY = "dsa_alignment_exact"  # true: the number is λ itself, if the engine allows it (else a floor)
REQUEST_KEY = "dsa_request_key"
MAX_RESULTS = 65536  # results never fetched are dropped oldest first beyond this


def parse_alignment(value) -> str | float:
    """`extra_args["dsa_alignment"]`: "auto" (the policy) or a number in [0, 1], which can only
    raise λ above the policy (an operator floor, as in dsa's HTTP server). Missing means "auto"."""
    if value is None or value == "auto":
        return "auto"
    if isinstance(value, bool):
        raise ValueError(f"{ALIGNMENT_KEY} must be 'auto' or a number in [0, 1], not a boolean")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{ALIGNMENT_KEY} must be 'auto' or a number in [0, 1], got {value!r}") from None
    if not math.isfinite(x) or not 0.0 <= x <= 1.0:
        raise ValueError(f"{ALIGNMENT_KEY} must be in [0, 1], got {value!r}")
    return x


@dataclass
class Row:
    """One request in the persistent batch."""

    key: str | None
    alignment: str | float
    prompt_len: int
    exact: bool = False  # λ = alignment exactly (an operator override), not max(policy, alignment)
    done: int = 0  # tokens of this request the model has read since it (re-)entered the batch
    sums: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [d] running sum over the prompt
    last: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [d] the prompt's last token
    windows: dict[int, object] = field(default_factory=dict)  # window adapter index -> `PromptWindow`
    lam: float | None = None  # set once the whole prompt has been read
    scores: dict[str, float] | None = None


class BatchRows:
    """The worker's mirror of the persistent batch (see the module docstring)."""

    def __init__(self) -> None:
        self.active = False  # set when a DSARowState was built in this process
        self.rows: list[Row | None] = []
        self.results: OrderedDict[str, dict] = OrderedDict()

    def reset(self) -> None:
        self.rows, self.results = [], OrderedDict()

    def apply(self, update: BatchUpdate | None) -> None:
        if update is None:
            return
        for i in update.removed:
            if i < len(self.rows):
                self.rows[i] = None
        for i, params, prompt_ids, _outputs in update.added:
            extra = (params.extra_args or {}) if params is not None else {}
            row = Row(extra.get(REQUEST_KEY), parse_alignment(extra.get(ALIGNMENT_KEY)),
                      len(prompt_ids) if prompt_ids is not None else 0, extra.get(EXACT_KEY) is True)
            self._put(i, row)
        for a, b, how in update.moved:
            ra, rb = self._get(a), self._get(b)
            if how == MoveDirectionality.SWAP:
                self._put(a, rb)
                self._put(b, ra)
            else:  # one-way a -> b
                self._put(b, ra)
                self._put(a, None)
        del self.rows[update.batch_size:]

    def _get(self, i: int) -> Row | None:
        return self.rows[i] if i < len(self.rows) else None

    def _put(self, i: int, row: Row | None) -> None:
        if i >= len(self.rows):
            self.rows.extend([None] * (i + 1 - len(self.rows)))
        self.rows[i] = row

    def store(self, row: Row) -> None:
        if row.key is None:
            return
        self.results[row.key] = {"guard_scores": dict(row.scores or {}), "lam": row.lam}
        self.results.move_to_end(row.key)
        while len(self.results) > MAX_RESULTS:
            self.results.popitem(last=False)

    def pop_results(self, keys: list[str]) -> dict[str, dict | None]:
        return {k: self.results.pop(k, None) for k in keys}


ROWS = BatchRows()


class DSARowState(LogitsProcessor):
    """A logits processor that leaves logits alone and keeps `ROWS` in batch order (required by
    the dsa model: `LLM(..., logits_processors=["dsa.vllm.rows:DSARowState"])`)."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        extra = sampling_params.extra_args or {}
        alignment = parse_alignment(extra.get(ALIGNMENT_KEY))
        exact = extra.get(EXACT_KEY, False)
        if not isinstance(exact, bool):
            raise ValueError(f"{EXACT_KEY} must be a boolean, got {type(exact).__name__}")
        if exact and alignment == "auto":
            raise ValueError(f"{EXACT_KEY} needs a numeric {ALIGNMENT_KEY}")
        key = extra.get(REQUEST_KEY)
        if key is not None and not isinstance(key, str):
            raise ValueError(f"{REQUEST_KEY} must be a string, got {type(key).__name__}")

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        ROWS.reset()
        ROWS.active = True

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        ROWS.apply(batch_update)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits
