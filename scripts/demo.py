"""Guarded, context-aligned chat on the embedded SmolLM2-135M: a table of real benign and harmful
prompts (StrongREJECT, XSTest) with the guard's score, the λ the policy picked and the start of
each answer. One prefill per request serves the guard, the base logits and the adapter's input.

    python scripts/demo.py [--policy step|linear|sigmoid] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from dsa.base import load_base
from dsa.data import load_source
from dsa.runtime import SafetyModel

GUARD = "adapters/guards/prompt_safety"
ADAPTER = "adapters/align/dsa_adapter"


def demo_prompts() -> list[tuple[str, str]]:
    """(source, prompt): fixed picks from StrongREJECT and XSTest (safe and unsafe)."""
    sr = load_source("strongreject")
    xs = load_source("xstest")
    safe = [r.main_text for r in xs if r.label == 0]
    unsafe = [r.main_text for r in xs if r.label == 1]
    return ([("xstest-safe", safe[i]) for i in (0, 60, 110, 200)] + [("xstest-unsafe", unsafe[3])]
            + [("strongreject", sr[i].main_text) for i in (0, 40, 150)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="step", choices=["step", "linear", "sigmoid"])
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--guard", default=GUARD, help="prompt-safety guard adapter dir")
    ap.add_argument("--adapter", default=ADAPTER, help="DSA alignment adapter dir")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    base = load_base()
    guards = [args.guard] if Path(args.guard).exists() else []
    if not guards:
        print(f"note: {args.guard} not found: no guard, λ = 0 for every request", file=sys.stderr)
    sm = SafetyModel.load(base, guards=guards, adapter=args.adapter if Path(args.adapter).exists() else None,
                          policy=args.policy)
    picks = demo_prompts()
    results = sm.generate([p for _, p in picks], alignment="auto", max_new_tokens=args.max_new_tokens)
    print("| source | prompt | guard score | λ | answer (start) |\n|---|---|---|---|---|")
    for (src, prompt), r in zip(picks, results, strict=True):
        score = max(r.guard_scores.values()) if r.guard_scores else float("nan")
        answer = " ".join(r.text.split())[:90]
        print(f"| {src} | {prompt[:60]} | {score:.2f} | {r.lam:.2f} | {answer} |")
    print(f"\n{len(picks)} requests, one batch, one prefill; {time.perf_counter() - t0:.1f} s in total", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
