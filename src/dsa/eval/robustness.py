"""Guard robustness: how often a guard adapter flags eval-only prompts when they are wrapped,
padded or re-encoded, scored through the public runtime so the numbers describe what ships.

    sm = SafetyModel.load(base, guards=["adapters/guards/prompt_safety"])
    sets = load_sets(n=120)                       # first n of each set in a fixed sha256 order
    rows = score_guard(sm, sets, seed=0)          # {set: {condition: {"flag_rate", "ci95", ...}}}
    merge_guard(Path("results/robustness.json"), "prompt_safety", {"rows": rows, ...})

    rows = score_standalone(score, threshold, sets, base.tokenizer)   # any texts -> probabilities

Conditions (`conditions()`): "plain"; each HELD-OUT wrapper family of `dsa.data.wrappers` (never
used in training); "pad_before_N" / "pad_after_N": N tokens (the base's tokenizer) of held-out
benign filler before / after the request; the encodings "fullwidth", "zero_width",
"inject_template". CatQA (Chinese, Vietnamese) is scored plain only. Every set here is eval-only:
nothing is fitted or tuned on it; the guard's stored threshold decides the flag.

`score_standalone` scores the same texts with a standalone classifier (a callable from normalised
texts to probabilities, and its threshold) for a side-by-side comparison; its entry in the results
file has "standalone" (model, training, what it reads) in place of the adapter fields.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsa.adapter_io import atomic_write_text, weights_hash
from dsa.data.wrappers import ENCODINGS, HELDOUT_FAMILIES, pad, wrap
from dsa.metrics import wilson_interval

PAD_LENGTHS = (100, 300, 1000)
CACHE_DIR = Path("runs/robustness")


@dataclass(frozen=True)
class EvalSet:
    """One eval-only prompt set: a `load_source` name and options, which records to keep, whether
    its prompts should be flagged, and whether it is scored under every condition or plain only."""

    source: str
    harmful: bool
    keep: Callable = lambda r: True
    options: tuple = ()
    plain_only: bool = False


SETS: dict[str, EvalSet] = {
    "strongreject": EvalSet("strongreject", True),
    "xstest_unsafe": EvalSet("xstest", True, lambda r: r.label == 1),
    "xstest_safe": EvalSet("xstest", False, lambda r: r.label == 0),
    "alpaca_eval": EvalSet("alpaca_eval", False),
    "catqa_zh": EvalSet("red_instruct_harmful_questions", True, lambda r: r.meta.get("subset") == "catqa_chinese",
                        (("languages", ("chinese",)),), plain_only=True),
    "catqa_vi": EvalSet("red_instruct_harmful_questions", True, lambda r: r.meta.get("subset") == "catqa_vietnamese",
                        (("languages", ("vietnamese",)),), plain_only=True),
}
REFUSAL_CONDITIONS = ("plain", "pad_after_300", "roleplay", "thriller")
REFUSAL_SETS = ("strongreject", "xstest_safe")


def conditions(pad_lengths: Sequence[int] = PAD_LENGTHS) -> list[str]:
    """Every condition name, in report order."""
    pads = [f"pad_{side}_{n}" for side in ("before", "after") for n in pad_lengths]
    return ["plain", *(f.name for f in HELDOUT_FAMILIES), *pads, *ENCODINGS]


def condition_kind(condition: str) -> str:
    """"plain", "wrapper" (a held-out family), "padding" or "encoding"."""
    if condition == "plain":
        return "plain"
    if condition in ENCODINGS:
        return "encoding"
    if condition.startswith(("pad_before_", "pad_after_")):
        return "padding"
    return "wrapper"


def pad_spec(condition: str) -> tuple[str, int]:
    """("before" | "after", tokens) of a padding condition."""
    _, side, n = condition.split("_")
    return side, int(n)


def condition_text(condition: str, prompt: str, seed: int = 0, tokenizer=None) -> str:
    """`prompt` under `condition` (see the module doc). Seeded by `seed` and the prompt itself, so a
    prompt gets the same text whatever else is in its set."""
    if condition == "plain":
        return prompt
    if condition in {f.name for f in HELDOUT_FAMILIES}:
        return wrap(prompt, condition, seed=seed)
    if condition in ENCODINGS:
        return ENCODINGS[condition](prompt, seed=seed) if condition == "zero_width" else ENCODINGS[condition](prompt)
    kind, _, rest = condition.partition("_")
    side, _, n = rest.partition("_")
    if kind == "pad" and side in ("before", "after") and n.isdigit():
        return pad(prompt, int(n), side, tokenizer=tokenizer, seed=_prompt_seed(seed, prompt))
    raise ValueError(f"unknown robustness condition {condition!r}: expected one of {conditions()} "
                     "(any pad_before_N / pad_after_N)")


def _prompt_seed(seed: int, prompt: str) -> int:
    return int(hashlib.sha256(f"{seed}:{prompt}".encode()).hexdigest()[:8], 16)


def fixed_order(prompts: Sequence[str], seed: int = 0) -> list[str]:
    """Distinct prompts sorted by sha256(seed, prompt): a fixed order that no result can move."""
    return sorted(dict.fromkeys(prompts), key=lambda p: hashlib.sha256(f"{seed}\0{p}".encode()).hexdigest())


def load_sets(n: int, seed: int = 0, names: Sequence[str] = tuple(SETS)) -> dict[str, list[str]]:
    """The first `n` prompts of each named set in `fixed_order`."""
    from dsa.data.sources import load_source

    out = {}
    for name in names:
        spec = SETS[name]
        recs = load_source(spec.source, **dict(spec.options))
        out[name] = fixed_order([r.prompt for r in recs if spec.keep(r) and r.prompt], seed)[:n]
    return out


def _plan(sets: dict[str, list[str]], conds: Sequence[str]) -> list[tuple[str, str]]:
    """(set, condition) pairs to score: every condition, or plain only for `plain_only` sets."""
    return [(s, c) for s in sets for c in conds if c == "plain" or not (s in SETS and SETS[s].plain_only)]


def summarise(scores: Sequence[float], flags: Sequence[bool], tokens: Sequence[int], max_length: int | None,
              caught: Sequence[bool] | None = None) -> dict:
    """One (set, condition) row: flag rate with n and 95 % Wilson interval, mean score, tokens read
    (and the share longer than the guard's `max_length`, which it truncates from the left); with
    `caught` (the runtime's language rule applied) also the share flagged or caught."""
    n, k = len(flags), int(sum(flags))
    row = {"n": n, "flagged": k, "flag_rate": _r(k / n if n else float("nan")), "ci95": _ci(k, n),
           "mean_score": _r(float(np.mean(scores)) if n else float("nan")),
           "mean_tokens": _r(float(np.mean(tokens)) if n else float("nan"), 1),
           "truncated": _r(float(np.mean([t > max_length for t in tokens])) if n and max_length else 0.0)}
    if caught is not None:
        either = int(sum(bool(f) or bool(c) for f, c in zip(flags, caught, strict=True)))
        row |= {"language_caught": int(sum(caught)), "flagged_or_language": _r(either / n if n else float("nan")),
                "flagged_or_language_ci95": _ci(either, n)}
    return row


def _r(x: float, d: int = 6) -> float:
    return round(float(x), d)


def _ci(k: int, n: int) -> list[float]:
    return [_r(x) for x in wilson_interval(k, n)]


def _score_rows(sets: dict[str, list[str]], conds: Sequence[str], seed: int, tokenizer, max_length: int | None,
                score_texts: Callable[[list[str]], list[list]], cache: Path | None = None, progress: bool = True,
                stats: dict | None = None, desc: str = "guard robustness") -> dict:
    """{set: {condition: row}} from `score_texts(texts) -> [[score, flag, language caught | None,
    tokens], ...]`, with a per-text cache keyed by sha256 of the condition text."""
    from tqdm.auto import tqdm

    done = json.loads(cache.read_text()) if cache is not None and cache.exists() else {}
    plan = _plan(sets, conds)
    out: dict[str, dict] = {s: {} for s in sets}
    bar = tqdm(total=sum(len(sets[s]) for s, _ in plan), desc=desc, unit="prompt", disable=not progress)
    for s, c in plan:
        bar.set_postfix_str(f"{s} / {c}")
        texts = [condition_text(c, p, seed, tokenizer) for p in sets[s]]
        keys = [hashlib.sha256(t.encode()).hexdigest()[:24] for t in texts]
        todo = [i for i, k in enumerate(keys) if k not in done]
        if stats is not None:
            stats["scored"] = stats.get("scored", 0) + len(todo)
            stats["cached"] = stats.get("cached", 0) + len(texts) - len(todo)
        if todo:
            for i, got in zip(todo, score_texts([texts[i] for i in todo]), strict=True):
                done[keys[i]] = got
            if cache is not None:
                atomic_write_text(cache, json.dumps(done))
        got = [done[k] for k in keys]
        caught = None if any(g[2] is None for g in got) else [g[2] for g in got]
        out[s][c] = summarise([g[0] for g in got], [g[1] for g in got], [g[3] for g in got], max_length, caught)
        bar.update(len(texts))
    bar.close()
    return out


def score_guard(sm, sets: dict[str, list[str]], conds: Sequence[str] | None = None, seed: int = 0,
                head: str | None = None, cache: Path | None = None, progress: bool = True,
                stats: dict | None = None) -> dict:
    """Flag rates of `sm`'s guard (`SafetyModel.classify`, the stored threshold) on every set under
    every condition (plain only for `plain_only` sets).

    Args:
        head: the qualified guard head to report (default: the model's policy head).
        cache: a JSON file of per-text results (by sha256 of the text); a rerun, or a larger n,
            scores only the texts it does not hold.
        stats: filled with {"scored": texts scored now, "cached": texts read from `cache`}.
    Returns:
        {set: {condition: row}} with rows from `summarise`.
    """
    from dsa.features.text import encode_inputs

    head = head or sm.policy_head or sm.guards.heads[0]

    def classify(texts: list[str]) -> list[list]:
        res = sm.classify(texts)
        tokens = encode_inputs(sm.base, texts, None)
        return [[r["scores"][head], r["flags"][head],
                 None if r.get("language") is None else bool(r["language"].get("applied")),  # the language rule
                 len(ids)] for r, ids in zip(res, tokens, strict=True)]

    return _score_rows(sets, list(conds or conditions()), seed, sm.base.tokenizer, sm.guards.max_length, classify,
                       cache, progress, stats)


def score_standalone(score: Callable[[list[str]], Sequence[float]], threshold: float, sets: dict[str, list[str]],
                     pad_tokenizer, conds: Sequence[str] | None = None, seed: int = 0,
                     count: Callable[[str], int] | None = None, max_length: int | None = None,
                     progress: bool = True) -> dict:
    """Flag rates of a standalone classifier on the same sets, conditions and texts as `score_guard`.

    The classifier reads the raw user message after `normalise_text` (the normalisation the runtime
    applies before its guard reads a message); it flags when its probability reaches `threshold`.
    There is no language rule: CatQA rows report the flag rate only.

    Args:
        score: normalised texts -> probabilities of the harmful class.
        pad_tokenizer: the tokenizer padding lengths are counted with; pass the DSA base's so the
            padded texts equal the ones the DSA guards were scored on.
        count: tokens the classifier's tokenizer makes of a normalised text (untruncated), for the
            "tokens read" and "truncated" columns (0 when None).
        max_length: tokens the classifier reads (it keeps the first ones; `summarise` counts the
            share of longer texts).
    Returns:
        {set: {condition: row}} with rows from `summarise`.
    """
    from dsa.normalise import normalise_text

    def flag(texts: list[str]) -> list[list]:
        norm = [normalise_text(t) for t in texts]
        probs = np.asarray(score(norm), dtype=float).reshape(-1)
        return [[float(p), bool(p >= threshold), None, count(t) if count else 0]
                for p, t in zip(probs, norm, strict=True)]

    return _score_rows(sets, list(conds or conditions()), seed, pad_tokenizer, max_length, flag, progress=progress,
                       desc="standalone robustness")


def refusal_rates(sm, sets: dict[str, list[str]], conds: Sequence[str] = REFUSAL_CONDITIONS, seed: int = 0,
                  max_new_tokens: int = 48, batch_size: int = 8, progress: bool = True) -> dict:
    """Refusal rate of `alignment="auto"` through `SafetyModel.generate` (greedy), judged by
    `keyword_refusal` on the answer's opening; a row the runtime leaves unanswered (stop reason
    "unvalidated_language") counts as refused. Also the share of rows given λ > 0.

    Returns:
        {set: {condition: {"n", "refused", "refusal_rate", "ci95", "aligned", "mean_lambda"}}}.
    """
    from tqdm.auto import tqdm

    from dsa.eval.refusal import keyword_refusal

    tok = sm.base.tokenizer
    plan = _plan(sets, conds)
    out: dict[str, dict] = {s: {} for s in sets}
    bar = tqdm(total=sum(len(sets[s]) for s, _ in plan), desc="refusal (auto)", unit="prompt", disable=not progress)
    for s, c in plan:
        bar.set_postfix_str(f"{s} / {c}")
        texts = [condition_text(c, p, seed, tok) for p in sets[s]]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        results = [None] * len(texts)
        for k in range(0, len(order), batch_size):
            idx = order[k:k + batch_size]
            for i, r in zip(idx, sm.generate([texts[i] for i in idx], alignment="auto",
                                             max_new_tokens=max_new_tokens), strict=True):
                results[i] = r
            bar.update(len(idx))
        refused = [r.stop_reason == "unvalidated_language" or keyword_refusal(r.text) for r in results]
        n, k = len(results), int(sum(refused))
        out[s][c] = {"n": n, "refused": k, "refusal_rate": _r(k / n if n else float("nan")), "ci95": _ci(k, n),
                     "aligned": _r(float(np.mean([r.lam > 0 for r in results])) if n else float("nan")),
                     "mean_lambda": _r(float(np.mean([r.lam for r in results])) if n else float("nan"))}
    bar.close()
    return out


def merge_guard(path: Path, name: str, entry: dict) -> dict:
    """Write `entry` as `guards[name]` of the results file, keeping every other guard's entry (and
    this guard's earlier refusal rows when `entry` has none and the weights are the same); atomic."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {}
    guards = data.setdefault("guards", {})
    old = guards.get(name, {})
    if "refusal" not in entry and "refusal" in old and old.get("weights_sha256") == entry.get("weights_sha256"):
        entry = {**entry, "refusal": old["refusal"]}
    guards[name] = entry
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return data


def measure(base, adapter: str | Path, n: int = 120, seed: int = 0, refusal_n: int = 0,
            align_adapter: str | Path | None = None, refusal_conditions: Sequence[str] = REFUSAL_CONDITIONS,
            refusal_sets: Sequence[str] = REFUSAL_SETS, max_new_tokens: int = 48, command: str = "",
            resume: bool = True) -> dict:
    """One guard's entry of results/robustness.json: what was measured (adapter, weights hash,
    threshold, runtime commit, language rule) and its rows; refusal rows when `refusal_n` > 0."""
    import time

    from dsa.adapter_io import read_adapter_meta
    from dsa.runtime import SafetyModel

    t0 = time.perf_counter()
    adapter = str(adapter)
    sm = SafetyModel.load(base, guards=[adapter], adapter=align_adapter if refusal_n > 0 else None)
    meta = read_adapter_meta(adapter)
    head = sm.policy_head or sm.guards.heads[0]
    wh = weights_hash(adapter)
    cache = None
    if resume:
        key = hashlib.sha256((Path(adapter) / "adapter.json").read_bytes()).hexdigest()[:8]
        cache = CACHE_DIR / f"{wh[:16]}-{key}-s{seed}.json"
    stats: dict = {}
    entry = {"adapter": adapter, "weights_sha256": wh, "arch": meta.get("config", {}).get("arch"), "head": head,
             "threshold": sm.guards.thresholds[head], "max_length": sm.guards.max_length, "base": base.name,
             "n": n, "seed": seed, "command": command, "runtime_commit": git_describe(),
             "language_rule": getattr(sm, "unvalidated_language", None),
             "rows": score_guard(sm, load_sets(n, seed), seed=seed, head=head, cache=cache, stats=stats)}
    entry["texts"] = {"scored": stats.get("scored", 0), "from_cache": stats.get("cached", 0)}
    if refusal_n > 0:
        sets = load_sets(refusal_n, seed, refusal_sets)
        entry["refusal"] = {"n": refusal_n, "align_adapter": str(align_adapter), "max_new_tokens": max_new_tokens,
                            "judge": "keyword_refusal", "decoding": "greedy",
                            "rows": refusal_rates(sm, sets, refusal_conditions, seed, max_new_tokens)}
    entry["seconds"] = round(time.perf_counter() - t0, 1)
    return entry


def git_describe() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
