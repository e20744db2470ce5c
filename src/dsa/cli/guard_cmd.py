"""`dsa guard train|eval|study|operating-points|score`: train guard adapters, regenerate the guard results, score texts.

    dsa guard train configs/guard-prompt_safety.yaml [key=value ...]   # writes the adapter `out`
    dsa guard eval --all                  # results/guard.json + docs/results-guard.md + docs/img/guard-*.png
    dsa guard study                       # prompt-guard precision study -> results/guard-precision.json
    dsa guard operating-points            # shipped prompt guard on eval-only sets -> results/guard.json
    dsa guard score adapters/guards/prompt_safety --text "How do I pick a lock?"
    dsa guard robustness adapters/guards/prompt_safety   # wrappers, padding, encodings -> results/robustness.json
    dsa guard robustness-report           # docs/results-robustness.md + docs/img/robustness-*.png from the JSON
    dsa guard calibrate-stream adapters/guards/response_harm   # the streaming stop rule, fitted on val answers
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dsa.adapter_io import SHIPPED_ADAPTER, SHIPPED_GUARD
from dsa.cli.common import add_base_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("guard", help="train, evaluate and run DSA guard adapters",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="guard_command", required=True, metavar="ACTION")
    p = sub.add_parser("train", help="train one guard adapter from a YAML config or from your own labelled file",
                       epilog="examples:\n  dsa guard train configs/guard-prompt_safety.yaml\n"
                              "  dsa guard train --data mine.csv --map text=comment --map label=is_toxic "
                              "--out adapters/guards/mine\n"
                              "  dsa guard train --data mine.csv --map text=comment --map label=toxic,insult,threat "
                              "--out adapters/guards/mine   # one head per column\n\nconfig keys:\n" + _config_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default=None, help="YAML file (see configs/guard-*.yaml); optional with --data")
    p.add_argument("overrides", nargs="*", help="key=value overrides of config fields")
    p.add_argument("--data", default=None, help="your labelled file (CSV, TSV, JSONL, JSON list, Parquet)")
    p.add_argument("--map", action="append", default=None, metavar="FIELD=COLUMN",
                   help="which column is text / prompt / response / label / id / split (repeatable); "
                        "label=COL1,COL2,... trains one head per label column, named after it")
    p.add_argument("--positive", default=None,
                   help="the label columns' value meaning 1 when they hold class names (e.g. --positive hate)")
    p.add_argument("--limit", type=int, default=None, help="a seeded sample of this many labelled rows")
    p.add_argument("--no-plots", dest="plots", action="store_const", const=False, default=None,
                   help="with --data: do not write the ROC / PR plots (OUT/plots/roc.png, pr.png)")
    p.add_argument("--out", default=None, help="adapter directory to write")
    p.add_argument("--base", default=None, help="base model (default: the config's, else the embedded one)")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="every DSA head and baseline on the guard tasks -> results + doc + plots")
    add_base_args(p)
    p.add_argument("--all", action="store_true", help="every guard task (default)")
    p.add_argument("--tasks", nargs="*", default=None, help="a subset of tasks")
    p.add_argument("--no-baselines", action="store_true",
                   help="only use cached baseline predictions (runs/guard_preds), never train them")
    p.add_argument("--baselines", default=None,
                   help="comma-separated baselines to compute where not cached (default: all of "
                        "minilm_finetune,tfidf_lr,zero_shot); the others are read from the cache")
    p.add_argument("--reuse", action="store_true",
                   help="reuse DSA head predictions of an earlier run with identical configs")
    p.add_argument("--out", default="results/guard.json")
    p.add_argument("--doc", default="docs/results-guard.md")
    p.add_argument("--doc-only", action="store_true", help="rewrite the doc from the results file (no training)")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("study", help="prompt-guard precision study: candidate heads, selection on val, "
                                     "leave-one-source-out -> results/guard-precision.json")
    add_base_args(p)
    p.add_argument("--candidates", nargs="*", default=None, help="a subset of dsa.recipes.guard_study.CANDIDATES")
    p.add_argument("--no-loso", action="store_true", help="skip leave-one-source-out validation")
    p.add_argument("--parts-only", action="store_true",
                   help="only train and score the candidates (parts under runs/guard_study/, e.g. in parallel "
                        "processes); a later plain run reuses them with --reuse-parts")
    p.add_argument("--reuse-parts", action="store_true", help="reuse candidate parts of an earlier run")
    p.add_argument("--out", default="results/guard-precision.json")
    p.set_defaults(func=cmd_study)
    p = sub.add_parser("operating-points", help="flag rates of a shipped prompt guard on eval-only sets, "
                                                "scored through the runtime -> results/guard.json")
    p.add_argument("adapter", nargs="?", default=SHIPPED_GUARD)
    p.add_argument("--base", default="smollm2-135m-instruct", help="base model the adapter was made for")
    p.add_argument("--out", default="results/guard.json")
    p.set_defaults(func=cmd_operating_points)
    p = sub.add_parser("score", help="calibrated scores and flags of guard adapters on texts")
    p.add_argument("adapters", nargs="+", help="adapter directories")
    p.add_argument("--text", action="append", default=[], help="a user message (repeatable)")
    p.add_argument("--file", default=None, help="a file with one user message per line")
    p.add_argument("--base", default="smollm2-135m-instruct", help="base model the adapters were made for")
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("robustness", help="red-team a guard adapter: flag rates on eval-only sets under held-out "
                                          "wrappers, padding and encodings, scored through the runtime -> "
                                          "results/robustness.json",
                       epilog="example:\n  dsa guard robustness adapters/guards/mine --name mine --n 60 --no-refusal",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("adapter", help="guard adapter directory (any prompt guard, your own included)")
    p.add_argument("--name", default=None, help="its key under guards in the results file (default: the folder name)")
    p.add_argument("--n", type=int, default=120, help="prompts per set (the first n in a fixed sha256 order)")
    p.add_argument("--seed", type=int, default=0, help="seeds the order, the wrapper templates and the filler")
    p.add_argument("--refusal-n", type=int, default=60, help="prompts per set for the refusal rate of alignment=auto")
    p.add_argument("--refusal-conditions", default=None,
                   help="comma-separated conditions generated for the refusal rate (default: "
                        "plain,pad_after_300,roleplay,thriller)")
    p.add_argument("--refusal-sets", default=None,
                   help="comma-separated sets for the refusal rate (default: strongreject,xstest_safe)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="decode budget of the refusal generations")
    p.add_argument("--align-adapter", default=SHIPPED_ADAPTER,
                   help="alignment adapter that alignment=auto applies")
    p.add_argument("--no-refusal", action="store_true", help="flag rates only (no generation)")
    p.add_argument("--no-resume", action="store_true", help="ignore per-text results cached under runs/robustness/")
    p.add_argument("--base", default="smollm2-135m-instruct", help="base model the adapter was made for")
    p.add_argument("--out", default="results/robustness.json")
    p.set_defaults(func=cmd_robustness)
    p = sub.add_parser("calibrate-stream", help="fit a response guard's streaming stop rule (threshold, tokens "
                                                "before a stop, debounce) on validation answers read token by "
                                                "token, and store it in the adapter",
                       epilog="examples:\n  dsa guard calibrate-stream adapters/guards/response_harm\n"
                              "  dsa guard calibrate-stream adapters/guards/mine --data mine.csv --map label=harmful",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("adapter", help="a prompt_response guard adapter directory (rewritten with its new checksum)")
    p.add_argument("--target-fpr", type=float, default=0.03,
                   help="the largest share of safe validation answers a head may stop")
    p.add_argument("--data", default=None,
                   help="the labelled file the adapter was trained on (default: its built-in task)")
    p.add_argument("--map", action="append", default=None, metavar="FIELD=COLUMN", help="as in `dsa guard train`")
    p.add_argument("--positive", default=None, help="as in `dsa guard train`")
    p.add_argument("--max-response-tokens", type=int, default=256, help="tokens read of each answer")
    p.add_argument("--benign", type=int, default=300,
                   help="also hold the target on the base's own answers to this many benign VAL prompts of "
                        "prompt_safety (everyday and edgy-but-benign requests; 0 = none)")
    p.add_argument("--benign-tokens", type=int, default=128, help="decode budget of those answers")
    p.add_argument("--base", default="smollm2-135m-instruct", help="base model the adapter was made for")
    p.set_defaults(func=cmd_calibrate_stream)
    p = sub.add_parser("robustness-report", help="regenerate docs/results-robustness.md and its plots from "
                                                 "results/robustness.json")
    p.add_argument("--results", default="results/robustness.json")
    p.add_argument("--doc", default="docs/results-robustness.md")
    p.add_argument("--img-dir", default="docs/img")
    p.set_defaults(func=cmd_robustness_report)


def _config_help() -> str:
    from dsa.guards.config import GuardTrainConfig

    return GuardTrainConfig.help()


def cmd_train(args) -> int:
    import time

    from dsa.base import load_base
    from dsa.cli.common import parse_mapping
    from dsa.guards.config import GuardTrainConfig
    from dsa.recipes.guard_train import train_guard

    if args.config and "=" in args.config:  # no YAML given: the first item is an override
        args.overrides, args.config = [args.config, *args.overrides], None
    if args.config is None and not args.data:
        raise ValueError("give a YAML config (configs/guard-*.yaml) or --data FILE")
    flags = {k: v for k, v in (("data", args.data), ("map", parse_mapping(args.map)), ("positive", args.positive),
                               ("limit", args.limit), ("plots", args.plots), ("out", args.out), ("base", args.base))
             if v is not None}
    cfg = GuardTrainConfig.from_yaml(args.config, args.overrides, extra=flags)
    t0 = time.perf_counter()
    base = load_base(cfg.base)
    if cfg.data:
        return _train_from_file(base, cfg, t0)
    adapter = train_guard(base, cfg)
    info = adapter.info or {}
    print(f"{cfg.task} {cfg.arch}: val AUC {info.get('val_auc', float('nan')):.4f}, test AUC "
          f"{info.get('test_auc', float('nan')):.4f}, {info.get('params', 0):,} params, thresholds "
          f"{[round(t, 4) for t in adapter.thresholds]}; {time.perf_counter() - t0:.1f} s (features "
          f"{info.get('feature_seconds', float('nan')):.1f} s, head {info.get('train_seconds', float('nan')):.1f} s)")
    if cfg.out:
        path = adapter.save(cfg.out, base.fingerprint, base.name)
        print(f"wrote {path}")
    return 0


def _train_from_file(base, cfg, t0: float) -> int:
    """`dsa guard train --data`: train, print every head's test numbers, save, plot."""
    import time

    from dsa.guards.user_report import format_head, plot_heads
    from dsa.recipes.guard_train import train_user_guard

    adapter, test = train_user_guard(base, cfg)
    info = adapter.info
    print(f"{cfg.task} {cfg.arch} from {info['data']['file']} (rows {info['data']['rows']}): val AUC "
          f"{info['val_auc']:.4f}, {info['params']:,} params; {time.perf_counter() - t0:.1f} s (features "
          f"{info['feature_seconds']:.1f} s, head {info['train_seconds']:.1f} s)")
    for j, h in enumerate(adapter.heads):
        print(format_head(f"{cfg.task}/{h}", info["heads"][h]) if h in info.get("heads", {}) else f"  {cfg.task}/{h}: "
              f"no test split", f"threshold {adapter.thresholds[j]:.4f}", sep="; ")
    if cfg.out:
        path = adapter.save(cfg.out, base.fingerprint, base.name)
        print(f"wrote {path}")
        if cfg.plots and test:
            print("wrote " + ", ".join(map(str, plot_heads(test, Path(path) / "plots", cfg.task))))
    return 0


