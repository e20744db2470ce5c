"""`dsa data list` and `dsa data show NAME`: what the datasets and guard tasks hold.

    dsa data list                      # every source and guard task: rows, splits, label balance
    dsa data show prompt_safety --n 3  # counts per split, label balance, a few example rows
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence

from dsa.data import GUARD_TASKS, GuardTask, Record, guard_task, list_sources, load_source

SPLIT_COLUMNS = ("train", "val", "test", "eval", None)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="list and inspect datasets and guard tasks",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=None, help="data folder (default: $DSA_DATA or ../shared/data)")
    common.add_argument("--seed", type=int, default=0, help="split seed of the guard tasks (documented: 0)")
    p = sub.add_parser("list", parents=[common], help="every source and guard task with row counts")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", parents=[common], help="counts per split, label balance and examples")
    p.add_argument("name", help="a source (see `dsa data list`) or a guard task")
    p.add_argument("--n", type=int, default=5, help="example rows to print (default 5)")
    p.set_defaults(func=cmd_show)


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned table: text left-aligned, numbers right-aligned."""
    cells = [[str(c) for c in header], *[["-" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(isinstance(r[i], int | float) or r[i] is None for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric, strict=True))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _balance(records: Sequence[Record]) -> tuple[int, int, int]:
    c = Counter(r.label for r in records)
    return c[1], c[0], c[None]


def _pct(pos: int, neg: int) -> str:
    return f"{100 * pos / (pos + neg):.1f}%" if pos + neg else "-"


def _records_of(name: str, root: str | None, seed: int) -> tuple[str, list[Record], GuardTask | None]:
    """A bare name is a guard task if there is one of that name, else a source;
    "source:NAME" / "task:NAME" choose explicitly (toxigen, summedits, ... are both)."""
    kind, _, bare = name.rpartition(":")
    if kind not in ("", "task", "source"):
        raise ValueError(f"{name!r}: prefix must be 'task:' or 'source:'")
    if kind == "task" or (not kind and bare in GUARD_TASKS):
        name = bare
        task = guard_task(name, root, seed)
        return "task", [*task.train, *task.val, *task.test], task
    return "source", load_source(bare, root), None


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name in [*(f"source:{s}" for s in list_sources()), *(f"task:{t}" for t in GUARD_TASKS)]:
        kind, records, _ = _records_of(name, args.root, args.seed)
        name = name.split(":", 1)[1]
        splits = Counter(r.split for r in records)
        pos, neg, unk = _balance(records)
        rows.append([name, kind, len(records), *(splits[s] or None for s in SPLIT_COLUMNS), pos, neg, unk, _pct(pos, neg)])
    print(format_table(["name", "kind", "rows", "train", "val", "test", "eval", "no split",
                        "label=1", "label=0", "no label", "% label=1"], rows))
    return 0


def _one_line(r: Record, width: int = 110) -> str:
    parts = ([f"DOC: {r.document}", f"SUMMARY: {r.summary}"] if r.input_kind == "document_summary" else
             [f"PROMPT: {r.prompt}", f"RESPONSE: {r.response}"] if r.input_kind == "prompt_response" else
             [r.prompt if r.prompt is not None else r.text or ""])
    text = " | ".join(" ".join(str(p).split()) for p in parts)
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_show(args: argparse.Namespace) -> int:
    kind, records, task = _records_of(args.name, args.root, args.seed)
    print(f"{args.name.rpartition(':')[2]} ({kind}): {len(records)} rows")
    if task is not None:
        print(f"mode={task.mode} heads={','.join(task.heads)} eval_only={task.eval_only} seed={args.seed}")
        print(task.description)
    print()
    groups = [(s or "none", [r for r in records if r.split == s]) for s in SPLIT_COLUMNS]
    rows = [[s, len(rs), *_balance(rs), _pct(*_balance(rs)[:2])] for s, rs in groups if rs]
    print(format_table(["split", "rows", "label=1", "label=0", "no label", "% label=1"], rows))
    heads = task.heads if task is not None and len(task.heads) > 1 else sorted({k for r in records for k in r.labels})
    if heads:
        print("\nper head: positives / annotated")
        hrows = [[h, *(f"{sum(r.labels.get(h) == 1 for r in rs)}/{sum(r.labels.get(h) is not None for r in rs)}"
                      for _, rs in groups if rs)] for h in heads]
        print(format_table(["head", *(s for s, rs in groups if rs)], hrows))
    if args.n > 0:
        step = max(1, len(records) // args.n)  # spread over the file, not just its first rows
        print(f"\nexamples ({min(args.n, len(records))}, every {step}th row):")
        for r in records[::step][: args.n]:
            print(f"  [{r.split or '-'}] label={'-' if r.label is None else r.label} {r.id}")
            print(f"      {_one_line(r)}")
    return 0
