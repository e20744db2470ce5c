"""Project-authored contrast prompts: the intent, not the word (issue #22, build item 3).

What: `CONTRAST`, a tuple of `(domain, label, prompt)` rows written by hand for this project
and kept as package data in `contrast_prompts.json` ({"benign" | "harmful": {domain: [prompt, ...]}})
(label 1 = a harmful request a prompt guard must flag, 0 = benign). Twelve domains; in each,
benign and harmful rows share their vocabulary ("kill", "execute", "poison", "shoot", "dose",
"butcher", "phishing", "leaked passwords", "hurt myself", ...) so that only the intent tells
them apart: a zombie process, a stage that a comedian "killed", a Skyrim poison, the history of
the Manhattan Project, weeds, a lethal dose kept away from a dog, a chicken to butcher, a
rear-naked choke in training, a phishing drill for staff, why bleach and ammonia must not be
mixed, one's own leaked passwords, and asking for help when sad or suicidal are benign (0);
poisoning a coworker, writing a phishing email to steal customers' passwords, an insulin dose
that would kill a parent, or asking for a method of suicide are harmful (1).

Why: the public training sets teach a guard that harm words mean harm (harmful sets are full
of them, benign instruction sets nearly free of them), so it over-flags homonyms, idioms,
games, history, medicine and help-seeking, and may miss a harmful request phrased in everyday
words. These rows give it both sides of the same words.

Rules:
- Written from scratch for this project. Nothing here is copied or paraphrased from an
  eval-only set (XSTest, StrongREJECT, CoCoNot's two test files, or the utility evals);
  tests/unit/test_contrast.py checks that no prompt reaches token-Jaccard 0.6 (lower-cased
  word sets) with any eval-only prompt, and that there are no duplicates.
- Harmful rows are requests only: they state an intent and ask, and carry no operational
  detail themselves.
- Self-harm requests (asking for a method, hiding self-harm or starvation) are label 1;
  help-seeking by someone who is struggling, or worried about someone else, is label 0.
- Splits are seeded per row (`contrast_records(seed)`, `assign_splits`' default 70/10/20 on
  the content id), so every domain lands in train; the seed, like any split, is fixed and
  must not be moved to improve a number.
"""

from __future__ import annotations

import json
from importlib.resources import files

from dsa.data.records import Record, content_id
from dsa.data.splits import assign_splits

SOURCE = "project_contrast"
DOMAINS = ("computing", "figurative", "games_fiction", "history_definitions", "safe_targets",
           "medicine_safety", "cooking_household", "sports_martial_arts", "security_law",
           "chemistry", "privacy", "mental_health")
PROMPTS_FILE = "contrast_prompts.json"  # beside this module, shipped in the wheel (pyproject package-data)


def load_prompts() -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """({domain: benign prompts}, {domain: harmful prompts}) as `PROMPTS_FILE` holds them, in its order."""
    data = json.loads(files("dsa.data").joinpath(PROMPTS_FILE).read_text(encoding="utf-8"))
    benign, harmful = ({d: tuple(p) for d, p in data[k].items()} for k in ("benign", "harmful"))
    if set(benign) != set(DOMAINS) or set(harmful) != set(DOMAINS):
        raise ValueError(f"{PROMPTS_FILE}: its domains differ from DOMAINS {DOMAINS}")
    return benign, harmful


_BENIGN, _HARMFUL = load_prompts()
CONTRAST: tuple[tuple[str, int, str], ...] = tuple(
    (domain, label, prompt)
    for domain in DOMAINS
    for label, table in ((0, _BENIGN), (1, _HARMFUL))
    for prompt in table[domain]
)


def contrast_records(seed: int = 0) -> list[Record]:
    """`CONTRAST` as prompt Records (source "project_contrast", meta {"domain": ...}), each row's
    split seeded by `assign_splits` (default 70/10/20 on the content id, not grouped)."""
    records = [Record(id=content_id(SOURCE, prompt), source=SOURCE, prompt=prompt, label=label,
                      meta={"domain": domain})
               for domain, label, prompt in CONTRAST]
    return assign_splits(records, seed=seed)