def cmd_eval(args) -> int:
    if args.doc_only:
        from dsa.guards.doc import write_doc

        write_doc(json.loads(Path(args.out).read_text()), args.doc)
        print(f"wrote {args.doc} from {args.out}")
        return 0
    from dsa.base import load_base
    from dsa.recipes.guard_report import evaluate_all
    from dsa.recipes.guard_train import EVAL_TASKS

    tasks = tuple(args.tasks) if args.tasks else EVAL_TASKS
    bad = [t for t in tasks if t not in EVAL_TASKS]
    if bad:
        raise ValueError(f"unknown tasks {bad}: expected some of {EVAL_TASKS} (xstest comes with prompt_safety)")
    from dsa.recipes.guard_report import BASELINES

    compute = () if args.no_baselines else tuple(args.baselines.split(",")) if args.baselines else BASELINES
    unknown = [m for m in compute if m not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}: expected some of {list(BASELINES)}")
    evaluate_all(load_base(args.base, dtype=args.dtype, device=args.device), tasks, args.out, args.doc,
                 compute_baselines=compute, reuse=args.reuse, command="dsa " + " ".join(sys.argv[1:]))
    print(f"wrote {args.out} and {args.doc}")
    return 0


def cmd_study(args) -> int:
    from dsa.base import load_base
    from dsa.guards.precision_doc import write_precision_doc
    from dsa.recipes.guard_study import CANDIDATES, run_study
    from dsa.recipes.guard_train import write_json

    bad = [c for c in args.candidates or [] if c not in CANDIDATES]
    if bad:
        raise ValueError(f"unknown candidates {bad}: expected some of {list(CANDIDATES)}")
    if args.parts_only:
        from dsa.recipes.guard_study import run_candidates

        done = run_candidates(load_base(args.base, dtype=args.dtype, device=args.device), args.candidates)
        print(f"wrote parts for {list(done)} under runs/guard_study/")
        return 0
    res = run_study(load_base(args.base, dtype=args.dtype, device=args.device), args.candidates,
                    loso=not args.no_loso, reuse_parts=args.reuse_parts)
    res["command"] = "dsa " + " ".join(sys.argv[1:])
    write_json(Path(args.out), res)
    write_precision_doc()
    print(f"selected {res['selected']}; wrote {args.out}")
    return 0


