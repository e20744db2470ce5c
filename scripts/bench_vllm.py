"""dsa inside vLLM vs plain vLLM vs the HF runtime: parity and throughput → results/vllm.json.

    OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=nobind .venv-vllm/bin/python scripts/bench_vllm.py

Runs in .venv-vllm (scripts/setup-vllm.sh); the HF runtime's side runs in .venv through
`python -m dsa.vllm.reference`. Engines are eager (hooks-free, but the compiled mode was not
measured here), bf16, one thread. Parity: 20 prompts (10 StrongREJECT, 10 XSTest safe), greedy,
16 tokens, top-20 raw logits per token. Throughput: 16 requests submitted at once, 64 tokens each
(ignore_eos), best of --reps runs after a short warm-up, plain and dsa runs interleaved (both engines
alive) so that load from other jobs on the machine hits both alike; the HF runtime generates the
same 16 prompts as one batch (it stops rows at EOS, so its token count is what it generated).
Two prompt mixes: `flagged` (the parity prompts: half StrongREJECT, half XSTest safe, most of them
aligned) and `benign` (the first AlpacaEval instructions: ordinary traffic). `compute_bound` is
the ratio the extra matrix work alone allows, from the weights' shapes: per token the base costs
its decoder layers plus the LM head; an aligned row also runs the adapter's tail layers and the
LM head once more.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from dsa.vllm import parity
from dsa.vllm.llm import VllmSafetyModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=parity.REPO / "results" / "vllm.json")
    ap.add_argument("--parity-tokens", type=int, default=16, help="greedy tokens per parity prompt")
    ap.add_argument("--concurrency", type=int, default=16, help="requests submitted at once")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens per request in the throughput runs")
    ap.add_argument("--reps", type=int, default=2, help="throughput rounds (best reported)")
    ap.add_argument("--compiled", action="store_true",
                    help="both engines compiled (not eager); adds a 'compiled' entry to an existing --out "
                         "(dsa and plain vLLM only: no HF runs)")
    a = ap.parse_args()
    engine = dict(parity.ENGINE, enforce_eager=not a.compiled)

    ref = parity.reference("prompts", "--n-benign", str(a.concurrency))
    ids, hf_scores, hf_lam = ref["prompt_ids"], ref["guard_scores"], ref["lam"]
    head = ref["policy_head"]
    mixes = {"flagged": ids[:a.concurrency], "benign": ref["benign_prompt_ids"][:a.concurrency]}
    from dsa.base import resolve_base_path

    base_dir = resolve_base_path("smollm2-135m-instruct")

    # both engines alive at once, so that throughput reps interleave (the machine is shared)
    from vllm import LLM
    from vllm.inputs import TokensPrompt

    t0 = time.perf_counter()
    llm = LLM(model=base_dir, **engine)
    plain_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    sm = VllmSafetyModel(**{k: v for k, v in engine.items() if k not in ("dtype", "enable_prefix_caching")})
    dsa_start = time.perf_counter() - t0
    try:
        outs = llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], parity.sampling(a.parity_tokens),
                            use_tqdm=False)
        plain_rows = [parity._row(o) for o in outs]
        auto = sm.generate(ids, alignment="auto", max_new_tokens=a.parity_tokens, ignore_eos=True,
                           logprobs=parity.TOP_K)
        full = sm.generate(ids, alignment=1.0, max_new_tokens=a.parity_tokens, ignore_eos=True,
                           logprobs=parity.TOP_K)
        tp = {mix: _throughput(llm, sm, bench_ids, a.max_tokens, a.reps) for mix, bench_ids in mixes.items()}
    finally:
        parity.shutdown(llm)
        sm.close()

    # parity numbers
    guard_diff = max(abs(r.guard_scores[head] - s[head]) for r, s in zip(auto, hf_scores, strict=True))
    zero = [i for i, r in enumerate(auto) if r.lam == 0]
    lam0 = parity.max_abs_diff([_as_row(auto[i]) for i in zero], [plain_rows[i] for i in zero])
    bound = {mix: parity.compute_bound(base_dir, parity.REPO / "adapters" / "align" / "dsa_adapter",
                                tp[mix]["rows_aligned"], a.concurrency) for mix in tp}
    if a.compiled:
        result = json.loads(a.out.read_text())
        result["compiled"] = {
            "guard_score_max_abs_diff": guard_diff, "lambda0_logits_max_abs_diff": lam0,
            "lambda0_rows": len(zero), "dsa_vllm_tok_s": tp["flagged"]["dsa"],
            "vllm_plain_tok_s": tp["flagged"]["plain"],
            "concurrency": a.concurrency, "max_tokens": a.max_tokens, "reps": a.reps,
            "dsa_vllm_rows_aligned": tp["flagged"]["rows_aligned"],
            "runs": tp["flagged"]["runs"],
            "benign": tp["benign"], "compute_bound": bound,
            "engine_start_s": {"vllm_plain": round(plain_start, 1), "dsa_vllm": round(dsa_start, 1)},
            "command": "OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=nobind .venv-vllm/bin/python "
                       + " ".join(["scripts/bench_vllm.py", *sys.argv[1:]]),
        }
        a.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in result["compiled"].items() if k != "runs"}, indent=2))
        return
    hf_full = parity.hf_logits(ids, [_as_row(r) for r in full], [1.0] * len(ids))
    lam1 = parity.max_abs_diff([_as_row(r) for r in full], hf_full)
    hf_base = parity.max_abs_diff(plain_rows, [{"logits": h["base_logits"]} for h in
                                               parity.hf_logits(ids, plain_rows, [0.0] * len(ids))])
    hf_tp = {mix: parity.reference("throughput", "--concurrency", str(a.concurrency), "--max-new-tokens",
                                   str(a.max_tokens), "--reps", str(a.reps), "--mix", mix) for mix in tp}
    result = {
        "parity": {
            "guard_score_max_abs_diff": guard_diff,
            "lambda0_logits_max_abs_diff": lam0,
            "lambda1_logits_max_abs_diff": lam1,
            "n_prompts": len(ids),
            "lambda0_rows": len(zero),
            "lambda_matches_hf": sum((r.lam > 0) == (lv > 0) for r, lv in zip(auto, hf_lam, strict=True)),
            "plain_vllm_vs_hf_base_logits_max_abs_diff": hf_base,
            "tokens_per_row": a.parity_tokens, "top_k": parity.TOP_K, "policy_head": head,
        },
        "throughput": {
            **_tp_entry(tp["flagged"], hf_tp["flagged"]),
            "concurrency": a.concurrency, "max_tokens": a.max_tokens, "mode": "eager", "reps": a.reps,
            "prompts": "the parity prompts: StrongREJECT and XSTest safe, interleaved",
            "compute_bound": bound["flagged"],
            "engine_start_s": {"vllm_plain": round(plain_start, 1), "dsa_vllm": round(dsa_start, 1)},
        },
        "throughput_benign": {
            **_tp_entry(tp["benign"], hf_tp["benign"]),
            "concurrency": a.concurrency, "max_tokens": a.max_tokens, "mode": "eager", "reps": a.reps,
            "prompts": f"the first {a.concurrency} AlpacaEval instructions", "compute_bound": bound["benign"],
        },
        "setup": {"vllm": _version("vllm-cpu"), "machine": platform.machine(), "threads": 1,
                  "command": "OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=nobind .venv-vllm/bin/python "
                             + " ".join(["scripts/bench_vllm.py", *sys.argv[1:]])},
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["parity"], indent=2), json.dumps({k: v for k, v in result["throughput"].items()
                                                              if k != "runs"}, indent=2))


def _throughput(llm, sm, bench_ids: list[list[int]], max_tokens: int, reps: int) -> dict:
    """Interleaved plain-vLLM and dsa-in-vLLM runs on one prompt mix (both engines alive)."""
    from vllm.inputs import TokensPrompt

    prompts = [TokensPrompt(prompt_token_ids=x) for x in bench_ids]
    n_aligned = []

    def plain_generate(n: int) -> int:
        res = llm.generate(prompts, parity.sampling(n), use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in res)

    def dsa_generate(n: int) -> int:
        res = sm.generate(bench_ids, alignment="auto", max_new_tokens=n, ignore_eos=True)
        n_aligned.append(sum(r.lam > 0 for r in res))
        return sum(len(r.token_ids) for r in res)

    plain, dsa = parity.interleaved_throughput({"plain": plain_generate, "dsa": dsa_generate},
                                               max_tokens, reps).values()
    return {"dsa": dsa["tok_s"], "plain": plain["tok_s"], "rows_aligned": int(n_aligned[-1]),
            "runs": {"dsa_vllm": dsa["runs"], "vllm_plain": plain["runs"]}}


def _tp_entry(tp: dict, hf: dict) -> dict:
    return {"dsa_vllm_tok_s": tp["dsa"], "vllm_plain_tok_s": tp["plain"],
            "dsa_hf_tok_s": round(max(r["tok_s"] for r in hf["runs"]), 2),
            "dsa_vllm_rows_aligned": tp["rows_aligned"], "dsa_hf_rows_aligned": hf["runs"][-1]["n_aligned"],
            "runs": {**tp["runs"], "dsa_hf": hf["runs"]}}


def _as_row(r) -> dict:
    return {"token_ids": r.token_ids, "logits": r.logprobs}


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
