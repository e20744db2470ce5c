"""docs/results-features.md's measured block, generated from results/features.json, which
`dsa features extract ... --compare-raw` writes (feature extraction against the raw forward).
`dsa features doc` rewrites the block alone."""

from __future__ import annotations

import json
from pathlib import Path

from dsa.docblock import splice_block

RESULTS, DOC = Path("results/features.json"), Path("docs/results-features.md")
START = "<!-- features-results:start (written by `dsa features doc` from results/features.json) -->"
END = "<!-- features-results:end -->"
TITLE = "# Feature extraction throughput"
MEASURE = "dsa features extract --task toxigen --n 2000 --compare-raw"
TARGET = 0.90  # issue #2: feature throughput >= 90 % of the raw forward's on the same texts


def verdict(ratio: float) -> str:
    return "met" if ratio >= TARGET else "MISSED"


def render(res: dict | None, results_path: str = str(RESULTS)) -> list[str]:
    """The block's lines: the measured table, or what to run when nothing is stored."""
    target = f"Target (issue #2): feature / raw throughput ≥ {TARGET:.2f}."
    if res is None:
        return [target, "", f"No measurement is stored: `{results_path}` does not exist. `{MEASURE}` measures "
                "the ratio and writes that file and this block."]
    m, c = res["machine"], res["compare"]
    lines = [target, "", f"`{res['command']}` on {res['date']}: {res['texts']:,} texts of `{res['source']}`, base "
             f"`{res['base']}` ({m['device']} {m['dtype']}), taps {', '.join(f'`{t}`' for t in res['taps'])}, "
             f"{res['pooling']} pooling, max length {res['max_length']}; {m['cpu']} ({m['cores']} cores, "
             f"{m['torch_threads']} torch thread(s), OMP_NUM_THREADS={m['omp_num_threads']}), torch {m['torch']}, "
             f"commit `{m['commit']}`; load average {m['load_average']} at the start, {m['load_average_end']} at "
             "the end.", "",
             "| run | tokens | seconds | tokens/s |", "|---|---|---|---|",
             f"| raw forward (decoder stack, no hooks) | {c['tokens']:,} | {c['raw_seconds']:.1f} | "
             f"{c['raw_tokens_per_s']:.0f} |",
             f"| feature forward ({len(res['taps'])} taps, {res['pooling']} pooling) | {c['tokens']:,} | "
             f"{c['features_seconds']:.1f} | {c['features_tokens_per_s']:.0f} |", "",
             f"Ratio feature / raw throughput = **{c['ratio']:.3f}** (target ≥ {TARGET:.2f}: {verdict(c['ratio'])})."]
    if e := res.get("end_to_end"):
        lines += ["", f"`extract_features` end to end into a fresh cache (tokenise, bucket, forward, write shards): "
                  f"{e['tokens']:,} tokens in {e['seconds']:.1f} s = {e['tokens_per_s']:.0f} tokens/s."]
    return lines


def write_features_doc(results: Path = RESULTS, doc: Path = DOC) -> Path:
    """Rewrite the measured block of `doc` from `results` (a note to run the measurement when absent)."""
    results, doc = Path(results), Path(doc)
    res = json.loads(results.read_text()) if results.exists() else None
    splice_block(doc, [START, *render(res, str(results)), END], START, END, TITLE, missing_tail="\n")
    return doc
