"""Guard head types behind one protocol: everything the bank, streaming, chunked prefill, training,
evaluation and the vLLM engine need to know of a head type lives in its own module here.

    kind = head_kind(adapter.arch)                 # ARCHS["plr"], ...
    x = kind.inputs(adapter.cfg, cache, mask, adapter.window)
    logits = adapter.head(x)

A new head type is one module (a class satisfying `GuardHead`) and one line in `ARCHS` (and one in
`dsa.recipes.guard_train.RECIPES` if it trains by a recipe of its own, as the window head does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from dsa.guards.heads import base_flops_per_token
from dsa.guards.kinds.lst import LST
from dsa.guards.kinds.plr import PLR
from dsa.guards.kinds.rtb import RTB
from dsa.guards.kinds.window import Window

if TYPE_CHECKING:
    from dsa.guards.heads import GuardInput


class HeadStream(Protocol):
    """A response guard head's running state over a growing batch of transcripts (batch first)."""

    def update(self, cache: dict[str, torch.Tensor]) -> torch.Tensor:
        """Add one token per row (`cache[tap]` [b, 1, d]); returns the logits [b, heads]."""

    def select(self, idx: torch.Tensor) -> HeadStream: ...

    def merge(self, other: HeadStream) -> HeadStream: ...


class PromptState(Protocol):
    """A head's state over one prompt read in chunks, for heads that cannot read `TapSummary`s."""

    taps: list[str]

    def extend(self, cache: dict[str, torch.Tensor]) -> int:
        """Read the next chunk's taps ([1, q, d]); returns q."""

    def logits(self) -> torch.Tensor:
        """[1, heads] of everything read, as the head on the whole prompt."""


class GuardHead(Protocol):
    """One guard head type. `cfg` is the adapter's head config (`GuardAdapter.cfg`), `window` the
    adapter's token window (`GuardAdapter.window`)."""

    arch: str
    head_type: type[nn.Module]
    reads_tokens: bool  # its cached task features include per-token ladder states (`task_features(tokens=)`)
    cached_features: bool  # trained and scored offline on cached task features (`dsa.guards.train.predict`)
    vllm_reads: str | None  # how the vLLM engine scores it: "pooled", "token_logits", or None (not inside vLLM)

    def build(self, d_model: int, n_heads: int, cfg: dict) -> nn.Module: ...

    def layers(self, cfg: dict) -> list[int]:
        """The layers whose `resid_post` taps the head reads."""

    def tap_needs(self, cfg: dict, window: int) -> dict[str, dict]:
        """{tap: {"mean", "last", "window"[, "full"]}}: what the head reads of each tap."""

    def inputs(self, cfg: dict, cache: dict, mask: torch.Tensor, window: int) -> GuardInput:
        """The head's input from a forward's taps (full states or `TapSummary`s)."""

    def token_logits(self, head: nn.Module, cfg: dict, cache: dict, mask: torch.Tensor) -> torch.Tensor | None:
        """Per-token logits [b, s, heads] (each token read as if the text ended there), or None."""

    def stream(self, adapter, cache: dict, mask: torch.Tensor) -> HeadStream:
        """The head's streaming state over transcripts whose prefixes are in `cache`."""

    def prompt_state(self, adapter) -> PromptState | None:
        """A chunked-prefill state, or None when the head reads the running `TapSummary`s."""

    def flops(self, head: nn.Module, seq_len: int) -> float:
        """The head's FLOPs on one sequence of `seq_len` tokens."""

    def cached_input(self, feats, idx: list[int], cfg: dict) -> GuardInput:
        """A batch of cached task features (`TaskFeatures`) in the form the head reads."""

    def fit_norm(self, head: nn.Module, feats, cfg: dict) -> None:
        """Fit the head's input standardisation buffers on training features."""

    def fit(self, cfg, train, val, d_model: int) -> tuple[nn.Module, dict]:
        """(head, head config) fitted on cached train features, chosen on val (`GuardTrainConfig` cfg),
        then calibrated by `dsa.recipes.guard_train.train_guard`. A head type that is not
        (`cached_features` False) trains by a recipe of its own, named in
        `dsa.recipes.guard_train.RECIPES`."""

    def check(self, cfg) -> None:
        """Raise ValueError where a `GuardTrainConfig` cannot train this head type."""


ARCHS: dict[str, GuardHead] = {
    "plr": PLR(),
    "rtb": RTB(),
    "lst": LST(),
    "window": Window(),
}


def head_kind(arch: str) -> GuardHead:
    """The registered head type `arch`."""
    try:
        return ARCHS[arch]
    except KeyError:
        raise ValueError(f"unknown guard architecture {arch!r}: expected one of {tuple(ARCHS)}") from None


def kind_of(head: nn.Module) -> GuardHead:
    """The registered head type whose module `head` is."""
    for kind in ARCHS.values():
        if isinstance(head, kind.head_type):
            return kind
    raise ValueError(f"no registered guard head type builds a {type(head).__name__}")


def build_head(arch: str, d_model: int, n_heads: int, cfg: dict) -> nn.Module:
    """Factory: cfg holds the arch-specific fields (layers/poolings/hidden or ladder/width); the
    head types are registered in `ARCHS`."""
    return head_kind(arch).build(d_model, n_heads, cfg)


def flops_fraction(head: nn.Module, model: nn.Module, seq_len: int = 64) -> float:
    """Head FLOPs / base-forward FLOPs for one sequence of `seq_len` tokens."""
    return kind_of(head).flops(head, seq_len) / (base_flops_per_token(model, seq_len) * seq_len)
