"""Guard overhead on the prefill: the base's bare prefill against the same prefill with the guard
taps recorded and the heads scored, and against guards that need work of their own (a standalone
MiniLM-L6 classifier, a LoRA-Guard-style second pass of the base, the base as a generative guard).

Every figure is `1 + extra / bare`, both measured in the same repetition: for a DSA head the extra
is the guard work inside the guarded forward (the tap hooks' pooling and the heads' scoring, timed
where it runs); for a baseline it is the baseline's own run. The end-to-end ratio of the guarded
forward to the bare one is reported next to it (on a shared CPU its noise is larger than 1 %).
"""

from __future__ import annotations

import time

import torch

from dsa.bench.timing import column, interleave, ratios, spread
from dsa.bench.workloads import prompt_batch
from dsa.taps import record_taps

BASELINES = ("minilm_standalone", "second_pass", "generative_guard")


def _timed_reducers(reducers: dict, clock: list[float]) -> dict:
    def wrap(fn):
        def run(h):
            t0 = time.perf_counter()
            out = fn(h)
            clock[0] += time.perf_counter() - t0
            return out
        return run
    return {tap: wrap(fn) for tap, fn in reducers.items()}


def guarded_prefill(base, bank, enc: dict) -> dict[str, float]:
    """One prefill with `bank`'s taps recorded and scored; returns {"guard": seconds of guard work}."""
    mask = enc["attention_mask"]
    clock = [0.0]
    make = getattr(bank, "tap_reducers", None)
    reduce = _timed_reducers(make(mask), clock) if make is not None else None
    kwargs = {"reduce": reduce} if reduce is not None else {}
    with record_taps(base.model, bank.taps, spec=base.spec, **kwargs) as cache:
        base.model(**enc, use_cache=True, logits_to_keep=1)
    t0 = time.perf_counter()
    scores = bank.score(cache, mask)
    next(iter(scores.values())).sum().item()  # scores are used: wait for them
    return {"guard": clock[0] + time.perf_counter() - t0}


class MiniLMGuard:
    """A standalone MiniLM-L6 classifier (encoder + mean pooling + linear head) on raw texts."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        from transformers import AutoTokenizer

        from dsa.guards.baselines import MiniLMClassifier, minilm_dir

        self.tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
        self.model = MiniLMClassifier(1).to(device, dtype).eval()
        self.device = device

    def __call__(self, texts: list[str]) -> None:
        enc = self.tok(texts, truncation=True, max_length=512, padding=True, return_tensors="pt").to(self.device)
        self.model(**enc).sum().item()


def generative_guard(base, texts: list[str], new_tokens: int) -> None:
    """The base asked, in a second prompt, whether the request is harmful; it writes `new_tokens`."""
    from dsa.guards.baselines import ZERO_SHOT_QUESTIONS

    tok = base.tokenizer
    tok.padding_side = "left"
    prompts = [base.chat_text(f"{ZERO_SHOT_QUESTIONS['prompt']} Answer safe or unsafe.\n\n{t}") for t in texts]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(base.device)
    base.model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                        pad_token_id=tok.pad_token_id)


def guard_overhead_cell(base, variants: dict[str, dict], length: int, batch: int, reps: int,
                        minilm: MiniLMGuard | None, generative_tokens: int) -> dict:
    """Every variant and baseline at one (batch, prompt length), interleaved."""
    enc, texts = prompt_batch(base, length, batch)
    arms = {"bare": lambda: base.model(**enc, use_cache=True, logits_to_keep=1) and None}
    for name, v in variants.items():
        arms[name] = (lambda bank: lambda: guarded_prefill(base, bank, enc))(v["bank"])
    arms["second_pass"] = lambda: base.model(**enc, use_cache=False, logits_to_keep=1) and None
    if minilm is not None:
        arms["minilm_standalone"] = lambda: minilm(texts)
    if generative_tokens:
        arms["generative_guard"] = lambda: generative_guard(base, texts, generative_tokens)
    with torch.inference_mode():
        runs = interleave(arms, reps, device=base.device)
    bare = column(runs["bare"])
    cell = {"batch": batch, "length": length, "bare_prefill_s": spread(bare), "ratios": {}}
    for name in arms:
        if name == "bare":
            continue
        total = column(runs[name])
        if name in variants:
            guard = column(runs[name], "guard")
            cell["ratios"][name] = {"ratio": spread([1 + g / b for g, b in zip(guard, bare, strict=True)]),
                                    "end_to_end": spread(ratios(total, bare)),
                                    "guard_work_s": spread(guard, 6)}
        else:
            cell["ratios"][name] = {"ratio": spread([1 + t / b for t, b in zip(total, bare, strict=True)]),
                                    "extra_s": spread(total)}
    return cell


def guard_overhead(base, variants: dict[str, dict], lengths, batches, reps: int, minilm: bool = True,
                   generative_tokens: int = 4, log=print) -> list[dict]:
    """One cell per (batch, length); skips cells listed nowhere."""
    guard = None
    if minilm:
        try:
            guard = MiniLMGuard(base.device, base.dtype)
        except Exception as err:  # the package is missing: the section says so
            log(f"bench: MiniLM-L6 baseline unavailable ({err})")
    cells = []
    for batch in batches:
        for length in lengths:
            t0 = time.perf_counter()
            cells.append(guard_overhead_cell(base, variants, length, batch, reps, guard, generative_tokens))
            log(f"bench: guard overhead batch {batch} length {length}: "
                + ", ".join(f"{k} {v['ratio']['median']:.3f}" for k, v in cells[-1]["ratios"].items())
                + f" ({time.perf_counter() - t0:.0f} s)")
    return cells
