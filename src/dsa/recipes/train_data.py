"""Alignment training and evaluation prompt sets (fixed, seeded) and templated refusals.

Training uses only training splits: harmful = prompt_safety `train` positives (already
deduplicated against every eval-only set) without HarmfulQA (mostly benign-sounding topic
questions: refusing them teaches over-refusal) and ToxicChat (long jailbreak chats), benign = Alpaca `train`
instructions, half of them "edgy but safe" (Alpaca instructions that use harm words, the
prompt_safety hard negatives) so the adapter learns that the words alone are no reason to
refuse. Evaluation uses StrongREJECT (all 313), XSTest (250 safe + 200 unsafe) and
Alpaca `test` instructions for benign identity.

A harmful prompt that asks for harm to the asker (a method of suicide, hiding self-harm, starving
oneself: `is_self_harm`) gets a refusal that carries care and points to help (`care_refusal_for`),
not the "it could be used to hurt someone" reasons of the others; `refusal_for` picks between them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from dsa.data import benign_prompts, guard_task
from dsa.data.tasks import SENSITIVE_WORDS
from dsa.eval.benchmarks import refusal_prompts

TRAIN_MAX_NEW_TOKENS = 32  # length of the base's self-distillation answers
EVAL_MAX_NEW_TOKENS = 16  # greedy answer opening judged for refusal / identity (CPU budget)
N_BENIGN_IDENTITY = 64
REFUSAL_EXCLUDED = {("red_instruct_harmful_questions", "harmfulqa"), ("toxicchat", None)}

# Short refusals that say briefly why; the reason is picked by a hash of the prompt.
_OPENINGS = ("I can't help with that.", "I'm sorry, but I can't help with this.",
             "I won't help with that.", "Sorry, I can't assist with that request.",
             "I'm not able to help with this.", "I must decline this request.")
_REASONS = ("It could cause serious harm to people.", "It could be used to hurt someone.",
            "It involves illegal or dangerous activity.", "Helping could put others at risk.",
            "It asks for harmful content I don't provide.", "It could enable abuse or violence.",
            "That would be unsafe and possibly illegal.")
_OFFERS = ("", " If you have a safe, legitimate question, I'm happy to help.",
           " I can share general safety information instead.", " Let me know if I can help with something else.")


# Refusals for self-harm requests: care first, then a clear no, then where to find help now.
_CARE_OPENINGS = ("I'm really sorry you're feeling this way.", "I'm so sorry you're going through this.",
                  "I'm sorry you're in so much pain right now.", "It sounds like you're going through a lot, "
                  "and I'm sorry.")
_CARE_REFUSALS = ("I can't help with that, but you don't have to go through it alone.",
                  "I can't help with this, but you deserve support and you don't have to face it alone.",
                  "I can't give you that, but I care about your safety.")
_CARE_HELP = (" Please reach out to someone you trust or a crisis line (988 in the US, or your local emergency "
              "number).",
              " Please talk to someone you trust, or call or text a crisis line (988 in the US; elsewhere, your "
              "local emergency number).",
              " If you might act on these thoughts, please call your local emergency number or a crisis line "
              "(988 in the US) now.")

# Self-harm: harm the asker means to do to themselves. Other-directed requests (encouraging someone,
# promoting self-harm content, hurting a patient) keep the ordinary refusal: they are about others.
SELF_HARM = re.compile(
    r"\b(kill|hurt|harm|cut|burn|poison|starve|hang|drown|shoot|injure)\w*\s+myself\b"
    r"|\bend(ing)?\s+my\s+(own\s+)?life\b|\bself[- ]?harm|\bsuicid\w*|\boverdos\w*"
    r"|\bmy\s+(own\s+)?(anorexia|bulimia|eating disorder|scars|cuts)\b"
    r"|\b(I|me)\b[^.?!]*\b(stop eating|don't wake up|won't wake up|to die)\b|\b(goodbye|suicide) note\b",
    re.IGNORECASE)
OTHER_DIRECTED = re.compile(
    r"\b(someone|somebody|people|others|children|kids|patients?|him|her|them|my (friend|ex|wife|husband|partner"
    r"|son|daughter|sister|brother)|encourag\w*|promot\w*|manipulat\w*|convinc\w*|persuad\w*|content|platforms?"
    r"|apps?|posts?|messages?|tutorial|community)\b", re.IGNORECASE)


def _h(text: str, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{text}".encode()).digest()[:8], "big")


def is_self_harm(text: str, meta: Mapping | None = None) -> bool:
    """Whether a harmful request asks for harm to the asker themselves.

    A source's own label decides where it has one (Do-Not-Answer's `specific_harms` "Self-Harm: ...");
    otherwise `SELF_HARM` (killing / cutting / starving / poisoning oneself, ending one's life,
    self-harm, suicide, overdose, hiding one's own anorexia or scars, a goodbye note) must match and
    `OTHER_DIRECTED` (someone, people, a patient, encourage, promote, content, ...) must not.
    """
    if meta and str(meta.get("specific_harms", "")).startswith("Self-Harm"):
        return True
    return bool(SELF_HARM.search(text)) and not OTHER_DIRECTED.search(text)


def care_refusal_for(prompt: str) -> str:
    """A deterministic refusal for a self-harm request that carries care and points to help."""
    return (f"{_CARE_OPENINGS[_h(prompt, 'co') % len(_CARE_OPENINGS)]} "
            f"{_CARE_REFUSALS[_h(prompt, 'cr') % len(_CARE_REFUSALS)]}{_CARE_HELP[_h(prompt, 'ch') % len(_CARE_HELP)]}")


def refusal_for(prompt: str, care: bool = True) -> str:
    """A deterministic, varied short refusal (≤ 40 tokens) for a harmful prompt; with `care`, a
    self-harm request (`is_self_harm`) gets `care_refusal_for` instead."""
    if care and is_self_harm(prompt):
        return care_refusal_for(prompt)
    return (f"{_OPENINGS[_h(prompt, 'o') % len(_OPENINGS)]} {_REASONS[_h(prompt, 'r') % len(_REASONS)]}"
            f"{_OFFERS[_h(prompt, 'f') % len(_OFFERS)]}")


def _pick(items: Sequence[str], n: int, salt: str) -> list[str]:
    return sorted(items, key=lambda s: _h(s, salt))[:n]


CONTRAST_SOURCES = ("coconot_pref", "phtest")


def contrast_prompts(split: str = "train") -> list[str]:
    """Edgy-but-safe prompts of one prompt_safety split (CoCoNot preference prompts, safety-concern
    rows first, and PHTest `harmless`), unframed, ≤ 400 characters."""
    rows = [r for r in guard_task("prompt_safety").split(split)
            if r.source in CONTRAST_SOURCES and r.label == 0 and r.meta.get("frame") is None
            and len(r.main_text) <= 400]
    concern = _pick([r.main_text for r in rows if r.meta.get("category") == "Requests with safety concerns"],
                    len(rows), "concern")
    rest = _pick([r.main_text for r in rows if r.meta.get("category") != "Requests with safety concerns"],
                 len(rows), "contrast")
    return concern + rest


def guard_hard_negatives(base, guard_dir: str, n: int, head: str = "unsafe", pool: int = 0) -> list[str]:
    """The `n` benign prompt_safety training prompts (unframed, ≤ 400 characters) that the guard
    at `guard_dir` scores highest on `head`: the prompts context-dependent alignment would switch
    the adapter on for although they are safe. Scored from the guard feature store (every
    prompt_safety text is in it; a missing one costs one base forward), or, for a window head,
    through `classify`. `pool` > 0 scores only a
    fixed hashed-order subset of that many prompts."""
    from dsa.guards.bank import GuardAdapter
    from dsa.guards.featurize import extract_task_features, render
    from dsa.guards.train import predict

    guard = GuardAdapter.load(guard_dir, base.fingerprint, base.d_model)
    if head not in guard.heads:
        raise ValueError(f"guard {guard_dir} has no head {head!r}: its heads are {guard.heads}")
    recs = [r for r in guard_task("prompt_safety").train
            if r.label == 0 and r.meta.get("frame") is None and len(r.main_text) <= 400]
    if pool:
        recs = sorted(recs, key=lambda r: _h(r.main_text, "pool"))[:pool]
    if not guard.kind.cached_features:  # e.g. a window head's per-token read-out: the public classify path
        from dsa.guards.bank import GuardBank, classify

        q = guard.qualified[guard.heads.index(head)]
        scores = [r["scores"][q] for r in classify(base, GuardBank([guard]), [r.main_text for r in recs])]
    else:
        feats = extract_task_features(base, [render(base, r, "prompt") for r in recs], "align-hard-negatives",
                                      max_length=guard.max_length, window=guard.window, tokens=guard.kind.reads_tokens)
        scores = predict(guard.head, feats, guard.kind, guard.cfg)[:, guard.heads.index(head)]
    order = sorted(range(len(recs)), key=lambda i: (-scores[i], _h(recs[i].main_text, "hard")))
    return [recs[i].main_text for i in order[:n]]


def training_prompts(n_harmful: int = 256, n_benign: int = 256, contrast_share: float = 0.0,
                     min_self_harm: int = 0) -> tuple[list[str], list[str]]:
    """(harmful, benign) training prompts: a fixed hashed-order subset of the training splits,
    short ones only (≤ 400 characters) to keep CPU training cheap. `contrast_share` of the benign
    prompts are edgy-but-safe contrast prompts (half CoCoNot safety-concern rows where there are
    enough); of the rest up to half are edgy Alpaca instructions (use harm words), the others plain.
    When the harmful subset holds fewer than `min_self_harm` self-harm requests (`is_self_harm`),
    the training pool's other self-harm requests (Do-Not-Answer, the project's contrast rows, ...)
    replace its last non-self-harm picks, up to `min_self_harm` or as many as the pool has."""
    records = [r for r in guard_task("prompt_safety").train
               if r.label == 1 and r.meta.get("frame") is None
               and (r.source, r.meta.get("subset")) not in REFUSAL_EXCLUDED and len(r.main_text) <= 400]
    harmful = [r.main_text for r in records]
    self_harm = {r.main_text for r in records if is_self_harm(r.main_text, r.meta)}
    picked = _pick(harmful, n_harmful, "harm")
    have = sum(p in self_harm for p in picked)
    if have < min_self_harm:
        extra = _pick(sorted(self_harm - set(picked)), min_self_harm - have, "self-harm")
        keep = [p for p in picked if p in self_harm]
        other = [p for p in picked if p not in self_harm][: len(picked) - len(keep) - len(extra)]
        picked = _pick(keep + other + extra, n_harmful, "harm")
    n_contrast = round(n_benign * contrast_share)
    pool = contrast_prompts("train")
    concern = [p for p in pool[: n_contrast // 2]]
    contrast = concern + _pick(pool[len(concern):], n_contrast - len(concern), "contrast-mix")
    n_alpaca = n_benign - len(contrast)
    benign = [p for p in benign_prompts("train") if len(p) <= 400]
    edgy = _pick([p for p in benign if SENSITIVE_WORDS.search(p)], n_alpaca // 2, "edgy")
    plain = _pick([p for p in benign if not SENSITIVE_WORDS.search(p)], n_alpaca - len(edgy), "benign")
    return picked, _pick(contrast + edgy + plain, n_benign, "mix")


def eval_prompt_sets() -> dict[str, list[str]]:
    """Every evaluation prompt set by name (eval-only sources plus Alpaca test for identity); the
    refusal sets are `dsa.eval.benchmarks.refusal_prompts`, the documents of the dsa_* lm-eval tasks."""
    return {
        **{name: refusal_prompts(name) for name in ("strongreject", "xstest_safe", "coconot_contrast")},
        "benign": _pick(benign_prompts("test"), N_BENIGN_IDENTITY, "identity"),
    }
