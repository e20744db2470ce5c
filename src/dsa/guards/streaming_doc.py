"""The streaming response guard's numbers in docs/server.md, generated from results/streaming.json
(written by scripts/streaming_guard_eval.py); the hand-written text around the block stays.

    .venv/bin/python scripts/streaming_guard_eval.py --doc-only
"""

from __future__ import annotations

from pathlib import Path

from dsa.docblock import splice_block

COMMAND = ".venv/bin/python scripts/streaming_guard_eval.py --doc-only"
START, END = f"<!-- streaming:start (written by `{COMMAND}`) -->", "<!-- streaming:end -->"
# issue #23: at the default, benign false stops <= 0.03 with detection >= 0.85 on harmful answers
TARGET_FALSE_STOP, TARGET_DETECTION = 0.03, 0.85


def _f(x, d: int = 3) -> str:
    return "–" if x is None else f"{x:.{d}f}" if isinstance(x, float) else str(x)


def _row(name: str, p: dict) -> str:
    return (f"| {name} | {_f(p['false_stop_rate'])} | {_f(p['detection_rate'])} | {_f(p['tokens_to_stop_median'])} | "
            f"{_f(p['tokens_to_stop_mean'], 1)} | {_f(p['fraction_of_answer_at_stop_median'])} |")


def _calibration(cal: dict, val: dict) -> str:
    groups = val.get("false_stop_rate_by_group") or {cal["source"]: val["false_stop_rate"]}
    return (f", chosen by `dsa guard calibrate-stream` for at most {cal['target_fpr']:g} false stops in each group of "
            f"validation answers (there: " + ", ".join(f"{_f(v)} of the {g}" if g else _f(v) for g, v in groups.items())
            + f"; detection {_f(val['detection_rate'])} of {val['harmful']} harmful {cal['source']} answers)")


def block(r: dict) -> list[str]:
    """The generated lines (markers included) for one results/streaming.json."""
    d, rule = r["default"], r["default"]["rule"]
    cal = d.get("calibration") or {}
    val = (cal.get("val") or {}).get(r["head"])
    met = d["false_stop_rate"] <= TARGET_FALSE_STOP and d["detection_rate"] >= TARGET_DETECTION
    lines = [START, "",
             f"Measured by `{r['command']}` on the {r['split']} split of {r['head'].split('/')[0]} "
             f"({r['safe']} safe and {r['harmful']} harmful answers, at most {r['max_response_tokens']} tokens each, "
             f"{r['response_tokens_mean']} on average; `{r['guard']}`), from `results/streaming.json`.", "",
             f"The default stop rule stored in the adapter: score ≥ {rule['threshold']:.4f} on {rule['debounce']} "
             f"consecutive tokens, from response token {rule['min_tokens']} on"
             + (_calibration(cal, val) if val else " (no streaming calibration stored: the whole-answer threshold)")
             + ".", "",
             "| rule | false stops (safe) | detection (harmful) | tokens to stop, median | mean | "
             "share of the answer shown, median |",
             "|---|---|---|---|---|---|",
             _row("**default** (stored stop rule)", d)]
    w = r["whole_answer_threshold"]
    for k in (1, 2, 3):
        lines.append(_row(f"whole-answer threshold {w['threshold']:.4f}, debounce {k} (before)", w[f"debounce_{k}"]))
    lines += ["", f"Target (issue #23): false stops ≤ {TARGET_FALSE_STOP} with detection ≥ {TARGET_DETECTION} at "
              f"the default: **{'met' if met else 'missed'}**. The whole answer read once at its threshold flags "
              f"{_f(r['whole_answer_flag']['detection_rate'])} of the harmful answers and "
              f"{_f(r['whole_answer_flag']['false_positive_rate'])} of the safe ones."]
    g = r.get("generated")
    if g:
        parts = [f"{name} {_f(s['false_stop_rate'])} ({s['answers']} answers, {s['answer_tokens_mean']} tokens on "
                 f"average)" for name, s in g.items() if isinstance(s, dict)]
        lines += ["", f"False stops on answers the base writes itself (λ {g['alignment']:g}, up to "
                      f"{g['max_new_tokens']} tokens, through `SafetyModel.generate` at the default): "
                  + "; ".join(parts) + "."]
    c = r["cost"]
    lines += ["", f"Cost per token: {c['incremental_update_us_per_token']} µs for the incremental update against "
                  f"{c['whole_transcript_rescore_us_at_last_token']} µs to rescore a whole transcript once.", "", END]
    return lines


def write_block(doc: Path, results: dict) -> None:
    """Replace the generated block of `doc` (or append one) with `block(results)`."""
    splice_block(Path(doc), block(results), START, END, "# Server", missing_tail="\n")
