"""The project-authored contrast prompts (dsa.data.contrast): counts, balance per domain, no
duplicates, seeded splits, and no near-duplicate of any eval-only prompt."""

import hashlib
import json
import math
import re
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from dsa.data import eval_only_texts, normalise_text
from dsa.data.contrast import CONTRAST, DOMAINS, PROMPTS_FILE, SOURCE, contrast_records, load_prompts
from tests.shared_data import require_data

NEAR_DUPLICATE = 0.6  # token-Jaccard (lower-cased word sets) that counts as a near-duplicate


def words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def test_counts_per_label_and_domain():
    labels = Counter(label for _, label, _ in CONTRAST)
    assert 190 <= labels[0] <= 215 and 110 <= labels[1] <= 130, labels
    assert {d for d, _, _ in CONTRAST} == set(DOMAINS) and len(DOMAINS) >= 12
    per = Counter((d, label) for d, label, _ in CONTRAST)
    for d in DOMAINS:
        assert per[d, 0] >= 12 and per[d, 1] >= 8, (d, per[d, 0], per[d, 1])


def test_rows_are_well_formed_and_unique():
    assert all(label in (0, 1) and prompt == prompt.strip() and len(prompt) >= 15
               for _, label, prompt in CONTRAST)
    keys = Counter(normalise_text(p) for _, _, p in CONTRAST)
    assert not [k for k, n in keys.items() if n > 1]


def test_records_and_seeded_splits():
    recs = contrast_records()
    assert len(recs) == len(CONTRAST) and len({r.id for r in recs}) == len(recs)
    assert all(r.source == SOURCE and r.input_kind == "prompt" and set(r.meta) == {"domain"} for r in recs)
    assert [(r.meta["domain"], r.label, r.prompt) for r in recs] == list(CONTRAST)
    assert [r.split for r in recs] == [r.split for r in contrast_records(0)]  # fixed seed, fixed splits
    assert [r.split for r in recs] != [r.split for r in contrast_records(1)]
    shares = Counter(r.split for r in recs)
    assert 0.6 < shares["train"] / len(recs) < 0.8 and shares["val"] and shares["test"], shares
    in_train = {(r.meta["domain"], r.label) for r in recs if r.split == "train"}
    assert in_train == {(d, label) for d in DOMAINS for label in (0, 1)}


# sha256 of json.dumps(CONTRAST, ensure_ascii=False) as written in code, before the prompts moved
# to contrast_prompts.json, and of the records' (id, split, prompt, label, meta) at seed 0: the rows,
# their order and their splits are fixed
CONTRAST_SHA256 = "5bc4150f702806407d4f9877b3bc8e02b1ca2a40527dda0022a294d8279a1da7"
RECORDS_SHA256 = "066f8d2b383455f5f7d7fff106d56c9a3a2d6cddc5f18d573698aafbe733ffcd"


def test_the_rows_are_the_ones_written_byte_for_byte_in_order():
    assert len(CONTRAST) == 324
    assert hashlib.sha256(json.dumps(CONTRAST, ensure_ascii=False).encode()).hexdigest() == CONTRAST_SHA256
    rows = [(r.id, r.split, r.prompt, r.label, r.meta) for r in contrast_records(0)]
    assert hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest() == RECORDS_SHA256


def test_the_prompts_file_ships_in_the_wheel_and_loads():
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert PROMPTS_FILE in pyproject["tool"]["setuptools"]["package-data"]["dsa.data"]
    benign, harmful = load_prompts()
    assert list(benign) == list(harmful) == list(DOMAINS)  # the file's order is DOMAINS' order
    assert sum(map(len, benign.values())) + sum(map(len, harmful.values())) == len(CONTRAST)


@pytest.fixture(scope="module")
def eval_only():
    root = require_data("cannot check against the eval-only sets")
    return eval_only_texts(root)


def near_duplicates(prompts: list[str], texts: list[str], threshold: float) -> list[tuple[float, str, str]]:
    """Every (Jaccard, prompt, text) with Jaccard >= threshold, exactly, via a prefix filter.

    If J(A, B) >= t then |A & B| >= ceil(t |A|), so A & B holds one of A's
    |A| - ceil(t |A|) + 1 rarest words: only texts holding one of those are compared.
    """
    others = [words(t) for t in texts]
    index: dict[str, list[int]] = defaultdict(list)
    for j, ws in enumerate(others):
        for w in ws:
            index[w].append(j)
    hits = []
    for prompt in prompts:
        a = sorted(words(prompt), key=lambda w: (len(index.get(w, ())), w))
        prefix = a[:len(a) - math.ceil(threshold * len(a)) + 1]
        for j in {j for w in prefix for j in index.get(w, ())}:
            if (score := jaccard(frozenset(a), others[j])) >= threshold:
                hits.append((round(score, 3), prompt, texts[j]))
    return hits


def test_near_duplicate_filter_is_exact():
    texts = ["how do i kill a python process", "the cat sat on the mat", "kill the python",
             "kill it", "a"]
    prompts = ["How do I kill a Python process?", "kill the python process", "bake a lemon cake",
               "the cat", "kill"]
    for t in (0.1, 0.25, 0.5, 0.6, 1.0):
        brute = {(round(jaccard(words(p), words(x)), 3), p, x) for p in prompts for x in texts
                 if jaccard(words(p), words(x)) >= t}
        assert set(near_duplicates(prompts, texts, t)) == brute, t


def test_no_near_duplicate_of_an_eval_only_prompt(eval_only):
    texts = sorted(eval_only)
    assert len(texts) > 1000  # XSTest, StrongREJECT, CoCoNot eval files, MMLU test, ... all loaded
    prompts = [p for _, _, p in CONTRAST]
    assert not [p for p in prompts if p in eval_only]  # exact or near (EvalIndex)
    hits = near_duplicates(prompts, texts, NEAR_DUPLICATE)
    assert not hits, sorted(hits, reverse=True)
