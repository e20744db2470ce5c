"""dsa inside vLLM vs plain vLLM vs the HF runtime: parity and throughput → results/vllm.json.

    OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=nobind .venv-vllm/bin/python scripts/bench_vllm.py

Runs in .venv-vllm (scripts/setup-vllm.sh); the HF runtime's side runs in .venv through
`python -m dsa.vllm.reference`. Engines are eager (hooks-free, but the compiled mode was not
measured here), bf16, one thread. Parity: 20 prompts (10 StrongREJECT, 10 XSTest safe), greedy,
16 tokens, top-20 raw logits per token. Throughput: 16 requests submitted at once, 64 tokens each
(ignore_eos), best of --reps runs after a short warm-up, plain and dsa runs interleaved (both engines
alive) so that load from other jobs on the machine hits both alike; the HF runtime generates the
same 16 prompts as one batch (it stops rows at EOS, so its token count is what it generated).
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

    ref = parity.reference("prompts")
    ids, hf_scores, hf_lam = ref["prompt_ids"], ref["guard_scores"], ref["lam"]
    head = ref["policy_head"]
    bench_ids = ids[:a.concurrency]
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
        prompts = [TokensPrompt(prompt_token_ids=x) for x in bench_ids]
        n_aligned = []

        def plain_generate(max_tokens: int) -> int:
            res = llm.generate(prompts, parity.sampling(max_tokens), use_tqdm=False)
            return sum(len(o.outputs[0].token_ids) for o in res)

        def dsa_generate(max_tokens: int) -> int:
            res = sm.generate(bench_ids, alignment="auto", max_new_tokens=max_tokens, ignore_eos=True)
            n_aligned.append(sum(r.lam > 0 for r in res))
            return sum(len(r.token_ids) for r in res)

        plain_tp, dsa_tp = parity.interleaved_throughput({"plain": plain_generate, "dsa": dsa_generate},
                                                         a.max_tokens, a.reps).values()
    finally:
        parity.shutdown(llm)
        sm.close()

    # parity numbers
    guard_diff = max(abs(r.guard_scores[head] - s[head]) for r, s in zip(auto, hf_scores, strict=True))
    zero = [i for i, r in enumerate(auto) if r.lam == 0]
    lam0 = parity.max_abs_diff([_as_row(auto[i]) for i in zero], [plain_rows[i] for i in zero])
    if a.compiled:
        result = json.loads(a.out.read_text())
        result["compiled"] = {
            "guard_score_max_abs_diff": guard_diff, "lambda0_logits_max_abs_diff": lam0,
            "lambda0_rows": len(zero), "dsa_vllm_tok_s": dsa_tp["tok_s"], "vllm_plain_tok_s": plain_tp["tok_s"],
            "concurrency": a.concurrency, "max_tokens": a.max_tokens, "reps": a.reps,
            "dsa_vllm_rows_aligned": n_aligned[-1] if n_aligned else None,
            "runs": {"dsa_vllm": dsa_tp["runs"], "vllm_plain": plain_tp["runs"]},
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
    hf_tp = parity.reference("throughput", "--concurrency", str(a.concurrency),
                             "--max-new-tokens", str(a.max_tokens), "--reps", str(a.reps))
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
            "dsa_vllm_tok_s": dsa_tp["tok_s"], "vllm_plain_tok_s": plain_tp["tok_s"],
            "dsa_hf_tok_s": round(max(r["tok_s"] for r in hf_tp["runs"]), 2),
            "concurrency": a.concurrency, "max_tokens": a.max_tokens, "mode": "eager", "reps": a.reps,
            "dsa_vllm_rows_aligned": n_aligned[-1] if n_aligned else None,
            "runs": {"dsa_vllm": dsa_tp["runs"], "vllm_plain": plain_tp["runs"], "dsa_hf": hf_tp["runs"]},
            "engine_start_s": {"vllm_plain": round(plain_start, 1), "dsa_vllm": round(dsa_start, 1)},
        },
        "setup": {"vllm": _version("vllm-cpu"), "machine": platform.machine(), "threads": 1,
                  "command": "OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=nobind .venv-vllm/bin/python "
                             + " ".join(["scripts/bench_vllm.py", *sys.argv[1:]])},
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["parity"], indent=2), json.dumps({k: v for k, v in result["throughput"].items()
                                                              if k != "runs"}, indent=2))


def _as_row(r) -> dict:
    return {"token_ids": r.token_ids, "logits": r.logprobs}


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