def cmd_operating_points(args) -> int:
    from dsa.base import load_base
    from dsa.guards.precision_doc import write_precision_doc
    from dsa.recipes.guard_study import shipped_operating_points
    from dsa.recipes.guard_train import write_json

    op = shipped_operating_points(load_base(args.base), args.adapter)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    task = Path(args.adapter).name
    results.setdefault("operating_points", {})[task] = {**op, "command": "dsa " + " ".join(sys.argv[1:])}
    write_json(out, results)
    write_precision_doc()
    print(json.dumps({k: op[k] for k in ("threshold", "flag_rate", "auc_xstest")}, indent=1))
    return 0


def cmd_score(args) -> int:
    from dsa.base import load_base
    from dsa.guards import GuardBank, classify

    texts = list(args.text)
    if args.file:
        with open(args.file) as f:
            texts += [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
        raise ValueError("give --text or --file")
    base = load_base(args.base)
    bank = GuardBank.load(args.adapters, base)
    for text, res in zip(texts, classify(base, bank, texts), strict=True):
        json.dump({"text": text, **res}, sys.stdout)
        sys.stdout.write("\n")
    return 0


def cmd_calibrate_stream(args) -> int:
    from tqdm import tqdm

    from dsa.adapter_io import read_adapter_meta
    from dsa.base import load_base
    from dsa.cli.common import parse_mapping
    from dsa.guards.streaming import benign_prompts
    from dsa.recipes.guard_stream import calibrate_adapter
    from dsa.recipes.guard_train import base_answers

    task = read_adapter_meta(args.adapter)["config"]["task"]
    if args.data:
        from dsa.guards.user import user_task

        val = user_task(args.data, parse_mapping(args.map), positive=args.positive, name=task).val
        source = f"{Path(args.data).name} val"
    else:
        from dsa.data.tasks import guard_task

        val, source = guard_task(task).val, f"{task} val"
    base = load_base(args.base)
    benign, benign_source = [], ""
    if args.benign:
        prompts = benign_prompts("val", args.benign)
        benign_source = f"base answers to {len(prompts)} benign prompt_safety val prompts"
        with tqdm(total=len(prompts), desc="base answers", unit="answer") as bar:
            benign = base_answers(base, prompts, args.benign_tokens, progress=bar.update)
    with tqdm(total=sum(r.response is not None for r in val) + len(benign), desc="reading answers",
              unit="answer") as bar:
        stream = calibrate_adapter(base, args.adapter, val, args.target_fpr, args.max_response_tokens,
                                   source=source, benign=benign, benign_source=benign_source, progress=bar.update)
    for rule, (head, point) in zip(stream["rules"], stream["val"].items(), strict=True):
        groups = point.get("false_stop_rate_by_group", {})
        print(f"{head}: threshold {rule['threshold']:.4f}, min_tokens {rule['min_tokens']}, debounce "
              f"{rule['debounce']}; detection {point['detection_rate']:.3f} of {point['harmful']} harmful answers "
              f"(median tokens to stop {point['tokens_to_stop_median']}), false stops {point['false_stop_rate']:.3f} "
              f"of {point['safe']} safe ones" + "".join(f"; {g}: {v:.3f}" for g, v in groups.items()))
    print(f"wrote {Path(args.adapter) / 'adapter.json'}")
    return 0


def cmd_robustness(args) -> int:
    import shlex

    from dsa.base import load_base
    from dsa.eval.robustness import (
        REFUSAL_CONDITIONS,
        REFUSAL_SETS,
        SETS,
        conditions,
        measure,
        merge_guard,
    )

    conds = _csv(args.refusal_conditions) or list(REFUSAL_CONDITIONS)
    bad = [c for c in conds if c not in conditions() and not c.startswith("pad_")]
    sets = _csv(args.refusal_sets) or list(REFUSAL_SETS)
    bad += [s for s in sets if s not in SETS]
    if bad:
        raise ValueError(f"unknown refusal conditions or sets {bad}: conditions {conditions()}, sets {list(SETS)}")
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    refusal_n = 0 if args.no_refusal else args.refusal_n
    entry = measure(load_base(args.base), args.adapter, n=args.n, seed=args.seed, refusal_n=refusal_n,
                    align_adapter=args.align_adapter, refusal_conditions=conds, refusal_sets=sets,
                    max_new_tokens=args.max_new_tokens, command="dsa " + shlex.join(sys.argv[1:]),
                    resume=not args.no_resume)
    name = args.name or Path(args.adapter).name
    merge_guard(Path(args.out), name, entry)
    sr = entry["rows"].get("strongreject", {})
    print(f"{name}: StrongREJECT flagged " + ", ".join(f"{c} {r['flag_rate']:.3f}" for c, r in sr.items()))
    print(f"wrote guards[{name!r}] of {args.out}; regenerate the page with `dsa guard robustness-report`")
    return 0


def _csv(value: str | None) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


def cmd_robustness_report(args) -> int:
    from dsa.eval.robustness_report import read_diagnoses, write_report

    paths = write_report(json.loads(Path(args.results).read_text()), Path(args.doc), Path(args.img_dir),
                         results_path=args.results, diagnoses=read_diagnoses(Path(args.results).parent))
    print("wrote " + ", ".join(map(str, paths)))
    return 0
