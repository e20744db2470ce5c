"""Guard overhead on the prefill: the base's bare prefill against the same prefill with the guard
taps recorded and the heads scored, and against guards that need work of their own (a standalone
MiniLM-L6 classifier, a LoRA-Guard-style second pass of the base, the base as a generative guard).

Every figure is `1 + extra / bare`, both measured in the same repetition: for a DSA head the extra
is its guard work inside the guarded forward (its tap hooks' pooling and its heads' scoring, timed
where they run; one guarded forward records the taps of every variant, each variant's work timed on
its own); for a baseline it is the baseline's own run. The end-to-end ratio of that guarded forward
(every variant at once) to the bare one is reported next to it (on a shared CPU its noise is
larger than 1 %).
"""

from __future__ import annotations

import time

import torch

from dsa.bench.timing import column, interleave, now, ratios, spread
from dsa.bench.workloads import prompt_batch
from dsa.taps import record_taps

BASELINES = ("minilm_standalone", "second_pass", "generative_guard")


def guarded_prefill(base, banks: dict, enc: dict) -> dict[str, float]:
    """One prefill with the taps of every bank in `banks` recorded; each bank's work (its hook-side
    pooling and its heads) is timed on its own. Returns {"guard:<name>": s, "tap_bytes:<name>": bytes}."""
    mask = enc["attention_mask"]
    clock = dict.fromkeys(banks, 0.0)
    per_tap: dict[str, list] = {}
    for name, bank in banks.items():
        make = getattr(bank, "tap_reducers", None)
        reducers = make(mask) if make is not None else {}
        for tap in bank.taps:
            per_tap.setdefault(tap, []).append((name, reducers.get(tap)))

    def reducer(entries):
        def run(h):
            out = {}
            for name, fn in entries:
                t0 = now()
                out[name] = h if fn is None else fn(h)
                clock[name] += now() - t0
            return out
        return run

    reduce = {tap: reducer(entries) for tap, entries in per_tap.items()}
    with record_taps(base.model, list(per_tap), spec=base.spec, reduce=reduce) as cache:
        base.model(**enc, use_cache=True, logits_to_keep=1)
    out = {}
    for name, bank in banks.items():
        view = {tap: cache[tap][name] for tap in bank.taps}
        t0 = now()
        scores = bank.score(view, mask)
        next(iter(scores.values())).sum().item()  # scores are used: wait for them
        out[f"guard:{name}"] = clock[name] + now() - t0
        out[f"tap_bytes:{name}"] = float(tap_bytes(view))
    return out


def tap_bytes(cache: dict) -> int:
    """Bytes the recorded taps hold after the forward (full states, or their pooled summaries)."""
    n = 0
    for v in cache.values():
        parts = ([v] if isinstance(v, torch.Tensor)
                 else [getattr(v, f, None) for f in ("mean", "last", "window", "window_mask")])
        n += sum(t.numel() * t.element_size() for t in parts if isinstance(t, torch.Tensor))
    return n


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
                        minilm: MiniLMGuard | None, generative_tokens: int, warmup: int = 1,
                        budget_s: float | None = None) -> dict:
    """Every variant and baseline at one (batch, prompt length), interleaved."""
    enc, texts = prompt_batch(base, length, batch)
    banks = {name: v["bank"] for name, v in variants.items()}
    arms = {"bare": lambda: base.model(**enc, use_cache=True, logits_to_keep=1) and None,
            "guarded": lambda: guarded_prefill(base, banks, enc)}
    arms["second_pass"] = lambda: base.model(**enc, use_cache=False, logits_to_keep=1) and None
    if minilm is not None:
        arms["minilm_standalone"] = lambda: minilm(texts)
    if generative_tokens:
        arms["generative_guard"] = lambda: generative_guard(base, texts, generative_tokens)
    with torch.inference_mode():
        runs = interleave(arms, reps, warmup=warmup, device=base.device, budget_s=budget_s)
    bare = column(runs["bare"])
    cell = {"batch": batch, "length": length, "bare_prefill_s": spread(bare), "ratios": {}}
    guarded = column(runs["guarded"])
    cell["end_to_end_all_variants"] = spread(ratios(guarded, bare))
    for name in variants:
        guard = column(runs["guarded"], f"guard:{name}")
        cell["ratios"][name] = {"ratio": spread([1 + g / b for g, b in zip(guard, bare, strict=True)]),
                                "guard_work_s": spread(guard, 6),
                                "tap_bytes": int(column(runs["guarded"], f"tap_bytes:{name}")[0])}
    for name in arms:
        total = column(runs[name])
        if name not in ("bare", "guarded"):
            cell["ratios"][name] = {"ratio": spread([1 + t / b for t, b in zip(total, bare, strict=True)]),
                                    "extra_s": spread(total)}
    return cell


def guard_overhead(base, variants: dict[str, dict], cells, reps: int, minilm: bool = True,
                   generative_tokens: int = 4, budget_s: float | None = None, log=print,
                   on_cell=None) -> list[dict]:
    """One result per (batch, length) in `cells`; `on_cell(results so far)` after each."""
    guard = None
    if minilm:
        try:
            guard = MiniLMGuard(base.device, base.dtype)
        except Exception as err:  # the package is missing: the section says so
            log(f"bench: MiniLM-L6 baseline unavailable ({err})")
    out = []
    for k, (batch, length) in enumerate(cells):  # one untimed warm-up round, in the first cell only
        t0 = time.perf_counter()
        out.append(guard_overhead_cell(base, variants, length, batch, reps, guard, generative_tokens,
                                       warmup=int(k == 0), budget_s=budget_s))
        log(f"bench: guard overhead batch {batch} length {length}: "
            + ", ".join(f"{k} {v['ratio']['median']:.3f}" for k, v in out[-1]["ratios"].items())
            + f" ({time.perf_counter() - t0:.0f} s)")
        if on_cell is not None:
            on_cell(out)
    return out
