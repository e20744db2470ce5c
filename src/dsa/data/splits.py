"""Seeded, order-independent splits and deduplication (within a set and against eval-only sets).

A record's split depends only on `sha256(f"{seed}:{group or id}")`, so adding, removing or
reordering other rows never moves it; a group (e.g. one question with several responses)
always lands in a single split.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from dsa.data.records import Record, normalise_text
from dsa.data.sources import data_dir, load_source

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
# Never train or tune on these (shared/data/README.md); "vicuna_bench" ships inside mt_bench/.
EVAL_ONLY_SOURCES = ("strongreject", "xstest", "mmlu", "mt_bench", "vicuna_bench", "alpaca_eval", "gsm8k",
                     "coconot_contrast_eval", "coconot_eval", "ifeval")

GroupKey = Callable[[Record], str] | str | None


def split_of(key: str, seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> str:
    """The split ("train"/"val"/"test") that `key` hashes to under `seed`."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def assign_splits(records: Iterable[Record], seed: int = 0,
                  fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
                  group_key: GroupKey = None) -> list[Record]:
    """Copies of `records` with `split` set by hashing `f"{seed}:{group or id}"`.

    Args:
        records: the records (their current split is overwritten).
        seed: changes the whole assignment; fix it and write it down.
        fractions: expected train/val/test shares (must sum to 1).
        group_key: a `meta` key, or a function Record -> group name; a group never spans splits.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    if isinstance(group_key, str):
        meta_key = group_key
        group_key = lambda r: str(r.meta[meta_key])  # noqa: E731
    return [r.model_copy(update={"split": split_of(group_key(r) if group_key else r.id, seed, fractions)})
            for r in records]


def dedup_key(r: Record) -> str:
    """Exact-duplicate key: all content fields, normalised."""
    return "\x1f".join(normalise_text(getattr(r, f) or "") for f in
                       ("text", "prompt", "response", "document", "summary"))


def eval_key(r: Record) -> str:
    """What is compared with the eval-only sets: the normalised prompt (or text)."""
    return normalise_text(r.prompt if r.prompt is not None else (r.text or ""))


@functools.lru_cache(maxsize=8)
def _eval_only(root: str) -> frozenset[str]:
    return frozenset(normalise_text(t) for name in EVAL_ONLY_SOURCES
                     for r in load_source(name, root) if r.split == "eval"
                     for t in (r.meta.get("turns") or [r.prompt or r.text or ""])) - {""}


def eval_only_texts(root: str | Path | None = None) -> set[str]:
    """Normalised prompts/texts of every eval-only set (all MT-Bench turns included)."""
    return set(_eval_only(str(Path(root) if root is not None else data_dir())))


def deduplicate(records: Iterable[Record], against: set[str] | frozenset[str] = frozenset(),
                key: Callable[[Record], str] = dedup_key) -> list[Record]:
    """Drop records whose `eval_key` is in `against`, then repeats of `key` (first one wins)."""
    seen: set[str] = set()
    out, n_eval, n_dup = [], 0, 0
    for r in records:
        if eval_key(r) in against:
            n_eval += 1
            continue
        k = key(r)
        if k in seen:
            n_dup += 1
            continue
        seen.add(k)
        out.append(r)
    if n_eval or n_dup:
        log.info("dedup: dropped %d eval-only overlaps and %d duplicates, kept %d", n_eval, n_dup, len(out))
    return out
