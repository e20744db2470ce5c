"""Guard tasks (train/val/test Records with fixed seeded splits) and alignment prompt sets.

Every training split is deduplicated against the eval-only sets and within itself before it is
split, so a duplicate can never straddle train and test. Splits use `assign_splits` (seed 0,
70/10/20 by default); see docs/data.md for the resulting counts.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dsa.data.contrast import contrast_records
from dsa.data.records import Record, normalise_text
from dsa.data.sources import OPENAI_MODERATION_HEADS, data_dir, load_source
from dsa.data.splits import SPLITS, assign_splits, deduplicate, eval_key, eval_only_texts
from dsa.data.wrappers import TRAIN_FAMILIES, wrap

Mode = Literal["text", "prompt", "prompt_response", "document_summary"]
GUARD_TASKS = ("toxigen", "summedits", "prompt_safety", "response_harm", "openai_moderation", "xstest")
# prompt_safety positives: (source, red-instruct subsets to keep or None for all)
PROMPT_SAFETY_POSITIVES = (("advbench", None),
                           ("red_instruct_harmful_questions", ("harmfulqa", "catqa_english", "dangerousqa",
                                                               "adversarialqa")),
                           ("do_not_answer", None), ("toxicchat", None))
# prompt_safety negatives besides Alpaca: benign prompts that look harmful (CoCoNot preference
# prompts, PHTest `harmless`; PHTest `controversial` is kept out of the benign label) and real
# users' benign prompts (WildChat, OpenAI-moderation prompts with no flag in any category).
PROMPT_SAFETY_NEGATIVES = ("coconot_pref", "phtest", "wildchat_benign", "openai_moderation")
# Framings of a request: the TRAIN wrapper families of `dsa.data.wrappers` (polite, fiction,
# persuasion, multi-part, document, step-by-step; the held-out families are for evaluation only). A
# seeded share of the TRAINING prompts of both classes is wrapped by one of them, so a wrapper is
# never a label cue: harmful requests in a wrapper stay harmful (hard positives), edgy-but-safe ones
# in the same wrapper stay benign. Val and test are never framed.
FRAMES = tuple(f.name for f in TRAIN_FAMILIES)
FRAMED_SHARE = 0.3
# Do-Not-Answer harm types that are not harmful requests ("Are you human?", "Do you love me?"):
# a chatbot answers them with care, a prompt guard must not flag them.
NOT_HARMFUL_REQUESTS = {"Treat Chatbot as a Human"}
# Hard negatives: benign Alpaca instructions that use the vocabulary of harm ("kill a process",
# "history of the atomic bomb", "reduce drug abuse"). Without them the benign side is bland and a
# guard learns "sensitive word => unsafe". Mined from Alpaca's own splits by this fixed word list.
SENSITIVE_WORDS = re.compile(
    r"\b(?:kill(?:s|ed|ing|er)?|murder\w*|shoot(?:s|ing)?|shot|bomb(?:s|ed|ing)?|weapons?|guns?|drugs?|"
    r"steal(?:s|ing)?|stole|stolen|attack(?:s|ed|ing)?|hack(?:s|ed|er|ers|ing)?|poison\w*|explosi\w+|"
    r"explode\w*|suicide|terror\w*|violen\w+|blood\w*|wars?|fight\w*|crimes?|criminals?|illegal\w*|"
    r"knife|knives|destroy\w*|abus\w+|slave\w*|nazis?|racis\w+|execut(?:e|ed|ion)|assassin\w*|cocaine|"
    r"heroin|alcohol\w*|cheat\w*|fraud\w*|virus\w*|smok(?:e|ing)|burn\w*|hat(?:e|red)|die|death|dead|"
    r"kidnap\w*|robber\w*|thie(?:f|ves)|theft|prison\w*|sex\w*|genocide|holocaust|tortur\w+|"
    r"dangerous|harm\w*|hurt\w*|threat\w*|scam\w*|weed|marijuana|overdose|stab\w*|punch(?:es|ed|ing)?|"
    r"slaughter\w*|injur\w+|discriminat\w+|gambl\w+|lie|lying|spy|spies|surveillance|exploit\w*)\b",
    re.IGNORECASE)


# Alpaca instructions phrased as questions: benign question-form negatives (all of train; val and
# test keep a seeded QUESTION_EVAL_CAP each so the eval splits stay mostly the curated sources).
QUESTION = re.compile(r"^(?:how|what|why|where|when|which|who|can|could|should|is|are|do|does|would)\b",
                      re.IGNORECASE)
QUESTION_EVAL_CAP = 320


@dataclass
class GuardTask:
    """One guard-training task. Single-head tasks use `Record.label`; multi-head use `Record.labels`."""

    name: str
    mode: Mode
    heads: list[str]
    train: list[Record] = field(default_factory=list)
    val: list[Record] = field(default_factory=list)
    test: list[Record] = field(default_factory=list)
    eval_only: bool = False
    description: str = ""

    def split(self, name: str) -> list[Record]:
        """The records of "train", "val" or "test"."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}: expected one of {', '.join(SPLITS)}")
        return getattr(self, name)


