"""docs/results-bench.md and docs/img/bench-*.png, generated from results/bench.json only.

    dsa bench --doc-only        # or: python -m dsa.bench.doc
"""

from __future__ import annotations

import json
from pathlib import Path

from dsa.adapter_io import atomic_write_text

RESULTS, DOC, IMG = Path("results/bench.json"), Path("docs/results-bench.md"), Path("docs/img")
VARIANTS = ("plr", "mlp", "rtb", "lst", "window", "all_shipped")
BASELINES = ("minilm_standalone", "second_pass", "generative_guard")
REQUESTS = {"benign": "benign request", "flagged": "flagged request",
            "served_benign": "benign request on the server's path"}


def _r(s: dict | None, d: int = 3) -> str:
    """'median [min–max]' of a spread dict."""
    if not s:
        return "–"
    return f"{s['median']:.{d}f} [{s['min']:.{d}f}–{s['max']:.{d}f}]"


def _verdict(value: float | None, target: float, at_least: bool = False) -> str:
    if value is None:
        return "not measured"
    ok = value >= target if at_least else value <= target
    if ok:
        return "met"
    return f"**missed** by {abs(value - target):.4f} ({abs(value - target) / target * 100:.2f} %)"


def _cell_name(c: dict) -> str:
    return f"b{c['batch']}×{c['length']}"


def targets_table(res: dict) -> list[str]:
    t = res["targets"]
    lines = ["| ratio | measured (median) | target | verdict | why, where missed |", "|---|---|---|---|---|"]
    cells = res.get("guard_overhead_cells", [])
    for v in VARIANTS:
        if not cells:
            break
        if v not in cells[0]["ratios"]:  # a variant the run did not have (no shipped window head)
            continue
        worst = max(cells, key=lambda c: c["ratios"][v]["ratio"]["median"])
        val = worst["ratios"][v]["ratio"]["median"]
        ref = res["guard_overhead"][v]
        why = ""
        if val > t["guard_overhead"][v]:
            g = worst["ratios"][v]["guard_work_s"]["median"] * 1000
            why = (f"{g:.1f} ms of guard work against a {worst['bare_prefill_s']['median'] * 1000:.0f} ms prefill "
                   f"at {_cell_name(worst)}: fixed per-call work that a short prompt does not amortise")
        lines.append(f"| guard overhead `{v}` (reference {_cell_name(res['guard_overhead_reference'])}: {ref:.3f}; "
                     f"worst cell {_cell_name(worst)}) | {val:.3f} | ≤ {t['guard_overhead'][v]} | "
                     f"{_verdict(val, t['guard_overhead'][v])} | {why} |")
    for k, d in res.get("streaming_detail", {}).items():
        val = d["ratio"]["median"]
        why = ""
        if val > t["streaming_per_token"]:
            extra = d["guarded_ms"]["median"] - d["plain_ms"]["median"]
            why = (f"{extra:.2f} ms more per step than the {d['plain_ms']['median']:.1f} ms plain step "
                   f"(hooks on {len(res.get('response_guard', {}).get('taps', []))} taps and the head's update); "
                   f"per-step ratios spread {d['ratio']['min']:.3f}–{d['ratio']['max']:.3f} over {d['steps']} steps")
        lines.append(f"| streaming guard per token at {k} tokens | {val:.3f} | ≤ {t['streaming_per_token']} | "
                     f"{_verdict(val, t['streaming_per_token'])} | {why} |")
    rq = res.get("requests_detail", {})
    for name in REQUESTS:
        if name in rq and f"{name}_request" in t:
            d, key = rq[name], f"{name}_request"
            why = ""
            if d["ratio"]["median"] > t[key]:
                why = res.get("why", {}).get(key, "")
                if name in ("benign", "served_benign") and res.get("streaming_detail"):
                    k0 = min(res["streaming_detail"], key=int)
                    why = (f"the request carries the streaming response guard on each of its {d['tokens']} decoded "
                           f"tokens (measured alone: {res['streaming_detail'][k0]['ratio']['median']:.3f} per step at "
                           f"{k0} tokens) and the prompt guard on the prefill; this arm's spread was "
                           f"{d['ratio']['min']:.3f}–{d['ratio']['max']:.3f}")
                if name == "served_benign" and "benign" in rq:
                    why += (f"; the benign request through `SafetyModel.prefill` does the same work (no row at "
                            f"λ = 0 runs the adapter) and measured {rq['benign']['ratio']['median']:.3f} in this run")
            lines.append(f"| {REQUESTS[name]} (λ = {d['lambda']}) vs plain greedy, {d['tokens']} tokens | "
                         f"{d['ratio']['median']:.3f} | ≤ {t[key]} | "
                         f"{_verdict(d['ratio']['median'], t[key])} | {why} |")
    for b, d in res.get("runtime_detail", {}).items():
        val = d["ratio"]["median"]
        why = res.get("why", {}).get("runtime_vs_generate", "") if val < t["runtime_vs_generate"] else ""
        lines.append(f"| runtime decode loop vs `model.generate`, batch {b} (tokens/s) | {val:.3f} | "
                     f"≥ {t['runtime_vs_generate']} | "
                     f"{_verdict(val, t['runtime_vs_generate'], at_least=True)} | {why} |")
    return lines


