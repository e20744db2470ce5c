"""Parity and throughput runs of dsa-in-vLLM against plain vLLM and the HF runtime, shared by
tests/vllm and scripts/bench_vllm.py (run in .venv-vllm; the HF side runs in .venv through
`dsa.vllm.reference`, see there).

Logits are compared as the engines return them: vLLM's top-`TOP_K` raw logits per generated token
(`logprobs_mode="raw_logits"`), against the other side's logits at the same token ids.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
TOP_K = 20
ENGINE = dict(dtype="bfloat16", enforce_eager=True, enable_prefix_caching=False, max_model_len=1024,
              kv_cache_memory_bytes=1 << 30, logprobs_mode="raw_logits", max_logprobs=TOP_K,
              disable_log_stats=True)


def hf_python() -> str:
    """The main venv's Python (the HF runtime's transformers), overridable by $DSA_HF_PYTHON."""
    return os.environ.get("DSA_HF_PYTHON", str(REPO / ".venv" / "bin" / "python"))


def reference(job: str, *args: str, payload: dict | None = None, timeout: float = 1800) -> dict:
    """Run `python -m dsa.vllm.reference JOB ...` in the main venv; return its JSON output."""
    with tempfile.TemporaryDirectory(prefix="dsa-vllm-ref-") as tmp:
        out = Path(tmp) / "out.json"
        argv = [hf_python(), "-m", "dsa.vllm.reference", job]
        if payload is not None:
            inp = Path(tmp) / "in.json"
            inp.write_text(json.dumps(payload))
            argv.append(str(inp))
        argv += [str(out), *args]
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def sampling(max_tokens: int, alignment=None, key: str | None = None):
    from vllm import SamplingParams

    extra = {} if alignment is None else {"dsa_alignment": alignment}
    if key is not None:
        extra["dsa_request_key"] = key
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, logprobs=TOP_K,
                          extra_args=extra or None)


def plain_run(base_dir: str, prompt_ids: list[list[int]], max_tokens: int) -> list[dict]:
    """Greedy continuations with top-k raw logits from vLLM's own LlamaForCausalLM."""
    from vllm import LLM
    from vllm.inputs import TokensPrompt

    llm = LLM(model=base_dir, **ENGINE)
    try:
        outs = llm.generate([TokensPrompt(prompt_token_ids=x) for x in prompt_ids], sampling(max_tokens),
                            use_tqdm=False)
        return [_row(o) for o in outs]
    finally:
        shutdown(llm)


def _row(o) -> dict:
    c = o.outputs[0]
    return {"token_ids": list(c.token_ids),
            "logits": [{int(t): float(v.logprob) for t, v in step.items()} for step in c.logprobs]}


def shutdown(llm) -> None:
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


def max_abs_diff(a: list[dict], b: list[dict]) -> float:
    """Largest |a − b| over the token ids both sides report, over all steps of all rows."""
    worst = 0.0
    for ra, rb in zip(a, b, strict=True):
        for sa, sb in zip(ra["logits"], rb["logits"], strict=True):
            for t in sa.keys() & sb.keys():
                worst = max(worst, abs(sa[t] - sb[t]))
    return worst


def hf_logits(prompt_ids: list[list[int]], rows: list[dict], lam: list[float]) -> list[dict]:
    """The HF runtime's mixed logits at λ (and base logits), at the ids vLLM reported per step."""
    payload = {"rows": [{"prompt_ids": p, "token_ids": r["token_ids"], "lam": float(lv),
                         "top_ids": [sorted(s) for s in r["logits"]]}
                        for p, r, lv in zip(prompt_ids, rows, lam, strict=True)]}
    res = reference("logits", payload=payload)["rows"]
    out = []
    for spec, r in zip(payload["rows"], res, strict=True):
        mixed = [dict(zip(ids, vals, strict=True)) for ids, vals in zip(spec["top_ids"], r["mixed"], strict=True)]
        base = [dict(zip(ids, vals, strict=True)) for ids, vals in zip(spec["top_ids"], r["base"], strict=True)]
        out.append({"logits": mixed, "base_logits": base})
    return out


def interleaved_throughput(generators: dict, max_tokens: int, reps: int = 2) -> dict[str, dict]:
    """tok/s of each `generate(max_tokens) -> tokens` (each submits all its requests at once):
    one short warm-up each, then `reps` rounds calling each once in turn; best round reported."""
    for gen in generators.values():
        gen(4)
    runs: dict[str, list] = {name: [] for name in generators}
    for _ in range(reps):
        for name, gen in generators.items():
            t0 = time.perf_counter()
            n = gen(max_tokens)
            dt = time.perf_counter() - t0
            runs[name].append({"tokens": n, "seconds": round(dt, 3), "tok_s": round(n / dt, 2)})
    return {name: {"runs": r, "tok_s": max(x["tok_s"] for x in r)} for name, r in runs.items()}


def compute_bound(base_dir: str | Path, adapter_dir: Path, rows_aligned: int, rows: int) -> dict:
    """dsa/plain throughput if only the extra matrix work counted (weights' shapes; attention
    scores and the per-step overheads left out): plain = decoder layers + LM head per token; each
    aligned row also runs the adapter tail and the LM head once more (`DSALlamaForCausalLM` runs the
    tail on the tokens of aligned rows only)."""
    from safetensors import safe_open

    def numel(path: Path, keep) -> int:
        with safe_open(str(path), "pt") as f:
            return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys() if keep(k))

    files = sorted(Path(base_dir).glob("*.safetensors"))
    layers = sum(numel(p, lambda k: ".layers." in k and k.endswith(".weight") and "norm" not in k) for p in files)
    head = sum(numel(p, lambda k: k.endswith("lm_head.weight")) for p in files) or \
        sum(numel(p, lambda k: k.endswith("embed_tokens.weight")) for p in files)  # tied embeddings
    tail = numel(adapter_dir / "adapter.safetensors", lambda k: k.endswith(".weight") and "norm" not in k)
    plain = layers + head
    extra = (tail + head) * rows_aligned / rows
    return {"plain_macs_per_token": plain, "tail_macs_per_token": tail, "lm_head_macs_per_token": head,
            "rows_aligned": rows_aligned, "rows": rows, "ratio": round(plain / (plain + extra), 4)}