def _by_split(name: str, mode: Mode, heads: list[str], records: list[Record], description: str) -> GuardTask:
    return GuardTask(name, mode, heads, *([r for r in records if r.split == s] for s in SPLITS),
                     description=description)


def _hash_order(records: list[Record], seed: int) -> list[Record]:
    """A seeded order that does not depend on file order (a sample = a prefix of it)."""
    return sorted(records, key=lambda r: hashlib.sha256(f"{seed}:{r.id}".encode()).hexdigest())


def prompt_source(r: Record) -> str:
    """The source a prompt_safety record is held out by in leave-one-source-out validation."""
    if r.source == "red_instruct_harmful_questions":
        return r.meta.get("subset") or r.source
    if r.source == "alpaca_instructions" and not r.meta.get("framed_from"):
        return ("alpaca_hard" if r.meta.get("hard_negative") else
                "alpaca_question" if r.meta.get("question_negative") else "alpaca")
    return r.meta.get("framed_from") or r.source


def _u(key: str) -> float:
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / 16**12


def _framed(records: list[Record], seed: int) -> list[Record]:
    """Wrapped copies (a TRAIN family of `dsa.data.wrappers`, see FRAMES) of a seeded FRAMED_SHARE
    of `records`; label and split kept."""
    out = []
    for r in records:
        if _u(f"{seed}:frame:{r.id}") >= FRAMED_SHARE:
            continue
        k = int(_u(f"{seed}:which:{r.id}") * len(FRAMES))
        p = wrap(r.main_text, FRAMES[k], seed=seed)
        out.append(r.model_copy(update={"id": f"{r.id}:frame{k}", "prompt": p, "text": None,
                                        "meta": {**r.meta, "framed_from": prompt_source(r), "frame": k}}))
    return out


def prompt_safety_inputs(root: str | Path | None = None) -> list[Record]:
    """The sourced rows prompt_safety starts from, in deduplication order: positives (harmful
    sources first, so a prompt seen as harmful is never also kept as benign), benign sources,
    then every Alpaca instruction. The contrast prompts and framed copies are added later."""
    positives = [r for name, subsets in PROMPT_SAFETY_POSITIVES for r in load_source(name, root)
                 if (subsets is None or r.meta.get("subset") in subsets)
                 and r.meta.get("types_of_harm") not in NOT_HARMFUL_REQUESTS]
    negatives = [r for name in PROMPT_SAFETY_NEGATIVES for r in load_source(name, root) if r.label == 0]
    return [*positives, *negatives, *load_source("alpaca_instructions", root)]


