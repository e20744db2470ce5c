"""Seeded, order-independent splits and deduplication (within a set and against eval-only sets).

A record's split depends only on `sha256(f"{seed}:{group or id}")`, so adding, removing or
reordering other rows never moves it; a group (e.g. one question with several responses)
always lands in a single split.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
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


_WORD = re.compile(r"[^\W_]+")
SHINGLE = 6         # words per shingle of the containment test
NEAR_SHARE = 0.6    # a text whose shingles lie this much inside one eval-only text is a near-duplicate,
NEAR_JACCARD = 0.7  # and so is one whose word set has this Jaccard similarity with an eval-only text's


def match_words(s: str) -> list[str]:
    """The words a near-duplicate test compares: NFKC, lower case, letters and digits only (quotes,
    punctuation and spacing never tell two prompts apart)."""
    return _WORD.findall(unicodedata.normalize("NFKC", str(s)).lower())


def compared_text(r: Record) -> str:
    """The text of a record that is compared with the eval-only sets: its prompt, else its text."""
    return r.prompt if r.prompt is not None else (r.text or "")


def eval_key(r: Record) -> str:
    """What is compared with the eval-only sets (and deduplicated within a prompt task): the
    prompt's (or text's) `match_words`."""
    return " ".join(match_words(compared_text(r)))


class EvalIndex:
    """The eval-only texts, asked `text in index`: true for the same words (`match_words`) or a
    near-duplicate: at least NEAR_SHARE of the text's SHINGLE-word shingles inside one eval-only
    text (a prompt cut from one), or a word-set Jaccard of at least NEAR_JACCARD with one (the same
    template with another slot: "... invented in Italy?" / "... in America?"). Iterates the texts."""

    def __init__(self, texts: Iterable[str]):
        self.texts = sorted({t for t in texts if t.strip()})
        words = [match_words(t) for t in self.texts]
        self._keys = {" ".join(w): t for w, t in zip(words, self.texts, strict=True)}
        self._keys.pop("", None)
        self._sets = [frozenset(w) for w in words]
        self._shingles: dict[tuple[str, ...], list[int]] = defaultdict(list)
        self._words: dict[str, list[int]] = defaultdict(list)
        self._memo: dict[str, bool] = {}
        for i, w in enumerate(words):
            for sh in set(_shingles(w)):
                self._shingles[sh].append(i)
            for x in self._sets[i]:
                self._words[x].append(i)

    def _match(self, text: str) -> tuple[tuple[float, int | None], tuple[float, int | None]]:
        """((shingle containment, eval text), (word Jaccard, eval text)) of the best eval-only text
        for each; exact word matches score (1.0, it) on both."""
        words = match_words(text)
        if (same := self._keys.get(" ".join(words))) is not None:
            i = self.texts.index(same)
            return (1.0, i), (1.0, i)
        contained: tuple[float, int | None] = (0.0, None)
        shingles = set(_shingles(words))
        if hits := Counter(i for sh in shingles for i in self._shingles.get(sh, ())):
            i, n = hits.most_common(1)[0]
            contained = (n / len(shingles), i)
        similar: tuple[float, int | None] = (0.0, None)
        a = frozenset(words)
        # prefix filter: J >= t needs one of a's |a| - ceil(t |a|) + 1 rarest words in common
        rare = sorted(a, key=lambda w: (len(self._words.get(w, ())), w))[:len(a) - math.ceil(NEAR_JACCARD * len(a)) + 1]
        for i in {i for w in rare for i in self._words.get(w, ())}:
            j = len(a & self._sets[i]) / len(a | self._sets[i])
            if j > similar[0]:
                similar = (j, i)
        return contained, similar

    def nearest(self, text: str) -> tuple[float, str | None]:
        """(similarity, the eval-only text): the larger of shingle containment and word Jaccard
        (1.0 for the same words); (0.0, None) when no eval-only text comes close."""
        score, i = max(self._match(text), key=lambda m: m[0])
        return score, (self.texts[i] if i is not None else None)

    def __contains__(self, text: object) -> bool:
        if not isinstance(text, str):
            return False
        hit = self._memo.get(text)  # a task build, its prompt sets and docs/data.md ask for the same texts
        if hit is None:
            (contained, _), (similar, _) = self._match(text)
            hit = self._memo[text] = contained >= NEAR_SHARE or similar >= NEAR_JACCARD
        return hit

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    def __len__(self) -> int:
        return len(self.texts)


def _shingles(words: list[str]) -> list[tuple[str, ...]]:
    return [tuple(words[j:j + SHINGLE]) for j in range(len(words) - SHINGLE + 1)]


@functools.lru_cache(maxsize=8)
def _eval_only(root: str) -> EvalIndex:
    return EvalIndex(normalise_text(t) for name in EVAL_ONLY_SOURCES
                     for r in load_source(name, root) if r.split == "eval"
                     for t in (r.meta.get("turns") or [r.prompt or r.text or ""]))


def eval_only_texts(root: str | Path | None = None) -> EvalIndex:
    """Every eval-only set's prompts/texts (all MT-Bench turns included), normalised, as an
    `EvalIndex`: `text in eval_only_texts()` is true for exact and near-duplicates."""
    return _eval_only(str(Path(root) if root is not None else data_dir()))


def deduplicate(records: Iterable[Record], against: EvalIndex | set[str] | frozenset[str] = frozenset(),
                key: Callable[[Record], str] = dedup_key) -> list[Record]:
    """Drop records whose prompt (or text) is in `against` (exact or near-duplicates, see `EvalIndex`;
    a set of texts is indexed the same way), then repeats of `key` (first one wins)."""
    index = against if isinstance(against, EvalIndex) else EvalIndex(against)
    seen: set[str] = set()
    out, n_eval, n_dup = [], 0, 0
    for r in records:
        if compared_text(r) in index:
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
