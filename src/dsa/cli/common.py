"""Argument helpers shared by the `dsa` subcommands."""

from __future__ import annotations

import argparse
import os

from dsa.base import DEFAULT_BASE


class _ArchFile(argparse.Action):
    """--arch FILE.yaml: checked now, then exported as $DSA_ARCH, which every `load_base` of this
    process (and of processes it starts) reads, whichever code path loads the base."""

    def __call__(self, parser, namespace, value, option_string=None):
        from dsa.taps import load_arch_spec

        try:
            load_arch_spec(value)
        except (ValueError, FileNotFoundError) as err:
            raise argparse.ArgumentError(self, str(err)) from err
        os.environ["DSA_ARCH"] = os.path.abspath(value)
        setattr(namespace, self.dest, value)


class _PlainText(argparse.Action):
    """--plain-text: exported as $DSA_CHAT_TEMPLATE=plain, read by every `load_base`."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        os.environ["DSA_CHAT_TEMPLATE"] = "plain"
        setattr(namespace, self.dest, True)


def add_base_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", default=DEFAULT_BASE,
                   help=f"base model: {DEFAULT_BASE!r} (embedded), a Hugging Face id or a local dir")
    p.add_argument("--dtype", default="auto", help="bf16 | fp32 | auto (bf16 where the CPU has it)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--arch", action=_ArchFile, metavar="FILE.yaml",
                   help="where the decoder's parts live, for an architecture outside dsa.taps.ARCHITECTURES "
                        "(YAML of ArchSpec fields: layers, embed, final_norm, attn, mlp, lm_head, "
                        "residual_scale, model_type; sets $DSA_ARCH)")
    p.add_argument("--plain-text", action=_PlainText,
                   help="render prompts as plain text, for a model without a chat template "
                        "(sets $DSA_CHAT_TEMPLATE=plain)")


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