def overhead_tables(res: dict) -> list[str]:
    cells = res.get("guard_overhead_cells", [])
    if not cells:
        return []
    names = [c for c in VARIANTS + BASELINES if c in cells[0]["ratios"]]
    head = "| | " + " | ".join(_cell_name(c) for c in cells) + " |"
    sep = "|---|" + "---|" * len(cells)
    lines = ["Bare prefill (seconds, median [min–max]):", "", head, sep,
             "| bare prefill | " + " | ".join(_r(c["bare_prefill_s"]) for c in cells) + " |", "",
             "Ratio to the bare prefill, `1 + extra / bare` (median [min–max] over repetitions):", "", head, sep]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(_r(c["ratios"][n]["ratio"]) for c in cells) + " |")
    if "tap_bytes" in cells[0]["ratios"][VARIANTS[0]]:
        lines += ["", "Bytes the recorded taps hold once the prefill is done (pooled summaries when the bank "
                  "pools inside the hooks, else the full [batch, seq, d] states):", "", head, sep]
        for n in VARIANTS:
            if n in cells[0]["ratios"]:
                lines.append(f"| {n} | " + " | ".join(_bytes(c["ratios"][n]["tap_bytes"]) for c in cells) + " |")
    lines += ["", "End to end: the guarded forward (every variant's taps and heads at once) / the bare forward, "
              "each a separate run (on a shared CPU this carries the machine's noise, several per cent):", "",
              head, sep,
              "| all variants at once | " + " | ".join(_r(c["end_to_end_all_variants"]) for c in cells) + " |"]
    return lines


def plots(res: dict, img: Path = IMG) -> list[Path]:
    """Cost vs prompt length (batch 1) and vs batch size (shortest length), and streaming cost."""
    from dsa.extras import pyplot

    plt = pyplot()
    out = []
    cells = res.get("guard_overhead_cells", [])
    img.mkdir(parents=True, exist_ok=True)
    if cells:
        names = [c for c in VARIANTS + BASELINES if c in cells[0]["ratios"]]
        short = min(c["length"] for c in cells)
        for key, pick, xlab, fname in (
                ("length", [c for c in cells if c["batch"] == 1], "prompt length (tokens), batch 1",
                 "bench-length.png"),
                ("batch", [c for c in cells if c["length"] == short], f"batch size, prompt {short} tokens",
                 "bench-batch.png")):
            if len(pick) < 2:
                continue
            pick = sorted(pick, key=lambda c: c[key])
            fig, ax = plt.subplots(figsize=(7, 4.2))
            for n in names:
                ax.plot([c[key] for c in pick], [max(c["ratios"][n]["ratio"]["median"] - 1, 1e-4) for c in pick],
                        "o-", label=n, lw=1.3)
            # the extra cost (ratio − 1) on a log axis, so 0.5 % and 200 % are both readable
            ax.set(xscale="log", yscale="log", xlabel=xlab, ylabel="extra cost / bare prefill (ratio − 1)",
                   title="guard cost on top of the bare prefill")
            for y, lab in ((0.01, "1 %"), (0.05, "5 %")):
                ax.axhline(y, color="k", lw=0.6, ls=":")
                ax.text(pick[0][key], y * 1.08, lab, fontsize=7)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
            fig.tight_layout()
            fig.savefig(img / fname, dpi=110)
            plt.close(fig)
            out.append(img / fname)
    sd = res.get("streaming_detail")
    if sd:
        xs = sorted(int(k) for k in sd)
        fig, ax = plt.subplots(figsize=(6, 3.8))
        ax.errorbar(xs, [sd[str(x)]["ratio"]["median"] for x in xs],
                    yerr=[[sd[str(x)]["ratio"]["median"] - sd[str(x)]["ratio"]["min"] for x in xs],
                          [sd[str(x)]["ratio"]["max"] - sd[str(x)]["ratio"]["median"] for x in xs]], fmt="o-")
        ax.axhline(res["targets"]["streaming_per_token"], color="r", lw=0.8, ls="--", label="target")
        ax.set(xscale="log", xlabel="decoded tokens", ylabel="guarded step / plain step",
               title="streaming response guard per token")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(img / "bench-streaming.png", dpi=110)
        plt.close(fig)
        out.append(img / "bench-streaming.png")
    return out


