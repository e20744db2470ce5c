"""The streaming response guard's numbers in docs/server.md, generated from results/streaming.json
(written by scripts/streaming_guard_eval.py); the hand-written text around the block stays.

    .venv/bin/python scripts/streaming_guard_eval.py --doc-only
"""

from __future__ import annotations

from pathlib import Path

from dsa.docblock import splice_block
from dsa.guards.streaming import EARLY_TOKENS

COMMAND = ".venv/bin/python scripts/streaming_guard_eval.py --doc-only"
START, END = f"<!-- streaming:start (written by `{COMMAND}`) -->", "<!-- streaming:end -->"
# issue #23: at the default, benign false stops <= 0.03 with detection >= 0.85 on harmful answers
TARGET_FALSE_STOP, TARGET_DETECTION = 0.03, 0.85


def _f(x, d: int = 3) -> str:
    return "–" if x is None else f"{x:.{d}f}" if isinstance(x, float) else str(x)


def _row(name: str, p: dict) -> str:
    early = " | ".join(_f(p.get(f"detection_within_{t}")) for t in EARLY_TOKENS)
    return (f"| {name} | {_f(p['false_stop_rate'])} | {_f(p['detection_rate'])} | {early} | "
            f"{_f(p['tokens_to_stop_median'], 1)} | {_f(p['tokens_to_stop_mean'], 1)} | "
            f"{_f(p['fraction_of_answer_at_stop_median'])} |")


def _calibration(cal: dict, val: dict) -> str:
    groups = val.get("false_stop_rate_by_group") or {cal["source"]: val["false_stop_rate"]}
    return (f", chosen by `dsa guard calibrate-stream` for at most {cal['target_fpr']:g} false stops in each group of "
            f"validation answers (there: " + ", ".join(f"{_f(v)} of the {g}" if g else _f(v) for g, v in groups.items())
            + f"; detection {_f(val['detection_rate'])} of {val['harmful']} harmful {cal['source']} answers"
            + "".join(f", {_f(val[f'detection_within_{t}'])} within {t} tokens" for t in EARLY_TOKENS
                      if f"detection_within_{t}" in val) + ")")


def _generated(name: str, g: dict) -> str:
    parts = [f"{s_name} {_f(s['false_stop_rate'])} ({s['answers']} answers, "
             f"{s['answer_tokens_mean']} tokens on average)"
             for s_name, s in g.items() if isinstance(s, dict)]
    return f"{name}: " + "; ".join(parts)


def block(r: dict) -> list[str]:
    """The generated lines (markers included) for one results/streaming.json."""
    d, rule = r["default"], r["default"]["rule"]
    cal = d.get("calibration") or {}
    val = (cal.get("val") or {}).get(r["head"])
    met = d["false_stop_rate"] <= TARGET_FALSE_STOP and d["detection_rate"] >= TARGET_DETECTION
    prev = r.get("previous")
    lines = [START, "",
             f"Measured by `{r['command']}` on the {r['split']} split of {r['head'].split('/')[0]} "
             f"({r['safe']} safe and {r['harmful']} harmful answers, at most {r['max_response_tokens']} tokens each, "
             f"{r['response_tokens_mean']} on average), from `results/streaming.json`.", "",
             f"The default stop rule stored in `{r['guard']}`: score ≥ {rule['threshold']:.4f} on {rule['debounce']} "
             f"consecutive token(s), from response token {rule['min_tokens']} on"
             + (_calibration(cal, val) if val else " (no streaming calibration stored: the whole-answer threshold)")
             + ".", "",
             "| guard, rule | false stops (safe) | detection (harmful) | "
             + "".join(f"stopped within {t} tokens | " for t in EARLY_TOKENS)
             + "tokens to stop, median | mean | share of the answer shown, median |",
             "|---|---|---|" + "---|" * len(EARLY_TOKENS) + "---|---|---|",
             _row("**shipped, default** (its stop rule)", d)]
    w = r["whole_answer_threshold"]
    lines.append(_row(f"shipped, whole-answer threshold {w['threshold']:.4f}, debounce 1", w["debounce_1"]))
    if prev:
        if prev["default"].get("calibration"):
            lines.append(_row(f"previous (`{prev['guard']}`), default (its stop rule, threshold "
                              f"{prev['default']['rule']['threshold']:.4f})", prev["default"]))
        pw = prev["whole_answer_threshold"]
        for k in (1, 2, 3):
            what = " (its default: the default before)" if k == 1 and not prev["default"].get("calibration") else ""
            lines.append(_row(f"previous (`{prev['guard']}`), whole-answer threshold {pw['threshold']:.4f}, "
                              f"debounce {k}{what}", pw[f"debounce_{k}"]))
    pair = r.get("paired")
    if pair and prev:
        lines += ["", "The same harmful answers, shipped default against previous default (stopped by one and not the "
                      "other): " + "; ".join(f"{k.replace('_', ' ')} tokens" .replace("any tokens", "at all")
                                              + f" {v['shipped_only']} against {v['previous_only']} (both {v['both']})"
                                              for k, v in pair.items()) + f", of {r['harmful']}."]
    lines += ["", f"Target (issue #23): false stops ≤ {TARGET_FALSE_STOP} with detection ≥ {TARGET_DETECTION} at "
              f"the default: **{'met' if met else 'missed'}**. The shipped head's score after each answer's last "
              f"token, at its whole-answer threshold, flags {_f(r['last_token_flag']['detection_rate'])} of the "
              f"harmful answers and {_f(r['last_token_flag']['false_positive_rate'])} of the safe ones."]
    g = r.get("generated")
    if g:
        lines += ["", f"False stops on answers the base writes itself to eval-only prompts (λ {g['alignment']:g}, up "
                      f"to {g['max_new_tokens']} tokens, through `SafetyModel.generate` at each guard's default; "
                      f"target ≤ {TARGET_FALSE_STOP}): " + _generated("shipped", g)
                  + (f"; {_generated('previous', prev['generated'])}" if prev and prev.get("generated") else "") + "."]
    c = r["cost"]
    lines += ["", f"Cost per token: {c['incremental_update_us_per_token']} µs for the incremental update against "
                  f"{c['whole_transcript_rescore_us_at_last_token']} µs to rescore a whole transcript once.", "", END]
    return lines


def write_block(doc: Path, results: dict) -> None:
    """Replace the generated block of `doc` (or append one) with `block(results)`."""
    splice_block(Path(doc), block(results), START, END, "# Server", missing_tail="\n")
