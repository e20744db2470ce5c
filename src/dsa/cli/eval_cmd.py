"""`dsa eval utility|lm-eval`: judge-free utility benchmarks of a guarded, aligned model.

    dsa eval utility --task ifeval --alignment 0 --n 40 --out results/ifeval-base.json
    dsa eval utility --task mmlu_cloze --alignment auto --n 1000      # shipped guard + adapter
    dsa eval lm-eval --model dsa --model_args alignment=auto --tasks dsa_ifeval --limit 40
    dsa eval lm-eval --model dsa --model_args alignment=auto --tasks dsa_strongreject --limit 8
"""

from __future__ import annotations

import argparse
import json

from dsa.adapter_io import SHIPPED_ADAPTER, SHIPPED_GUARD

DEFAULT_GUARD, DEFAULT_ADAPTER = SHIPPED_GUARD, SHIPPED_ADAPTER
TASKS = ("ifeval", "mmlu_cloze")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="utility benchmarks (IFEval, MMLU cloze; lm-eval)",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="eval_command", required=True, metavar="ACTION")
    u = sub.add_parser("utility", help="IFEval or MMLU cloze of one configuration -> metrics (JSON)")
    u.add_argument("--task", required=True, choices=TASKS)
    u.add_argument("--alignment", default="auto", help="'auto' (λ = policy(guard score) per prompt) or a λ in [0, 1]")
    u.add_argument("--n", type=int, default=None,
                   help="first N documents in sha256 order (default: all 541 IFEval prompts; 1000 MMLU questions)")
    u.add_argument("--base", default="smollm2-135m-instruct")
    u.add_argument("--guards", nargs="*", default=[DEFAULT_GUARD], help="guard adapter dirs (none: --guards)")
    u.add_argument("--adapter", default=DEFAULT_ADAPTER, help="DSA alignment adapter dir ('' = none)")
    u.add_argument("--policy", default="step", choices=["step", "linear", "sigmoid"])
    u.add_argument("--max-new-tokens", type=int, default=256, help="IFEval decode budget per answer")
    u.add_argument("--batch-size", type=int, default=8)
    u.add_argument("--config", default=None, help="name of this configuration in the cache (runs/utility/NAME-…)")
    u.add_argument("--cache-dir", default="runs/utility", help="answer/score cache root ('' = no cache)")
    u.add_argument("--answers", action="store_true", help="IFEval: include every answer and verdict in --out")
    u.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    u.add_argument("--out", default=None, help="write the metrics as JSON here")
    u.set_defaults(func=cmd_utility)
    # every argument after `lm-eval` (options and --help included) belongs to lm-eval: a prefix
    # character no lm-eval option uses keeps argparse from reading them as ours
    e = sub.add_parser("lm-eval", help="lm-eval's command line with the `dsa` model and dsa_* tasks (utility, refusal)",
                       prefix_chars="+", add_help=False)
    e.add_argument("args", nargs="*", help="lm-eval arguments")
    e.set_defaults(func=cmd_lm_eval)


def _alignment(text: str) -> str | float:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--alignment must be 'auto' or a number in [0, 1], got {text!r}") from None


def _require_lm_eval() -> None:
    from dsa.extras import needs_extra

    with needs_extra("eval", "utility benchmarking (dsa eval)"):
        import lm_eval  # noqa: F401


def cmd_utility(args) -> int:
    from pathlib import Path

    import torch

    from dsa.adapter_io import atomic_write_text
    from dsa.eval import utility
    from dsa.runtime import SafetyModel

    _require_lm_eval()
    alignment = _alignment(args.alignment)
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be a positive number, got {args.n}")
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise ValueError("--batch-size and --max-new-tokens must be positive")
    for d in [*args.guards, args.adapter]:
        if d and not Path(d).is_dir():
            raise FileNotFoundError(f"{d}: no such adapter directory (pass --guards with no value, or "
                                    "--adapter '', to run without)")
    if args.threads:
        torch.set_num_threads(args.threads)
    sm = SafetyModel.load(args.base, guards=[g for g in args.guards if g], adapter=args.adapter or None,
                          policy=args.policy)
    config = args.config or f"{args.task}_{args.alignment}"
    common = dict(alignment=alignment, batch_size=args.batch_size, config=config, cache_dir=args.cache_dir or None)
    if args.task == "ifeval":
        result = utility.ifeval(sm, n=args.n, max_new_tokens=args.max_new_tokens, answers=args.answers, **common)
    else:
        result = utility.mmlu_cloze(sm, n=args.n or 1000, **common)
    result = {"task": args.task, "base": args.base, "guards": args.guards, "adapter": args.adapter or None,
              "policy": args.policy, **result}
    for k, v in result.items():
        if k != "answers":
            print(f"{k:22s} {v:.4f}" if isinstance(v, float) else f"{k:22s} {v}")
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def cmd_lm_eval(args) -> int:
    _require_lm_eval()
    from dsa.eval.lm_eval_model import run_cli

    run_cli(args.args)
    return 0
