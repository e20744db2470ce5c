"""The HF runtime's side of the vLLM parity checks and benchmark, run in dsa's main venv
(transformers 5.24; vLLM's venv pins < 5.20), so the reference is the runtime as shipped.

    .venv/bin/python -m dsa.vllm.reference prompts OUT.json            # parity prompts, ids, guard scores, λ
    .venv/bin/python -m dsa.vllm.reference logits IN.json OUT.json     # HF logits at given tokens
    .venv/bin/python -m dsa.vllm.reference throughput OUT.json         # SafetyModel.generate tok/s
    .venv/bin/python -m dsa.vllm.reference guards IN.json OUT.json     # ids and guard scores of given guards

Nothing here imports vLLM.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from dsa.adapter_io import SHIPPED_ADAPTER, SHIPPED_GUARD

GUARDS = [SHIPPED_GUARD]
ADAPTER = SHIPPED_ADAPTER


def parity_prompts(n_harmful: int = 10, n_safe: int = 10) -> list[str]:
    """The first StrongREJECT prompts (harmful) and XSTest safe prompts from the shared data folder."""
    from dsa.data.sources import data_dir

    root = data_dir()
    with open(root / "strongreject" / "strongreject_dataset.csv", newline="") as f:
        harmful = [r["forbidden_prompt"] for r in csv.DictReader(f)][:n_harmful]
    with open(root / "xstest" / "xstest_prompts.csv", newline="") as f:
        safe = [r["prompt"] for r in csv.DictReader(f) if r["label"] == "safe"][:n_safe]
    return [p for pair in zip(harmful, safe, strict=True) for p in pair]  # interleaved: mixed batches


def benign_prompts(n: int = 16) -> list[str]:
    """The first `n` AlpacaEval instructions in file order (ordinary traffic: few are flagged)."""
    from dsa.data import load_source

    return [r.main_text for r in load_source("alpaca_eval")][:n]


def mix_prompts(mix: str, n: int) -> list[str]:
    """`flagged`: StrongREJECT and XSTest-safe prompts interleaved; `benign`: AlpacaEval."""
    if mix == "benign":
        return benign_prompts(n)
    if mix == "flagged":
        return parity_prompts(n // 2, n - n // 2)
    raise ValueError(f"unknown prompt mix {mix!r}: expected flagged or benign")


def _model():
    from dsa.runtime import SafetyModel

    return SafetyModel.load(guards=GUARDS, adapter=ADAPTER)


def prompts_job(out: Path, n_harmful: int, n_safe: int, n_benign: int = 16) -> None:
    from dsa.features.text import encode_inputs
    from dsa.runtime import policy_threshold

    sm = _model()
    prompts = parity_prompts(n_harmful, n_safe)

    def encode(texts: list[str]) -> list[list[int]]:  # as `SafetyModel.encode`: normalised, not truncated
        return encode_inputs(sm.base, texts, None, add_generation_prompt=True)

    ids, benign_ids = encode(prompts), encode(benign_prompts(n_benign))
    cls = sm.classify(prompts)
    scores = {h: torch.tensor([c["scores"][h] for c in cls]) for h in cls[0]["scores"]}
    lam = sm.policy_lambda(scores).tolist()
    out.write_text(json.dumps({"prompts": prompts, "prompt_ids": ids, "benign_prompt_ids": benign_ids,
                               "guard_scores": [c["scores"] for c in cls],
                               "lam": lam, "policy_head": sm.policy_head,
                               "threshold": policy_threshold(sm.guards, sm.policy_head)}))


@torch.inference_mode()
def logits_job(inp: Path, out: Path) -> None:
    """IN: {"rows": [{"prompt_ids", "token_ids", "lam", "top_ids": [[id, ...] per generated token]}]}.
    OUT: per row the HF runtime's mixed logits at λ and its base logits at those ids."""
    sm = _model()
    rows = json.loads(inp.read_text())["rows"]
    res = []
    for r in rows:
        seq = r["prompt_ids"] + r["token_ids"][:-1]  # the last token's successor is never scored
        ids = torch.tensor([seq])
        mixed, base = sm.forward_logits(ids, torch.ones_like(ids), torch.tensor([float(r["lam"])]))
        n0 = len(r["prompt_ids"]) - 1  # logits at position n0 + j predict generated token j
        res.append({"mixed": [[float(mixed[0, n0 + j, t]) for t in top] for j, top in enumerate(r["top_ids"])],
                    "base": [[float(base[0, n0 + j, t]) for t in top] for j, top in enumerate(r["top_ids"])]})
    out.write_text(json.dumps({"rows": res}))


def guards_job(inp: Path, out: Path) -> None:
    """IN: {"guards": [adapter dirs], "inputs": [str or chat messages], "dtype": "fp32" | "bf16"}.
    OUT: {"ids": the token ids the HF runtime reads (`encode_inputs`, with the generation prompt,
    not truncated), "scores": [{head: `GuardBank.score` through `dsa.guards.classify`}]}."""
    from dsa.base import load_base
    from dsa.features.text import encode_inputs
    from dsa.guards import GuardBank, classify

    spec = json.loads(inp.read_text())
    base = load_base("smollm2-135m-instruct", dtype=spec.get("dtype"))
    bank = GuardBank.load(spec["guards"], base)
    inputs = spec["inputs"]
    ids = encode_inputs(base, inputs, None, add_generation_prompt=True)
    scores = [c["scores"] for c in classify(base, bank, inputs)]
    out.write_text(json.dumps({"ids": ids, "scores": scores, "fingerprint": base.fingerprint}))


@torch.inference_mode()
def throughput_job(out: Path, concurrency: int, max_new_tokens: int, reps: int, mix: str = "flagged") -> None:
    """SafetyModel.generate on one batch of `concurrency` prompts of `mix` (alignment="auto")."""
    sm = _model()
    prompts = mix_prompts(mix, concurrency)
    sm.generate(prompts[:2], max_new_tokens=4)  # warm-up
    runs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        res = sm.generate(prompts, alignment="auto", max_new_tokens=max_new_tokens)
        dt = time.perf_counter() - t0
        n = sum(r.n_tokens for r in res)
        runs.append({"tokens": n, "seconds": dt, "tok_s": n / dt, "n_aligned": sum(r.lam > 0 for r in res)})
    out.write_text(json.dumps({"runs": runs, "threads": torch.get_num_threads()}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m dsa.vllm.reference", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="job", required=True)
    p = sub.add_parser("prompts")
    p.add_argument("out", type=Path)
    p.add_argument("--n-harmful", type=int, default=10)
    p.add_argument("--n-safe", type=int, default=10)
    p.add_argument("--n-benign", type=int, default=16, help="AlpacaEval prompts for the benign throughput mix")
    p = sub.add_parser("logits")
    p.add_argument("inp", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("throughput")
    p.add_argument("out", type=Path)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--mix", choices=("flagged", "benign"), default="flagged")
    p = sub.add_parser("guards")
    p.add_argument("inp", type=Path)
    p.add_argument("out", type=Path)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.job == "prompts":
        prompts_job(a.out, a.n_harmful, a.n_safe, a.n_benign)
    elif a.job == "logits":
        logits_job(a.inp, a.out)
    elif a.job == "guards":
        guards_job(a.inp, a.out)
    else:
        throughput_job(a.out, a.concurrency, a.max_new_tokens, a.reps, a.mix)


if __name__ == "__main__":
    main()
