"""Streaming moderation at the shipped default, on held-out answers: the response guard read token by
token as `SafetyModel` reads it while decoding; writes results/streaming.json and the block of
docs/server.md generated from it.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/streaming_guard_eval.py [--safe 300] [--generated 100]
    .venv/bin/python scripts/streaming_guard_eval.py --doc-only   # docs/server.md from the JSON

Each response_harm TEST answer is teacher-forced after its prompt (`dsa.guards.streaming.read_answers`:
the base is causal, so the states equal those of decoding it; the guard's state starts on the prompt
and takes one update per response token, exactly as in `decode_step`). Reported for the shipped
guard and for the one shipped before it (`--previous`, adapters/baselines/response_harm_v2: the
same head trained on whole answers only, before `prefix_cuts`): the default (the stop rule
calibrated on VAL answers by `dsa guard calibrate-stream`, what `SafetyModel` and `dsa serve`
apply) and the whole-answer threshold read at every token with debounce 1, 2, 3: detection on
harmful answers (overall and within 32 / 64 tokens), tokens shown up to the stop, false stops on
safe ones; and, paired on the same harmful answers, how many each default stops and the other does
not. `--generated N` adds the served path on answers the base itself writes: N AlpacaEval and N
XSTest-safe prompts (eval-only sets) generated through `SafetyModel.generate` with each guard at its
default (false stops only: no label says these answers are harmful). And the cost per token of the
O(1) update against rescoring the whole transcript. Test answers are cached under runs/streaming/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def cost(base, bank, records, n: int = 20) -> dict:
    """Microseconds per token of the incremental update, and of rescoring the whole transcript once."""
    from dsa.features.text import encode_inputs
    from dsa.taps import run_with_taps

    update_s = rescore_s = 0.0
    updates = rows = 0
    for r in [r for r in records if r.response][:n]:
        p = encode_inputs(base, [r.prompt], None, add_generation_prompt=True)[0]
        ids = torch.tensor([p + base.tokenizer(r.response, add_special_tokens=False)["input_ids"][:256]])
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            _, cache = run_with_taps(base.model, {"input_ids": ids, "attention_mask": mask}, bank.taps,
                                     spec=base.spec, need_output=False)
            state = bank.stream_state({t: v[:, :len(p)] for t, v in cache.items()}, mask[:, :len(p)])
            for j in range(len(p), ids.shape[1]):
                t0 = time.perf_counter()
                state.update({t: v[:, j:j + 1] for t, v in cache.items()})
                update_s += time.perf_counter() - t0
                updates += 1
            t0 = time.perf_counter()
            bank.score(cache, mask)
            rescore_s += time.perf_counter() - t0
            rows += 1
    return {"incremental_update_us_per_token": round(1e6 * update_s / max(1, updates), 1),
            "whole_transcript_rescore_us_at_last_token": round(1e6 * rescore_s / max(1, rows), 1),
            "note": "the incremental update is O(1) in the answer length; "
                    "rescoring is O(T) per token, O(T^2) per answer"}


def cached_answers(guard: str, records, read, key: str) -> list[dict]:
    """`read()`, kept under runs/streaming/ by what the scores depend on: the adapter's weights and
    config without its stop rule (a recalibration reuses them), and `key` (split, sizes)."""
    import hashlib

    from dsa.adapter_io import read_adapter_meta

    meta = read_adapter_meta(guard)
    config = {k: v for k, v in meta["config"].items() if k != "stream"}
    digest = hashlib.sha256(json.dumps([meta["checksum"]["weights"], config, key, [r.id for r in records]],
                                       sort_keys=True).encode()).hexdigest()[:16]
    path = ROOT / "runs" / "streaming" / f"answers-{key}-{digest}.json"
    if path.exists():
        return json.loads(path.read_text())
    answers = read()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(answers))
    return answers


def generated(base, bank, n: int, max_new_tokens: int) -> dict:
    """False stops of the guard at its default on answers the base writes (alignment 0) to the first
    `n` AlpacaEval and XSTest-safe prompts."""
    from dsa.data.sources import load_source
    from dsa.runtime import SafetyModel

    sm = SafetyModel(base, None, None, response_guards=bank)
    sets = {"alpaca_eval": [r.prompt or r.text for r in load_source("alpaca_eval")][:n],
            "xstest_safe": [r.prompt for r in load_source("xstest") if r.label == 0][:n]}
    out = {}
    for name, prompts in sets.items():
        res = []
        for k in range(0, len(prompts), 16):
            res += sm.generate(prompts[k:k + 16], alignment=0.0, max_new_tokens=max_new_tokens)
        stops = [r.n_tokens for r in res if r.stop_reason == "guard"]
        out[name] = {"answers": len(res), "false_stop_rate": round(len(stops) / max(1, len(res)), 4),
                     "tokens_shown_before_stop": sorted(stops),
                     "answer_tokens_mean": round(statistics.mean(r.n_tokens for r in res), 1)}
    return {"max_new_tokens": max_new_tokens, "alignment": 0.0, **out}


def paired(now: list, before: list) -> dict:
    """Harmful answers stopped by the shipped guard's default and not by the previous one's, and the
    reverse, within 32 / 64 tokens and at all (the same answers: a paired comparison)."""
    from dsa.guards.streaming import EARLY_TOKENS

    def hit(s, t):
        return s is not None and s <= t

    return {("any" if t == float("inf") else f"within_{t}"): {
        "shipped_only": sum(hit(a, t) and not hit(b, t) for a, b in zip(now, before, strict=True)),
        "previous_only": sum(hit(b, t) and not hit(a, t) for a, b in zip(now, before, strict=True)),
        "both": sum(hit(a, t) and hit(b, t) for a, b in zip(now, before, strict=True))}
        for t in (*EARLY_TOKENS, float("inf"))}


def relative(path: str) -> str:
    return str(Path(path).resolve().relative_to(ROOT)) if Path(path).resolve().is_relative_to(ROOT) else path


def measure(base, bank, guard: str, records, args) -> dict:
    """One response guard on the test answers: its default (stored stop rule), its whole-answer
    threshold read at every token with debounce 1-3, and its default on answers the base writes."""
    from dsa.guards.streaming import StreamRule, first_stop, operating_point, read_answers

    head, adapter = bank.heads[0], bank.adapters[0]
    answers = cached_answers(guard, records, lambda: read_answers(base, bank, records, args.max_response_tokens),
                             f"test-{len(records)}-{args.max_response_tokens}")
    harmful = [a for a in answers if a["labels"][head] == 1]
    safe = [a for a in answers if a["labels"][head] == 0]
    whole = bank.thresholds[head]
    final = [a["scores"][head][-1] >= whole for a in answers]
    rule = bank.stream_rules[head]
    out = {
        "guard": relative(guard), "head": head, "answers": len(answers), "harmful": len(harmful), "safe": len(safe),
        "response_tokens_mean": round(statistics.mean(a["n"] for a in answers), 1),
        "default": {"rule": rule.as_dict(),
                    "calibration": {k: v for k, v in (adapter.stream or {}).items() if k != "rules"},
                    **operating_point(answers, head, rule),
                    # per harmful answer (split order): the response token of the stop, None = never
                    "harmful_stops": [first_stop(a["scores"][head], rule) for a in harmful]},
        "whole_answer_threshold": {"threshold": whole, **{
            f"debounce_{k}": operating_point(answers, head, StreamRule(whole, 1, k)) for k in (1, 2, 3)}},
        # the score after the answer's last token at the whole-answer threshold (the training
        # transcripts also end with the end-of-turn tokens, which a streamed answer has not yet read)
        "last_token_flag": {
            "detection_rate": round(sum(f for f, a in zip(final, answers, strict=True) if a["labels"][head] == 1)
                                    / max(1, len(harmful)), 4),
            "false_positive_rate": round(sum(f for f, a in zip(final, answers, strict=True) if a["labels"][head] == 0)
                                         / max(1, len(safe)), 4)},
    }
    if args.generated:
        out["generated"] = generated(base, bank, args.generated, args.generated_tokens)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--guard", default=str(ROOT / "adapters/guards/response_harm"))
    p.add_argument("--previous", default=str(ROOT / "adapters/baselines/response_harm_v2"),
                   help="the response guard shipped before, measured the same way at its own default ('' = none)")
    p.add_argument("--safe", type=int, default=0,
                   help="safe answers to read, the first ones of the split (0 = all); every harmful one is read")
    p.add_argument("--max-response-tokens", type=int, default=256)
    p.add_argument("--generated", type=int, default=100,
                   help="AlpacaEval and XSTest-safe prompts each answered by the base through the runtime (0 = none)")
    p.add_argument("--generated-tokens", type=int, default=96, help="decode budget of those answers")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "streaming.json")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "server.md")
    p.add_argument("--doc-only", action="store_true", help="only regenerate the doc block from --out")
    args = p.parse_args()

    from dsa.guards.streaming_doc import write_block

    if args.doc_only:
        write_block(args.doc, json.loads(args.out.read_text()))
        return 0
    from dsa.base import load_base
    from dsa.data.tasks import guard_task
    from dsa.guards import GuardBank

    t_start = time.perf_counter()
    base = load_base()
    bank = GuardBank.load([args.guard], base)
    records = [r for r in guard_task(bank.adapters[0].task).test if r.label is not None]
    if args.safe:
        records = [r for r in records if r.label == 1] + [r for r in records if r.label == 0][: args.safe]
    shipped = measure(base, bank, args.guard, records, args)
    args_used = [a for a in sys.argv[1:] if a not in ("--doc-only",)]
    out = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python scripts/streaming_guard_eval.py"
                   + "".join(f" {a}" for a in args_used),
        "split": "test", "max_response_tokens": args.max_response_tokens, **shipped,
        "cost": cost(base, bank, records),
    }
    if args.previous and Path(args.previous).exists():
        out["previous"] = measure(base, GuardBank.load([args.previous], base), args.previous, records, args)
        out["paired"] = paired(out["default"]["harmful_stops"], out["previous"]["default"]["harmful_stops"])
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    write_block(args.doc, out)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
