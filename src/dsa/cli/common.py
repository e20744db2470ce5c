"""Argument helpers shared by the `dsa` subcommands."""

from __future__ import annotations

import argparse

from dsa.base import DEFAULT_BASE


def add_base_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", default=DEFAULT_BASE,
                   help=f"base model: {DEFAULT_BASE!r} (embedded), a Hugging Face id or a local dir")
    p.add_argument("--dtype", default="auto", help="bf16 | fp32 | auto (bf16 where the CPU has it)")
    p.add_argument("--device", default="cpu", help="torch device")


def parse_mapping(items: list[str] | None) -> dict[str, str] | None:
    """['text=comment', 'label=is_toxic'] -> {'text': 'comment', 'label': 'is_toxic'}."""
    if not items:
        return None
    out = {}
    for item in items:
        field, sep, column = item.partition("=")
        if not sep or not field or not column:
            raise ValueError(f"--map expects FIELD=COLUMN, got {item!r}")
        out[field.strip()] = column.strip()
    return out


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    """Print dict rows as a plain aligned table."""
    if not rows:
        print("(no rows)")
        return
    columns = columns or list(rows[0])
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