def _bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def write_bench_doc(results: Path = RESULTS, path: Path = DOC, img: Path = IMG) -> Path | None:
    if not results.exists():
        return None
    res = json.loads(results.read_text())
    m = res["machine"]
    pngs = plots(res, img)
    lines = ["# Benchmark: what the one-pass guard, streaming and alignment cost", "",
             f"Generated by `dsa bench --doc-only` from `results/bench.json`, which `{res['command']}` wrote "
             f"on {res.get('date', '?')} in {res.get('seconds', 0):.0f} s on {m['cpu']} ({m['cores']} cores, "
             f"{m['torch_threads']} torch thread(s), "
             f"OMP_NUM_THREADS={m['omp_num_threads']}), {m['device']} {m['dtype']}, torch {m['torch']}, commit "
             f"`{m['commit']}`; load average {m['load_average']} at the start, {m.get('load_average_end')} at the end "
             "(a shared machine). Every number below is in that file.", "",
             "Every figure is a ratio of two things measured in the same run, interleaved: each repetition runs "
             "every arm once, in an order rotated every repetition, and a ratio is taken within a repetition; "
             "tables give the median and [min–max] over repetitions. "
             + ("Times are the process's CPU time (the machine is shared: wall-clock time would count the "
                "slices the scheduler gives to other jobs; with one torch thread, CPU time is the work done)."
                if res.get("clock", "wall") == "process" else "Times are wall-clock (GPU work synchronised)."), "",
             "## Targets", "", *targets_table(res), ""]
    if not res.get("complete", True):
        missing = [k for k in ("guard_overhead", "streaming_per_token", "benign_request", "runtime_vs_generate",
                               "memory", "server") if k not in res]
        lines[-1:-1] = ["", f"**Incomplete run**: the file was written before the run ended; not yet measured: "
                        f"{', '.join(missing) or 'the last section'}."]
    if "guard_overhead_cells" in res:
        lines += ["## Guard overhead on the prefill", "",
                  "The guarded arm is the same prefill with the guard taps recorded (pooled inside the hooks) and "
                  "the heads scored; one guarded forward carries every variant. A variant's ratio is "
                  "`1 + its guard work / bare prefill`, its guard work timed where it runs (in its hooks and in "
                  "its heads) within the guarded forward. The baselines' ratio is "
                  "`1 + their own time / bare prefill`: `minilm_standalone` a MiniLM-L6 classifier on the same "
                  "texts (tokenising included, truncated at 512 tokens), `second_pass` a second forward of the base "
                  "over the prompt (LoRA-Guard), `generative_guard` the base asked in a second prompt whether the "
                  f"request is harmful, writing {res['config']['generative_tokens']} tokens (as Llama Guard is used).",
                  "", "Heads:", ""]
        for k, h in res["heads"].items():
            lines.append(f"- `{k}`: {h['what']}; {len(h['taps'])} taps, {h['heads']} head(s), {_bytes(h['bytes'])}"
                         + (" (random weights, timing only)" if h["random_weights"] else ""))
        lines += ["", *overhead_tables(res), ""]
        alt = {"bench-length.png": "cost vs prompt length", "bench-batch.png": "cost vs batch size"}
        lines += [f"![{alt[p.name]}](img/{p.name})" for p in pngs if p.name in alt] + [""]
    if "streaming_detail" in res:
        lines += ["## Streaming response guard", "",
                  "One conversation decoded twice in lockstep, with and without the response guard "
                  f"({res.get('response_guard', {}).get('what', 'response_harm')}, "
                  f"{len(res.get('response_guard', {}).get('taps', []))} taps), alternating single decode steps; "
                  "the ratio is guarded step / plain step over the steps just before each length. "
                  + ("Each transcript is prefilled up to its last steps, which are decoded: the guard's state "
                     "costs the same per token whatever the length (running sums, last token, a fixed window), so "
                     "what grows with the length is the step's KV cache."
                     if next(iter(res["streaming_detail"].values())).get("prefilled")
                     else "Every token is decoded."), "",
                  "| transcript tokens | ratio | plain step (ms) | guarded step (ms) | decoded steps | "
                  "context reached |",
                  "|---|---|---|---|---|---|"]
        for k, d in res["streaming_detail"].items():
            lines.append(f"| {k} | {_r(d['ratio'])} | {_r(d['plain_ms'], 1)} | {_r(d['guarded_ms'], 1)} | "
                         f"{d['steps']} | {d.get('context_tokens') or k} |")
        lines += ["", "![streaming](img/bench-streaming.png)", ""]
    if "requests_detail" in res:
        lines += ["## Context-dependent alignment", "",
                  "`SafetyModel` with the prompt guard, the alignment adapter and the streaming response guard "
                  "(`alignment=\"auto\"`) against a plain `SafetyModel` (no guard, λ = 0), same prompt, greedy, "
                  "end of sequence masked so both write the same number of tokens. The flagged request is forced to "
                  "λ = 1 (`min_alignment=1`) so that it measures the aligned path whatever the guard says."
                  + (" `served_benign` is the benign request on the server's path: the prefill `ModelWorker` runs "
                     "for admitted requests (`dsa.serve.worker.prefill_chats`, rows ready to merge into a running "
                     "batch) and its decode steps, against the plain model on the same path."
                     if "served_benign" in res["requests_detail"] else ""), "",
                  "| request | prompt | λ | ratio | guarded (s) | plain (s) |", "|---|---|---|---|---|---|"]
        for name in [n for n in REQUESTS if n in res["requests_detail"]]:
            d = res["requests_detail"][name]
            lines.append(f"| {name} | {d['prompt']} | {d['lambda']} | {_r(d['ratio'])} | {_r(d['seconds'])} | "
                         f"{_r(d['plain_seconds'])} |")
        skipped = res["requests_detail"].get("skipped_benign")
        if skipped:
            lines += ["", "Benign prompts passed over because the shipped prompt guard flags them (λ > 0): "
                      + "; ".join(f"“{p}”" for p in skipped) + "."]
        lines.append("")
    if "runtime_detail" in res:
        lines += ["## Runtime decode loop vs `model.generate`", "",
                  "`SafetyModel.prefill` + `decode_step` (no guard, λ = 0) against Hugging Face `model.generate` "
                  "on the same left-padded prompts, greedy, the same number of new tokens.", "",
                  "| batch | tokens/s runtime ÷ generate | runtime tok/s | generate tok/s |", "|---|---|---|---|"]
        for b, d in res["runtime_detail"].items():
            lines.append(f"| {b} | {_r(d['ratio'])} | {_r(d['runtime_tok_s'], 1)} | {_r(d['generate_tok_s'], 1)} |")
        lines.append("")
    mem = res.get("memory")
    if mem and "error" not in mem:
        lines += ["## Memory", "",
                  f"Peak RSS, each in a fresh process that generates 16 tokens for a ~300-token prompt: base alone "
                  f"{_bytes(mem['base']['peak_rss_bytes'])}, `SafetyModel` with every shipped guard, the response "
                  f"guard and the alignment adapter at λ = 1 {_bytes(mem['safety_model']['peak_rss_bytes'])} "
                  f"(ratio {mem['ratio']:.3f})."
                  + (" Equal peaks: both are set while the base loads, before any guard or adapter runs; what the "
                     "guards hold during a prefill is the tap table above." if mem["ratio"] < 1.005 else ""),
                  "", "| guard | bytes per head |", "|---|---|"]
        lines += [f"| {k} | {v:,} ({_bytes(v)}) |" for k, v in mem["bytes_per_head"].items()] + [""]
    elif mem:
        lines += ["## Memory", "", f"Not measured: {mem['error']}", ""]
    srv = res.get("server")
    if srv and "error" not in srv:
        lines += ["## Server throughput", "",
                  "`dsa serve` (shipped prompt guard and alignment adapter, dynamic batching) driven by "
                  "`scripts/server_load.py`'s load phase; max_tokens 16.", "",
                  "| clients | requests | requests/s | p50 (s) | p95 (s) | errors |", "|---|---|---|---|---|---|"]
        lines += [f"| {c} | {d['requests']} | {d['rps']} | {d['p50_s']} | {d['p95_s']} | {d['errors']} |"
                  for c, d in srv.items()] + [""]
    for sections, u in res.get("updated", {}).items():
        lines += [f"Re-measured afterwards in the same file: `{sections}` by `{u['command']}` "
                  f"(load average {u['machine']['load_average']} at its start).", ""]
    for note in res.get("notes", []):
        lines += [f"Note: {note}", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    print(write_bench_doc())
