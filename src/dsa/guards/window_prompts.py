"""What a window guard trains on: the task's labelled splits as raw prompts (`window_prompts`), train
and val with copies padded with train filler, long filler, other benign prompts or documents
(`dsa.data.wrappers`), so length and padding are never label cues; and the same rendered, with
their per-token states (`window_data`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsa.base import Base
from dsa.features.text import render_input
from dsa.guards.token_states import TokenStates, token_states

log = logging.getLogger(__name__)


@dataclass
class WindowPrompts:
    """The raw prompts a window guard trains on, per split (before chat rendering)."""

    prompts: dict[str, list[str]]     # split -> raw user prompts (plain, framed, then padded copies)
    y: dict[str, np.ndarray]          # split -> labels (0/1)
    kinds: dict[str, list[str]]       # split -> "plain", "framed" or the padding kind
    sources: dict[str, list[str]]     # split -> the source a prompt is held out by (LOSO)
    n_padded: dict[str, int]          # split -> padded copies appended at the end


@dataclass
class WindowData:
    texts: dict[str, list[str]]       # split -> rendered texts
    y: dict[str, np.ndarray]          # split -> labels (0/1)
    kinds: dict[str, list[str]]       # split -> "plain", "framed" or the padding kind
    states: dict[str, TokenStates]
    sources: dict[str, list[str]] | None = None  # split -> the source a text is held out by (LOSO)


def window_prompts(tokenizer, task_name: str, seed: int = 0, share: float = 0.5,
                   pad_tokens: Sequence[int] = (40, 120, 300), long_share: float = 0.0,
                   long_tokens: Sequence[int] = (500, 900), corpus_share: float = 0.0,
                   corpus_tokens: Sequence[int] = (200, 450, 800), doc_share: float = 0.0,
                   doc_tokens: Sequence[int] = (300, 600, 900),
                   splits: Sequence[str] = ("train", "val")) -> WindowPrompts:
    """The task's labelled splits as raw prompts; train and val also get copies padded with train
    filler (`augment`), for `long_share` of them long repetitive copies (`long_pads`) and for
    `corpus_share` copies padded with the split's own other benign prompts (`corpus_pads`: short
    plain benign prompts of that split only, so val padding never shares a text with train), for
    `doc_share` copies with long benign documents around them (`document_pads`: summedits documents,
    split between train and val by `document_pool`); lengths
    counted with `tokenizer`; test stays plain. What `window_data`
    renders, so a standalone classifier can train on exactly the same prompts."""
    from dsa.data.tasks import guard_task, prompt_source
    from dsa.data.wrappers import augment, corpus_pads, document_pads, document_pool, long_pads, token_counter

    task = guard_task(task_name)
    count = token_counter(tokenizer)
    out = WindowPrompts({}, {}, {}, {}, {})
    documents = _documents() if doc_share > 0 else []  # read once for both splits' pools
    for s in splits:
        recs = [r for r in task.split(s) if r.label is not None]
        prompts = [r.main_text for r in recs]
        labels = [int(r.label) for r in recs]
        kind = ["framed" if r.meta.get("frame") is not None else "plain" for r in recs]
        src = [prompt_source(r) for r in recs]
        # padding only (the wrapper families are already in train through the task's framing)
        extra = [] if s == "test" else [
            (i, k, t) for i, k, t in augment(prompts, seed=seed + (s == "val"), share=share,
                                             pad_tokens=pad_tokens, count=count) if k.startswith("pad_")]
        if s != "test" and long_share > 0:
            extra += long_pads(prompts, seed=seed + (s == "val"), share=long_share, pad_tokens=long_tokens,
                               count=count)
        if s != "test" and corpus_share > 0:
            pool = [p for p, y, k in zip(prompts, labels, kind, strict=True)
                    if y == 0 and k == "plain" and len(p) <= 300]
            extra += corpus_pads(prompts, pool, seed=seed + (s == "val"), share=corpus_share,
                                 pad_tokens=corpus_tokens, count=count)
        if s != "test" and doc_share > 0:
            extra += document_pads(prompts, document_pool(documents, s, seed=seed), seed=seed + (s == "val"),
                                   share=doc_share, pad_tokens=doc_tokens, count=count)
        prompts += [t for _, _, t in extra]
        labels += [labels[i] for i, _, _ in extra]
        kind += [k for _, k, _ in extra]
        src += [src[i] for i, _, _ in extra]
        out.prompts[s], out.y[s], out.kinds[s], out.sources[s] = prompts, np.array(labels), kind, src
        out.n_padded[s] = len(extra)
    return out


def _documents() -> list[str]:
    """Benign documents for `document_pads`: every summedits document (not an eval-only set)."""
    from dsa.data.sources import load_source

    return [r.document for r in load_source("summedits") if r.document]


def window_data(base: Base, task_name: str, layers: Sequence[int], seed: int = 0, share: float = 0.5,
                pad_tokens: Sequence[int] = (40, 120, 300), long_share: float = 0.0,
                long_tokens: Sequence[int] = (500, 900), corpus_share: float = 0.0,
                corpus_tokens: Sequence[int] = (200, 450, 800), doc_share: float = 0.0,
                doc_tokens: Sequence[int] = (300, 600, 900), max_length: int = 1024,
                splits: Sequence[str] = ("train", "val")) -> WindowData:
    """The task's splits (`window_prompts`) as rendered texts with their per-token states; train
    and val also get padded copies, test stays plain."""
    wp = window_prompts(base.tokenizer, task_name, seed=seed, share=share, pad_tokens=pad_tokens,
                        long_share=long_share, long_tokens=long_tokens, corpus_share=corpus_share,
                        corpus_tokens=corpus_tokens, doc_share=doc_share, doc_tokens=doc_tokens, splits=splits)
    texts, states = {}, {}
    for s in splits:
        texts[s] = [render_input(base, p) for p in wp.prompts[s]]
        states[s] = token_states(base, texts[s], layers, max_length=max_length, desc=f"{task_name} {s} tokens")
        log.info("%s %s: %d texts (%d padded), %d tokens", task_name, s, len(texts[s]), wp.n_padded[s],
                 int(states[s].offsets[-1]))
    return WindowData(texts, wp.y, wp.kinds, states, wp.sources)


def kind_group(kind: str) -> str:
    """A training copy's kind as a group: plain, framed (train wrapper families), pad (short train
    filler), pad_long (long repetitive train filler), pad_corpus (other benign prompts) or pad_doc
    (long benign documents)."""
    for g in ("pad_long", "pad_corpus", "pad_doc"):
        if kind.startswith(g):
            return g
    return "pad" if kind.startswith("pad_") else "plain" if kind == "plain" else "framed"
