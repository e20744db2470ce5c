"""Write the measured block of docs/vllm.md from results/vllm.json (no engine needed).

    .venv/bin/python scripts/vllm_doc.py
"""

from __future__ import annotations

import json
from pathlib import Path

from dsa.docblock import splice_block

REPO = Path(__file__).resolve().parents[1]
DOC, RESULTS = REPO / "docs" / "vllm.md", REPO / "results" / "vllm.json"
START = "<!-- vllm-results:start (written by `.venv/bin/python scripts/vllm_doc.py` from results/vllm.json) -->"
END = "<!-- vllm-results:end -->"


def render(r: dict) -> str:
    p, t = r["parity"], r["throughput"]
    rows = [
        "| parity (n = {n} prompts, {k} greedy tokens each, top-{top} raw logits) | max abs diff |".format(
            n=p["n_prompts"], k=p["tokens_per_row"], top=p["top_k"]),
        "|---|---|",
        f"| guard score (`{p['policy_head']}`), vLLM vs HF runtime `classify` | {p['guard_score_max_abs_diff']:.4f} |",
        f"| λ = 0 rows ({p['lambda0_rows']} of {p['n_prompts']}) vs plain vLLM, logits | "
        f"{p['lambda0_logits_max_abs_diff']:.4g} |",
        f"| λ = 1 vs the HF runtime's DSA adapter (`SafetyModel.forward_logits`), logits | "
        f"{p['lambda1_logits_max_abs_diff']:.4f} |",
        f"| for scale: plain vLLM vs HF base model, logits | {p['plain_vllm_vs_hf_base_logits_max_abs_diff']:.4f} |",
        f"| λ under `auto` equal to the HF runtime's policy λ | {p['lambda_matches_hf']} of {p['n_prompts']} |",
        "",
        f"| throughput, {t['concurrency']} concurrent requests × {t['max_tokens']} tokens, {t['mode']}, "
        "1 thread | tok/s |",
        "|---|---|",
        f"| dsa in vLLM (`alignment=\"auto\"`, {t['dsa_vllm_rows_aligned']} of {t['concurrency']} rows aligned) | "
        f"{t['dsa_vllm_tok_s']:.1f} |",
        f"| plain vLLM | {t['vllm_plain_tok_s']:.1f} |",
        f"| dsa HF runtime (`SafetyModel.generate`, one batch) | {t['dsa_hf_tok_s']:.1f} |",
        "",
        f"dsa-in-vLLM / plain vLLM = {t['dsa_vllm_tok_s'] / t['vllm_plain_tok_s']:.2f}; "
        f"dsa-in-vLLM / HF runtime = {t['dsa_vllm_tok_s'] / t['dsa_hf_tok_s']:.2f}. "
        f"Engine start: plain {t['engine_start_s']['vllm_plain']} s, dsa {t['engine_start_s']['dsa_vllm']} s.",
    ]
    b = r.get("throughput_benign")
    if b:
        rows += [
            "",
            "| prompt mix, same engines and settings | aligned rows (vLLM / HF) | dsa in vLLM | plain vLLM | "
            "dsa HF runtime | dsa / plain | compute bound | dsa vLLM / HF |",
            "|---|---|---|---|---|---|---|---|",
            *(_mix_row(name, x) for name, x in ((t.get("prompts", "flagged"), t), (b["prompts"], b))),
            "",
            "*Compute bound*: the dsa/plain ratio the extra matrix work alone allows, from the weights' shapes "
            f"(base {t['compute_bound']['plain_macs_per_token'] / 1e6:.1f} M multiply-adds per token with its LM "
            f"head; an aligned row adds the adapter tail, {t['compute_bound']['tail_macs_per_token'] / 1e6:.1f} M, "
            f"and the LM head once more, {t['compute_bound']['lm_head_macs_per_token'] / 1e6:.1f} M). Attention "
            "scores, sampling and per-step overheads are left out on both sides.",
        ]
    c = r.get("compiled")
    if c:
        rows += [
            "",
            f"| compiled (`--compiled`), {c['concurrency']} concurrent requests × {c['max_tokens']} tokens, "
            "1 thread | tok/s |",
            "|---|---|",
            f"| dsa in vLLM ({c['dsa_vllm_rows_aligned']} of {c['concurrency']} rows aligned) | "
            f"{c['dsa_vllm_tok_s']:.1f} |",
            f"| plain vLLM | {c['vllm_plain_tok_s']:.1f} |",
            "",
            f"Compiled: dsa-in-vLLM / plain vLLM = {c['dsa_vllm_tok_s'] / c['vllm_plain_tok_s']:.2f}; guard score "
            f"max abs diff to the HF runtime {c['guard_score_max_abs_diff']:.4f}, "
            f"λ = 0 rows ({c['lambda0_rows']}) vs plain "
            f"vLLM {c['lambda0_logits_max_abs_diff']:.4g}. Engine start: plain {c['engine_start_s']['vllm_plain']} s, "
            f"dsa {c['engine_start_s']['dsa_vllm']} s.",
        ]
    return "\n".join(rows)


def _mix_row(name: str, x: dict) -> str:
    return (f"| {name} | {x['dsa_vllm_rows_aligned']} / {x.get('dsa_hf_rows_aligned', '–')} of {x['concurrency']} | "
            f"{x['dsa_vllm_tok_s']:.1f} | {x['vllm_plain_tok_s']:.1f} | {x['dsa_hf_tok_s']:.1f} | "
            f"{x['dsa_vllm_tok_s'] / x['vllm_plain_tok_s']:.2f} | {x['compute_bound']['ratio']:.2f} | "
            f"{x['dsa_vllm_tok_s'] / x['dsa_hf_tok_s']:.2f} |")


def write_doc(results: dict, doc: Path = DOC) -> Path:
    """Replace the block between START and END of `doc` with the rendering of `results`."""
    if START not in doc.read_text():
        raise SystemExit(f"{doc}: expected one {START} ... {END} block")
    splice_block(doc, [START, render(results), END], START, END, "# vLLM")
    return doc


def main() -> None:
    write_doc(json.loads(RESULTS.read_text()))


if __name__ == "__main__":
    main()
