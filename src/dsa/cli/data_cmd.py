"""`dsa data list`, `dsa data show NAME` and `dsa data doc`: what the datasets and guard tasks hold.

    dsa data list                      # every source and guard task: rows, splits, label balance
    dsa data show prompt_safety --n 3  # counts per split, label balance, a few example rows
    dsa data doc                       # rewrite the generated blocks of docs/data.md
"""

from __future__ import annotations

import argparse

from dsa.data import GUARD_TASKS, GuardTask, Record, guard_task, load_source
from dsa.data.doc import SPLIT_COLUMNS, balance, format_table, list_table, pct, write_data_doc


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
    p = sub.add_parser("doc", parents=[common], help="rewrite the generated blocks of docs/data.md (split rule, "
                                                     "guard tasks, `dsa data list`) from the code and the data")
    p.add_argument("--doc", default="docs/data.md", help="the page to rewrite (default docs/data.md)")
    p.set_defaults(func=cmd_doc)


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
    print(list_table(args.root, args.seed))
    return 0


def cmd_doc(args: argparse.Namespace) -> int:
    print(f"wrote {write_data_doc(args.doc, args.root, args.seed)}")
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
    rows = [[s, len(rs), *balance(rs), pct(*balance(rs)[:2])] for s, rs in groups if rs]
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
