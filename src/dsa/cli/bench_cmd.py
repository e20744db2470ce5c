"""`dsa bench`: guard, streaming and alignment overhead as interleaved ratios -> results/bench.json + doc.

    dsa bench                       # ~15 min on a 2-core CPU (OMP_NUM_THREADS=1)
    dsa bench --quick               # < 60 s smoke run
    dsa bench --device cuda         # bf16, batch 32
    dsa bench --doc-only            # docs/results-bench.md + docs/img/bench-*.png from results/bench.json
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="overhead of guards, streaming and alignment (ratios, interleaved)",
                              description=__doc__.splitlines()[0])
    p.add_argument("--base", default="smollm2-135m-instruct", help="base model (embedded default)")
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda (bf16, batch 32)")
    p.add_argument("--dtype", default="auto", help="bf16 | fp32 | auto")
    p.add_argument("--quick", action="store_true", help="one small cell per section (< 60 s), no server/memory")
    p.add_argument("--big-cells", action="store_true", help="also batch 16 at 256 and 1024 tokens (slow on CPU)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per prefill cell")
    p.add_argument("--request-reps", type=int, default=None, help="repetitions of the benign/flagged request arms")
    p.add_argument("--stream-decode-all", action="store_true",
                   help="streaming guard: decode every token up to 1024 (default: prefill each transcript "
                        "up to its last 32 tokens and decode those)")
    p.add_argument("--sections", default=None,
                   help="comma-separated subset of guard,streaming,requests,decode,memory,server")
    p.add_argument("--update", action="store_true",
                   help="re-measure --sections only, keeping the other sections of --out")
    p.add_argument("--out", default="results/bench.json")
    p.add_argument("--doc", default="docs/results-bench.md")
    p.add_argument("--doc-only", action="store_true", help="rewrite the doc and plots from --out")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from dsa.bench.doc import write_bench_doc
    from dsa.bench.run import BenchConfig, run_bench

    if not args.doc_only:
        kw = {"base": args.base, "device": args.device, "dtype": args.dtype, "out": args.out, "doc": args.doc}
        if args.reps is not None:
            kw["reps"] = args.reps
        if args.sections:
            kw["sections"] = tuple(s.strip() for s in args.sections.split(",") if s.strip())
        if args.big_cells:
            kw["big_cells"] = True
        if args.update:
            kw["update"] = True
        if args.request_reps is not None:
            kw["request_reps"] = args.request_reps
        if args.stream_decode_all:
            kw["stream_prefill"] = False
        cfg = (BenchConfig.quick(**kw) if args.quick else BenchConfig(**kw)).for_device()
        run_bench(cfg, command=" ".join(["dsa bench", *_argv(args)]))
    doc = write_bench_doc(Path(args.out), Path(args.doc))
    print(f"wrote {args.out} and {doc}")
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    out = []
    for flag in ("quick", "big_cells", "stream_decode_all", "update"):
        if getattr(args, flag):
            out.append("--" + flag.replace("_", "-"))
    for flag in ("device", "reps", "request_reps", "sections"):
        v = getattr(args, flag)
        if v is not None and not (flag == "device" and v == "cpu"):
            out.append(f"--{flag.replace('_', '-')} {v}")
    return out
