"""`dsa base info`: load a base model, show its fingerprint and taps, chat on a few prompts."""

from __future__ import annotations

import argparse

import torch

from dsa.base import load_base, resolve_base_path
from dsa.cli.common import add_base_args, print_table
from dsa.taps import all_tap_names, run_with_taps

DEFAULT_PROMPTS = ["What is the capital of France?", "Give me one tip for writing clear code."]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("base", help="inspect a base model").add_subparsers(dest="base_cmd", required=True)
    info = p.add_parser("info", help="load a base (timing cold and warm), chat, and show tap shapes")
    add_base_args(info)
    info.add_argument("--prompt", action="append", help="user prompt to answer (repeatable)")
    info.add_argument("--max-new-tokens", type=int, default=40)
    info.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    import time

    t0 = time.perf_counter()
    resolve_base_path(args.base)  # first call dequantises and caches the embedded GGUF
    prepare = time.perf_counter() - t0
    base = load_base(args.base, dtype=args.dtype, device=args.device)
    print(f"base        {base.name}  ({base.info['path']})")
    print(f"fingerprint {base.fingerprint}")
    print(f"layers      {base.n_layers} x d_model {base.d_model}, dtype {base.dtype}")
    print(f"load        {prepare + base.load_seconds:.1f} s (this run), "
          f"{load_base(args.base, dtype=args.dtype).load_seconds:.1f} s (cached reload)")
    print()
    for prompt in args.prompt or DEFAULT_PROMPTS:
        enc = base.tokenizer(base.chat_text(prompt), return_tensors="pt").to(base.device)
        with torch.inference_mode():
            out = base.model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False)
        answer = base.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        print(f"user> {prompt}\nassistant> {answer.strip()}\n")

    taps = ["embed", "layers.0.attn_out", "layers.0.mlp_out", f"layers.{base.n_layers // 2}.resid_post",
            f"layers.{base.n_layers - 1}.resid_post", "final_norm"]
    enc = base.tokenizer(base.chat_text(DEFAULT_PROMPTS[0]), return_tensors="pt").to(base.device)
    with torch.inference_mode():
        _, cache = run_with_taps(base.model, dict(enc), taps, spec=base.spec, need_output=False)
    print(f"taps ({len(all_tap_names(base.n_layers))} in all; a few on the first prompt):")
    print_table([{"tap": t, "shape": list(cache[t].shape), "dtype": str(cache[t].dtype).removeprefix("torch."),
                  "rms": f"{cache[t].float().pow(2).mean().sqrt():.3f}"} for t in taps])
    return 0