def _prompt_safety(root: str, seed: int) -> GuardTask:
    against = eval_only_texts(root)
    kept = deduplicate(prompt_safety_inputs(root), against, key=eval_key)
    split_here = assign_splits([r for r in kept if r.source != "alpaca_instructions"], seed)
    out = list(split_here)
    for s in SPLITS:
        n_pos = sum(r.label == 1 and r.split == s for r in split_here)
        pool = [r for r in kept if r.source == "alpaca_instructions" and r.split == s]
        hard = [r.model_copy(update={"meta": {**r.meta, "hard_negative": True}})
                for r in pool if SENSITIVE_WORDS.search(r.main_text)]
        hard_ids = {r.id for r in hard}
        # every hard negative, plus plain Alpaca instructions for half as many as the positives
        plain = _hash_order([r for r in pool if r.id not in hard_ids], seed)[:n_pos // 2]
        taken = hard_ids | {r.id for r in plain}
        # benign QUESTIONS: most harmful training prompts are questions ("How can I ...?") and few
        # benign ones were, so question form itself read as harm ("How do I bake bread?" flagged)
        questions = _hash_order([r.model_copy(update={"meta": {**r.meta, "question_negative": True}})
                                 for r in pool if r.id not in taken and QUESTION.match(r.main_text.strip())], seed)
        out += hard + plain + (questions if s == "train" else questions[:QUESTION_EVAL_CAP])
    # project-written contrast prompts (dsa.data.contrast): the same harm words in benign and
    # harmful senses across twelve domains, with their own seeded per-row splits
    out += deduplicate(contrast_records(seed), against, key=eval_key)
    out += _framed([r for r in out if r.split == "train"], seed)
    return _by_split("prompt_safety", "prompt", ["unsafe"], out,
                     "harmful requests (AdvBench, HarmfulQA, CatQA-en, DangerousQA, AdversarialQA, Do-Not-Answer, "
                     "ToxicChat) vs benign (CoCoNot preference prompts, PHTest harmless, WildChat, OpenAI-moderation "
                     "unflagged, Alpaca hard negatives that use harm words, Alpaca questions, Alpaca sample), "
                     "and the project's contrast prompts (dsa.data.contrast: harm words in benign and harmful "
                     "senses); 30 % of training prompts of both classes also wrapped by a train wrapper family "
                     "(dsa.data.wrappers)")


def _build(name: str, root: str, seed: int) -> GuardTask:
    against = eval_only_texts(root)
    if name == "toxigen":
        recs = assign_splits(deduplicate(load_source("toxigen", root), against, key=eval_key), seed)
        return _by_split(name, "text", ["unsafe"], recs, "ToxiGen human-annotated: toxic (>=4) vs benign (<=2)")
    if name == "summedits":
        # The guard flags the bad class, so here label 1 = INconsistent (the source has 1 = consistent).
        recs = [r.model_copy(update={"label": 1 - r.label}) for r in
                deduplicate(load_source("summedits", root), against) if r.label is not None]
        return _by_split(name, "document_summary", ["unsafe"], assign_splits(recs, seed, group_key="doc_id"),
                         "SummEdits, 8 domains: label 1 = inconsistent summary; split grouped by document")
    if name == "prompt_safety":
        return _prompt_safety(root, seed)
    if name == "response_harm":
        recs = deduplicate(load_source("do_not_answer_responses", root), against)
        # group by question text (not only id): one Do-Not-Answer question appears under two ids
        recs = assign_splits(recs, seed, group_key=lambda r: normalise_text(r.prompt or ""))
        return _by_split(name, "prompt_response", ["unsafe"], recs,
                         "Do-Not-Answer responses of 6 LLMs, label 1 = harmful; split grouped by question")
    if name == "openai_moderation":
        recs = deduplicate(load_source("openai_moderation", root), against, key=eval_key)
        recs = [r.model_copy(update={"labels": {**r.labels, "any": r.label}}) for r in recs]
        return _by_split(name, "prompt", [*OPENAI_MODERATION_HEADS, "any"], assign_splits(recs, seed),
                         "OpenAI moderation eval set; 8 category heads + any (None = not annotated)")
    if name == "xstest":
        return GuardTask(name, "prompt", ["unsafe"], test=load_source("xstest", root), eval_only=True,
                         description="XSTest prompts (eval only): label 1 = unsafe; train guards on prompt_safety")
    raise ValueError(f"unknown guard task {name!r}: expected one of {', '.join(GUARD_TASKS)}")


@functools.lru_cache(maxsize=32)
def _cached_task(name: str, root: str, seed: int) -> GuardTask:
    return _build(name, root, seed)


def _root(root: str | Path | None) -> str:
    return str(Path(root) if root is not None else data_dir())


def guard_task(name: str, root: str | Path | None = None, seed: int = 0) -> GuardTask:
    """Build a guard task from the shared data (cached; the returned lists are fresh copies).

    Args:
        name: one of GUARD_TASKS.
        root: the data folder (default `data_dir()`).
        seed: the split seed; 0 is the documented one.
    """
    if name not in GUARD_TASKS:
        raise ValueError(f"unknown guard task {name!r}: expected one of {', '.join(GUARD_TASKS)}")
    t = _cached_task(name, _root(root), seed)
    return dataclasses.replace(t, heads=list(t.heads), train=list(t.train), val=list(t.val), test=list(t.test))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")


def harmful_prompts(split: str, root: str | Path | None = None, seed: int = 0) -> list[str]:
    """Harmful requests of one split: the prompt_safety positives (deduped against eval-only sets)."""
    _check_split(split)
    return [r.main_text for r in guard_task("prompt_safety", root, seed).split(split) if r.label == 1]


def benign_prompts(split: str, root: str | Path | None = None) -> list[str]:
    """Benign instructions of one split: every alpaca_instructions row of that official split file,
    deduped against the eval-only sets and within itself."""
    _check_split(split)
    rows = [r for r in load_source("alpaca_instructions", root) if r.split == split]
    return [r.main_text for r in deduplicate(rows, eval_only_texts(root), key=eval_key)]
