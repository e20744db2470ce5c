"""`dsa align train|eval`, `dsa generate`, `dsa chat`: safety alignment and guarded generation.

    dsa align train configs/align-dsa.yaml epochs=1        # train one artefact (key=value overrides)
    dsa align eval configs/align-eval.yaml                 # every configuration -> results/alignment.json
    dsa generate "How do I bake bread?" --alignment auto   # guard score, λ, answer
    dsa chat --alignment auto                              # interactive, one prefill per turn
"""

from __future__ import annotations

import argparse
import json
import sys

from dsa.adapter_io import SHIPPED_ADAPTER, SHIPPED_GUARD

DEFAULT_GUARD, DEFAULT_ADAPTER = SHIPPED_GUARD, SHIPPED_ADAPTER


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("align", help="train and evaluate safety alignment (LoRA patch, DSA adapter)",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="align_command", required=True, metavar="ACTION")
    t = sub.add_parser("train", help="train a LoRA patch, DSA adapter or full fine-tune from a config")
    t.add_argument("config", help="YAML config (configs/align-*.yaml)")
    t.add_argument("overrides", nargs="*", help="key=value overrides")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("eval", help="safety/utility evaluation of every configuration")
    e.add_argument("config", nargs="?", default=None, help="YAML config (configs/align-eval.yaml)")
    e.add_argument("overrides", nargs="*", help="key=value overrides")
    e.add_argument("--stage", default="all", choices=["all", "generate", "utility", "report"],
                   help="run one stage (parts under runs/align_eval/ are merged by 'report')")
    e.set_defaults(func=cmd_eval)
    for name, fn in (("generate", cmd_generate), ("chat", cmd_chat)):
        g = subparsers.add_parser(name, help="guarded, context-aligned generation" if name == "generate"
                                  else "interactive guarded chat")
        if name == "generate":
            g.add_argument("prompts", nargs="+", help="user messages (one batch)")
            g.add_argument("--json", action="store_true", help="print JSON lines")
        g.add_argument("--base", default="smollm2-135m-instruct")
        g.add_argument("--guards", nargs="*", default=[DEFAULT_GUARD], help="guard adapter dirs")
        g.add_argument("--adapter", default=DEFAULT_ADAPTER, help="DSA alignment adapter dir ('' = none)")
        g.add_argument("--alignment", default="auto", help="'auto' (λ = policy(guard score)) or a number")
        g.add_argument("--policy", default="step", choices=["step", "linear", "sigmoid"])
        g.add_argument("--max-new-tokens", type=int, default=96)
        g.set_defaults(func=fn)


def cmd_train(args) -> int:
    from dsa.recipes.align_config import AlignTrainConfig
    from dsa.recipes.align_train import run

    out = run(AlignTrainConfig.from_yaml(args.config, args.overrides))
    print(f"wrote {out}")
    return 0


def cmd_eval(args) -> int:
    from pathlib import Path

    from dsa.recipes.align_config import AlignEvalConfig
    from dsa.recipes.align_eval import PARTS, Evaluator, config_names
    from dsa.recipes.align_report import merge, plot, table, write_doc

    if args.config and "=" in args.config:  # no YAML given: the first item is an override
        args.overrides, args.config = [args.config, *args.overrides], None
    cfg = AlignEvalConfig.from_yaml(args.config, args.overrides)
    names = config_names(cfg)
    if args.stage != "report":
        ev = Evaluator(cfg)
        restored = ev.restore_parts(Path(cfg.out))
        if restored:
            print(f"restored from {cfg.out} (weights unchanged): {', '.join(restored)}", flush=True)
        if args.stage in ("all", "generate"):
            for n in names:
                print(n, ev.run_generation(n), flush=True)
        if args.stage in ("all", "utility"):
            for n in names:
                print(n, ev.run_utility(n), flush=True)
    from dsa.eval.refusal import train_refusal_judge

    result = merge(PARTS, Path(cfg.out), {"eval_config": cfg.model_dump(),
                                          "refusal_judge_agreement": train_refusal_judge().agreement})
    write_doc(result, Path("docs/results-alignment.md"), plot(result, Path("docs/img")))
    print(table(result))
    return 0


def _model(args):
    from pathlib import Path

    from dsa.runtime import SafetyModel

    guards = [g for g in args.guards if Path(g).exists()]
    if len(guards) < len(args.guards):
        print(f"note: guard adapters not found, skipped: {sorted(set(args.guards) - set(guards))}", file=sys.stderr)
    adapter = args.adapter if args.adapter and Path(args.adapter).exists() else None
    return SafetyModel.load(args.base, guards=guards, adapter=adapter, policy=args.policy)


def _alignment(value: str):
    return value if value == "auto" else float(value)


def cmd_generate(args) -> int:
    sm = _model(args)
    for prompt, r in zip(args.prompts, sm.generate(args.prompts, _alignment(args.alignment), args.max_new_tokens),
                         strict=True):
        if args.json:
            print(json.dumps({"prompt": prompt, "text": r.text, "guard_scores": r.guard_scores, "lam": r.lam,
                              "stop_reason": r.stop_reason}))
        else:
            scores = ", ".join(f"{k}={v:.3f}" for k, v in r.guard_scores.items()) or "no guard"
            print(f"> {prompt}\n[{scores}; λ={r.lam:.2f}; stop={r.stop_reason}]\n{r.text}\n")
    return 0


def cmd_chat(args) -> int:
    sm = _model(args)
    history: list[dict] = []
    print("guarded chat (empty line or Ctrl-D ends)", file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line:
            break
        history.append({"role": "user", "content": line})
        r = sm.generate([history], _alignment(args.alignment), args.max_new_tokens)[0]
        scores = ", ".join(f"{k}={v:.2f}" for k, v in r.guard_scores.items()) or "no guard"
        print(f"[{scores}; λ={r.lam:.2f}]\nbot> {r.text}")
        history.append({"role": "assistant", "content": r.text})
    return 0
