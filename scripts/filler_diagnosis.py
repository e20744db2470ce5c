"""Which held-out filler sentence makes 1,000 tokens of benign padding flag a guard? Writes
results/robustness-filler.json.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/filler_diagnosis.py [--guard adapters/guards/prompt_safety] [--n 10]

For the guard: each FILLER_HELDOUT sentence scored alone (through `SafetyModel.classify`), then
the flag rate of the first n AlpacaEval prompts (the robustness report's fixed order) behind
1,000 tokens of the held-out filler with all sentences, and with each sentence left out in turn.
A diagnosis of the robustness report's pad_*_1000 rows, not a tuning step: nothing is fitted.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from dsa.adapter_io import atomic_write_text, weights_hash
    from dsa.data.wrappers import FILLER_HELDOUT, filler_text, token_counter
    from dsa.eval.robustness import load_sets
    from dsa.runtime import SafetyModel

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--guard", default="adapters/guards/prompt_safety")
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--tokens", type=int, default=1000)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "robustness-filler.json")
    args = p.parse_args()
    t0 = time.perf_counter()
    sm = SafetyModel.load(guards=[args.guard])
    q = sm.guards.adapters[0].qualified[0]
    tok = sm.base.tokenizer
    count = token_counter(tok)
    prompts = load_sets(args.n, names=("alpaca_eval",))["alpaca_eval"]

    def rate(pool) -> tuple[float, float]:
        texts = [f"{filler_text(args.tokens, count, pool, seed=i)} {p}" for i, p in enumerate(prompts)]
        res = sm.classify([[{"role": "user", "content": t}] for t in texts])
        return (sum(r["flags"][q] for r in res) / len(res), sum(r["scores"][q] for r in res) / len(res))

    alone = sm.classify([[{"role": "user", "content": s}] for s in FILLER_HELDOUT])
    flag_all, score_all = rate(FILLER_HELDOUT)
    rows = []
    for s, r in zip(FILLER_HELDOUT, alone, strict=True):
        f, m = rate([x for x in FILLER_HELDOUT if x != s])
        rows.append({"sentence": s, "score_alone": r["scores"][q], "flag_rate_without_it": f,
                     "mean_score_without_it": m})
        print(f"{r['scores'][q]:.3f} alone, {f:.2f} flagged without it: {s}", flush=True)
    out = {"command": "python scripts/filler_diagnosis.py"
                      + (f" --guard {args.guard}" if args.guard != p.get_default("guard") else ""),
           "guard": args.guard, "adapter": args.guard, "weights_sha256": weights_hash(args.guard),
           "threshold": sm.guards.thresholds[q], "set": "alpaca_eval", "n": len(prompts),
           "padding_tokens": args.tokens, "flag_rate_all_sentences": flag_all, "mean_score_all_sentences": score_all,
           "sentences": rows, "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")
    print(f"all sentences: {flag_all:.2f} flagged; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
