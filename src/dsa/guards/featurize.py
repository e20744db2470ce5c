"""Guard tasks as clients of the feature store: render records as chat text, pick the seeded
splits, and read the views guard heads train on from `dsa.features.store` (one base forward per
text for mean / last-token states of every layer and a last-tokens window of ladder layers).

The store, its layout and the extraction live in `dsa.features.store`; the render-and-truncate
path (`render_input`, `tokenize`) in `dsa.features.text`, shared with `classify` and the runtime.
The names below stay importable from here for older code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from dsa.adapter_io import atomic_write_text
from dsa.base import Base
from dsa.features.store import (  # noqa: F401  (re-exported for older imports)
    LADDER_LAYERS,
    FeatureViews,
    _forward_unit,
    _hashes_file,
    default_root,
    extract_views,
    load_features,
    store_dir,
    store_index,
)
from dsa.features.text import render_input, text_hash, tokenize  # noqa: F401
from dsa.taps import resolve_layers

PLR_LAYERS = "all"  # pooled readouts are cached for every layer; heads pick theirs
TaskFeatures = FeatureViews  # the views of one task's texts


def render(base: Base, record, mode: str, doc_tokens: int = 384) -> str:
    """The chat text a guard reads for one record (what the generation prefill would see).

    Documents keep their first `doc_tokens` tokens so that the summary after them always fits in
    512 tokens: texts of one document then share its forward (at 448, 63 % of SummEdits texts ran
    over 512, were left-truncated and lost the shared prefix).
    """
    if mode == "prompt_response":
        return render_input(base, [{"role": "user", "content": record.prompt},
                                   {"role": "assistant", "content": record.response}])
    if mode == "document_summary":
        doc = record.document
        ids = base.tokenizer(doc, add_special_tokens=False)["input_ids"]
        if len(ids) > doc_tokens:
            doc = base.tokenizer.decode(ids[:doc_tokens])
        return render_input(base, f"Document:\n{doc}\n\nSummary:\n{record.summary}")
    return render_input(base, record.main_text)


def _import_legacy(base: Base, d: Path, texts: list[str], hashes: list[str], name: str, max_length: int,
                   window: int, ladder: tuple[int, ...], root: Path | None) -> None:
    """Move the shards of the former per-list cache of exactly these texts into the store
    (rename + hash list; no base pass, no copy of the tensors)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    legacy = (Path(root) if root else default_root()) / base.fingerprint / \
        f"{name}-len{max_length}-w{window}-{'_'.join(map(str, ladder))}-{h.hexdigest()[:16]}"
    if not legacy.is_dir():
        return
    for shard in sorted(legacy.glob("shard-*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            rows = f.get_tensor("index").tolist()
        target = d / f"shard-legacy-{legacy.name[-16:]}-{shard.stem.removeprefix('shard-')}.safetensors"
        # hash list first: the store counts a shard only when both exist, so a kill in between
        # leaves the text in the legacy directory, not lost
        atomic_write_text(_hashes_file(target), json.dumps({"hashes": [hashes[i] for i in rows]}))
        shard.replace(target)
    if not any(legacy.iterdir()):
        legacy.rmdir()


def extract_task_features(base: Base, texts: Sequence[str], name: str, *, groups: Sequence[object] | None = None,
                          max_length: int = 256, window: int = 64, ladder_layers: Sequence[int] = LADDER_LAYERS,
                          shard_size: int = 256, batch_tokens: int = 4096, max_batch: int = 64,
                          root: Path | None = None, progress: bool = True, tokens: bool = True) -> TaskFeatures:
    """Views of `texts` from the feature store (`dsa.features.store.extract_views`), after moving
    in this list's shards of the former per-list cache, if any.

    Args:
        texts: rendered chat texts (`render`); each keeps its last `max_length` tokens.
        name: a label for progress output and the former per-list cache (the store is shared).
        groups: optional group key per text (e.g. the document); texts of a group share their
            common token prefix's forward. Without it all texts share the chat-template prefix.
        window: per-token ladder states are kept for the last `window` tokens of each text.
    Returns views aligned with `texts`.
    """
    texts = list(texts)
    ladder = tuple(resolve_layers(ladder_layers, base.n_layers))
    d = store_dir(base, max_length, window, ladder, root)
    d.mkdir(parents=True, exist_ok=True)
    _import_legacy(base, d, texts, [text_hash(t) for t in texts], name, max_length, window, ladder, root)
    # _forward_unit is looked up here at call time, so tests that patch this module's name count forwards
    return extract_views(base, texts, name, groups=groups, max_length=max_length, window=window,
                         ladder_layers=ladder, shard_size=shard_size, batch_tokens=batch_tokens,
                         max_batch=max_batch, root=root, progress=progress, tokens=tokens,
                         forward_unit=_forward_unit)


TASK_MAX_LENGTH = {"summedits": 512, "openai_moderation": 128}  # others: 256
# Training-set caps (seeded subsample) that keep one base pass per text affordable on a shared
# 2-core CPU; val and test splits are always complete. None = the whole train split.
TRAIN_CAP = {"prompt_safety": None, "toxigen": 2500, "summedits": 1000, "response_harm": 600,
             "openai_moderation": None}
# Val/test kept whole except where listed: the fraction of groups (questions) kept, seeded.
EVAL_FRACTION = {"response_harm": 0.5}


def eval_subset(task_name: str, records: list) -> list:
    """Val/test records actually scored: all of them, or a seeded fraction of whole groups."""
    frac = EVAL_FRACTION.get(task_name)
    if frac is None:
        return list(records)

    def u(r):  # group = the question, as in the split rule
        key = f"subset:0:{' '.join((r.prompt or '').lower().split())}"  # not the split hash
        return int(hashlib.sha256(key.encode())
                   .hexdigest()[:8], 16) / 16**8

    return [r for r in records if u(r) < frac]


_CAP = object()  # "the task's TRAIN_CAP"


def train_subset(task_name: str, records: list, cap: int | None = _CAP) -> list:
    """The seeded training subset used by every method (DSA heads and baselines alike).

    Records are taken in sha256(seed 0 + group) order, so whole groups (SummEdits documents) are kept
    together; response_harm keeps every positive (3.4 % of rows) and fills up with negatives;
    prompt_safety keeps every hard negative (benign prompts that use harm words) and samples the rest.
    """
    cap = TRAIN_CAP.get(task_name) if cap is _CAP else cap
    if cap is None or len(records) <= cap:
        return list(records)

    def key(r):
        g = r.meta.get("doc_id") if task_name == "summedits" else r.id
        return hashlib.sha256(f"0:{g}".encode()).hexdigest()

    ordered = sorted(records, key=key)
    if task_name == "summedits":
        return ordered[:cap]
    pos = [r for r in ordered if r.label == 1]
    neg = sorted((r for r in ordered if r.label != 1), key=lambda r: not r.meta.get("hard_negative"))
    n_pos = len(pos) if task_name == "response_harm" else round(cap * len(pos) / len(records))
    return pos[:n_pos] + neg[:cap - n_pos]  # stratified: the train class ratio is kept


def record_labels(records, heads: Sequence[str]) -> torch.Tensor:
    """[n, heads] float labels; NaN where a head is not annotated."""
    out = torch.full((len(records), len(heads)), float("nan"))
    for i, r in enumerate(records):
        for j, h in enumerate(heads):
            v = r.labels.get(h) if (len(heads) > 1 and r.labels) else r.label
            if v is not None:
                out[i, j] = float(v)
    return out


@dataclass
class SplitData:
    texts: list[str]
    labels: torch.Tensor  # [n, heads]
    groups: list[str]  # texts of a group share a prefix (the document / the question)
    feats: TaskFeatures | None = None
    records: list | None = None  # the records rendered as `texts` (prompt_response prefix rows read them)


def task_splits(base: Base, name, train_cap: int | None = _CAP,
                extra: dict | None = None) -> tuple[list[str], str, dict[str, SplitData]]:
    """(heads, mode, {split: SplitData}) of a guard task (a name of dsa.data.GUARD_TASKS, or a
    `GuardTask` such as a user's file from `dsa.guards.user`), rendered as chat text; the training
    split is capped at `train_cap` records (default: the task's TRAIN_CAP; None = all of it).
    `extra` ({split: records}) joins a split after the cap and the eval subset."""
    from dsa.data import guard_task

    task = guard_task(name) if isinstance(name, str) else name
    splits = {}
    for s in ("train", "val", "test"):
        recs = task.split(s)
        recs = train_subset(task.name, recs, train_cap) if s == "train" else eval_subset(task.name, recs)
        recs = recs + list((extra or {}).get(s, []))
        if recs:
            groups = [r.document if task.mode == "document_summary" else
                      r.prompt if task.mode == "prompt_response" else "" for r in recs]
            splits[s] = SplitData([render(base, r, task.mode) for r in recs], record_labels(recs, task.heads),
                                  groups, records=recs)
    return task.heads, task.mode, splits


def features_cached(base: Base, name: str, *, max_length: int | None = None, window: int = 64) -> bool:
    """Whether every text of a task is already in the feature store (no base pass needed)."""
    _, _, splits = task_splits(base, name)
    ladder = tuple(resolve_layers(LADDER_LAYERS, base.n_layers))
    index = store_index(store_dir(base, max_length or TASK_MAX_LENGTH.get(name, 256), window, ladder))
    return all(text_hash(t) in index for s in splits.values() for t in s.texts)


def task_features(base: Base, name: str, *, max_length: int | None = None, window: int = 64,
                  progress: bool = True, train_cap: int | None = _CAP, tokens: bool = True,
                  ladder: Sequence[int | float | str] = LADDER_LAYERS,
                  root: Path | None = None, extra: dict | None = None) -> tuple[list[str], str, dict[str, SplitData]]:
    """`task_splits` with features from the store attached (`root`: another store than the default)."""
    heads, mode, splits = task_splits(base, name, train_cap, extra)
    name = name if isinstance(name, str) else name.name
    order = [s for s in ("train", "val", "test") if s in splits]
    texts = [t for s in order for t in splits[s].texts]
    groups = [g for s in order for g in splits[s].groups]
    feats = extract_task_features(base, texts, name, groups=groups, root=root,
                                  max_length=max_length or TASK_MAX_LENGTH.get(name, 256),
                                  window=window, progress=progress, tokens=tokens, ladder_layers=ladder)
    start = 0
    for s in order:
        n = len(splits[s].texts)
        splits[s].feats = feats.subset(range(start, start + n))
        start += n
    return heads, mode, splits
