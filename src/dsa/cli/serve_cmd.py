"""`dsa serve`: the OpenAI-compatible HTTP server (see `dsa.server`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dsa.cli.common import add_base_args

DEFAULT_GUARD = "adapters/guards/prompt_safety"
DEFAULT_ADAPTER = "adapters/align/dsa_adapter"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve /v1/chat/completions and /v1/moderations over HTTP")
    add_base_args(p)
    p.add_argument("--guard", action="append", help=f"guard adapter dir (repeatable; default {DEFAULT_GUARD} if present)")
    p.add_argument("--adapter", default=None, help=f"alignment adapter dir (default {DEFAULT_ADAPTER} if present)")
    p.add_argument("--response-guard", action="append", default=[],
                   help="guard adapter read on every decoded token; a flag stops the answer (repeatable)")
    p.add_argument("--policy", default="step", help="guard score -> λ: step | linear | sigmoid")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsa.base import load_base
    from dsa.runtime import SafetyModel
    from dsa.server import serve

    guards = args.guard or ([DEFAULT_GUARD] if Path(DEFAULT_GUARD).exists() else [])
    adapter = args.adapter or (DEFAULT_ADAPTER if Path(DEFAULT_ADAPTER).exists() else None)
    base = load_base(args.base, dtype=args.dtype, device=args.device)
    sm = SafetyModel.load(base, guards=guards, adapter=adapter, policy=args.policy,
                          response_guards=args.response_guard)
    print(f"serving {base.name} with guards {guards or 'none'} and adapter {adapter or 'none'} "
          f"on http://{args.host}:{args.port}")
    serve(sm, args.host, args.port)
    return 0
