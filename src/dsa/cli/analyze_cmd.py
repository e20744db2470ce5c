"""`dsa analyze subspace`: how orthogonal is an update ΔW to the base weights W0 (arXiv 2510.09004)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from dsa.base import DEFAULT_BASE


def _named(item: str) -> tuple[str, str]:
    """'name=path' -> (name, path); a bare path is named after its directory."""
    name, sep, path = item.partition("=")
    return (name, path) if sep and name and path else (Path(item).name, item)


def _ints(text: str) -> list[int]:
    try:
        return sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("analyze", help="analyses of adapters and weight updates")
    inner = group.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    p = inner.add_parser("subspace", help="overlap of ΔW with W0's singular subspaces, plots and report",
                         description=__doc__)
    p.add_argument("--base", default=DEFAULT_BASE, help="base model name, hub id or local dir")
    p.add_argument("--adapter", required=True, metavar="[NAME=]PATH",
                   help="the update under study (PEFT/dsa LoRA dir or full fine-tuned model dir)")
    p.add_argument("--compare", action="append", default=[], metavar="[NAME=]PATH",
                   help="more updates to compare (repeatable)")
    p.add_argument("--ks", type=_ints, default=[1, 2, 4, 8, 16, 32, 64, 128, 256],
                   help="subspace sizes k, comma-separated")
    p.add_argument("--k-ref", type=int, default=64, help="k used by the heatmap and the headline claims")
    p.add_argument("--rank", type=int, default=None,
                   help="r of the top-r view of full fine-tunes (default: the largest LoRA rank)")
    p.add_argument("--n-prompts", type=int, default=64, help="benign and harmful prompts for interference")
    p.add_argument("--no-interference", action="store_true", help="skip the forward passes on prompts")
    p.add_argument("--role", action="append", default=[], metavar="ROLE=NAME",
                   help="safety_lora / full_ft / task_lora for the claims (default: inferred)")
    p.add_argument("--out", default="results/subspace.json")
    p.add_argument("--doc", default="docs/results-subspace.md", help="markdown report ('' to skip)")
    p.add_argument("--img-dir", default="docs/img")
    p.add_argument("--doc-command", default=None,
                   help="the command named at the top of the report (default: this command line)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsa.analysis.pipeline import run_subspace_analysis

    first, path = _named(args.adapter)
    adapters = {first: path}
    for item in args.compare:
        name, p = _named(item)
        if name in adapters:
            raise ValueError(f"two updates named {name!r}: use NAME=PATH")
        adapters[name] = p
    roles = dict(_named(r) for r in args.role) if args.role else None
    if args.k_ref not in args.ks:
        raise ValueError(f"--k-ref {args.k_ref} must be one of --ks {args.ks}")
    argv = sys.argv[1:]
    if "--doc-command" in argv:  # not part of the analysis: keep it out of the quoted command
        i = argv.index("--doc-command")
        argv = argv[:i] + argv[i + 2:]
    command = "dsa " + " ".join(shlex.quote(a) for a in argv) if argv else "dsa analyze subspace"
    if args.doc_command:
        command = f"`{args.doc_command}` (which runs `{command}`)"
    data = run_subspace_analysis(
        args.base, adapters, first=first, ks=args.ks, k_ref=args.k_ref, rank=args.rank,
        n_prompts=args.n_prompts, interference=not args.no_interference, out_json=args.out,
        doc=args.doc or None, img_dir=args.img_dir, roles=roles, command=command)
    for name, res in ((n, r) for n, r in data.items() if not n.startswith("_")):
        e = res["overall"]["proj_energy_k"].get(str(args.k_ref))
        b = res["overall"]["random_baseline_k"].get(str(args.k_ref))
        inter = ", ".join(f"{s} {100 * v:.3g}%" for s, v in res["interference"].items())
        print(f"{name:24s} {res['kind']:5s} E(k={args.k_ref}) {e:.4f} vs random {b:.4f}  {inter}")
    print(f"wrote {args.out}" + (f" and {args.doc}" if args.doc else ""))
    return 0
