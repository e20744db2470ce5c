"""Streaming moderation on the response_harm test answers: the shipped response guard read token
by token as `SafetyModel` reads it while decoding; writes results/streaming.json.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/streaming_guard_eval.py [--safe 300]

Each answer is teacher-forced after its prompt (the base is causal, so the hidden states equal
those of decoding it); the guard's incremental state (`GuardBank.stream_state`) starts from the
prompt and takes one response token at a time, exactly as in `decode_step`. A row stops at the
first run of k consecutive flags (debounce k). Reported per k: detection rate on harmful answers,
tokens to the first stop, false-stop rate on safe answers; and the cost per token of the O(1)
update against rescoring the whole transcript (what the runtime did before).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def first_stop(flags: list[bool], k: int) -> int | None:
    """Index (0-based response token) at which k consecutive flags first complete, or None."""
    run = 0
    for i, f in enumerate(flags):
        run = run + 1 if f else 0
        if run >= k:
            return i
    return None


def main() -> int:
    from dsa.base import load_base
    from dsa.data.tasks import guard_task
    from dsa.guards import GuardBank
    from dsa.taps import run_with_taps

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--guard", default=str(ROOT / "adapters/guards/response_harm"))
    p.add_argument("--safe", type=int, default=0,
                   help="safe answers to read, the first ones of the split (0 = all); every harmful one is read")
    p.add_argument("--max-response-tokens", type=int, default=256)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "streaming.json")
    args = p.parse_args()

    base = load_base()
    bank = GuardBank.load([args.guard], base)
    head = bank.heads[0]
    records = [r for r in guard_task("response_harm").test if r.label is not None]
    if args.safe:
        safe = [r for r in records if r.label == 0][: args.safe]
        records = [r for r in records if r.label == 1] + safe
    tok = base.tokenizer
    per_answer, update_s, rescore_s, n_updates = [], 0.0, 0.0, 0
    t_start = time.perf_counter()
    for r in records:
        prompt_ids = tok(base.chat_text(r.prompt), add_special_tokens=False)["input_ids"]
        resp_ids = tok(r.response, add_special_tokens=False)["input_ids"][: args.max_response_tokens]
        if not resp_ids:
            continue
        ids = torch.tensor([prompt_ids + resp_ids])
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            _, cache = run_with_taps(base.model, {"input_ids": ids, "attention_mask": mask}, bank.taps,
                                     spec=base.spec, need_output=False)
            k = len(prompt_ids)
            state = bank.stream_state({t: v[:, :k] for t, v in cache.items()}, mask[:, :k])
            scores = []
            for j in range(k, ids.shape[1]):
                t0 = time.perf_counter()
                s = state.update({t: v[:, j:j + 1] for t, v in cache.items()})
                update_s += time.perf_counter() - t0
                n_updates += 1
                scores.append(float(s[head][0]))
            if len(per_answer) < 20:  # the old way: rescore the whole transcript at the last token
                t0 = time.perf_counter()
                bank.score(cache, mask)
                rescore_s += time.perf_counter() - t0
        thr = bank.thresholds[head]
        per_answer.append({"label": r.label, "flags": [s >= thr for s in scores], "final": scores[-1] >= thr,
                           "n": len(scores)})
    summary = {}
    for k in (1, 2, 3):
        harmful = [a for a in per_answer if a["label"] == 1]
        safe = [a for a in per_answer if a["label"] == 0]
        stops_h = [first_stop(a["flags"], k) for a in harmful]
        stops_s = [first_stop(a["flags"], k) for a in safe]
        hit = [s + 1 for s in stops_h if s is not None]  # tokens shown up to and including the stop
        summary[f"debounce_{k}"] = {
            "detection_rate": round(len(hit) / max(1, len(harmful)), 4),
            "tokens_to_first_flag_median": statistics.median(hit) if hit else None,
            "tokens_to_first_flag_mean": round(statistics.mean(hit), 2) if hit else None,
            "fraction_of_answer_at_stop_median": round(statistics.median(
                [(s + 1) / a["n"] for s, a in zip(stops_h, harmful, strict=True) if s is not None]), 3) if hit else None,
            "false_stop_rate": round(sum(s is not None for s in stops_s) / max(1, len(safe)), 4),
        }
    harmful = [a for a in per_answer if a["label"] == 1]
    safe = [a for a in per_answer if a["label"] == 0]
    out = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python scripts/streaming_guard_eval.py"
                   + (f" --safe {args.safe}" if args.safe else ""),
        "guard": str(Path(args.guard).relative_to(ROOT)) if Path(args.guard).is_relative_to(ROOT) else args.guard,
        "head": head, "threshold": bank.thresholds[head],
        "answers": len(per_answer), "harmful": len(harmful), "safe": len(safe),
        "response_tokens_mean": round(statistics.mean(a["n"] for a in per_answer), 1),
        "whole_answer_flag": {"detection_rate": round(sum(a["final"] for a in harmful) / max(1, len(harmful)), 4),
                              "false_positive_rate": round(sum(a["final"] for a in safe) / max(1, len(safe)), 4)},
        "streaming": summary,
        "cost": {"incremental_update_us_per_token": round(1e6 * update_s / max(1, n_updates), 1),
                 "whole_transcript_rescore_us_at_last_token": round(1e6 * rescore_s / max(1, min(20, len(per_answer))), 1),
                 "note": "the incremental update is O(1) in the answer length; rescoring is O(T) per token, O(T^2) per answer"},
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
