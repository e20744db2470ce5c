"""Generated blocks inside hand-written markdown pages: one splicer for every report writer."""

from __future__ import annotations

from pathlib import Path

from dsa.adapter_io import atomic_write_text


def splice_block(doc: Path, block: list[str], start: str, end: str, title: str, missing_tail: str = "") -> None:
    """Replace the text between `start` and `end` in `doc` with `block` (whose lines include both
    markers), keeping everything around it; a new page is `title` plus the block. Written atomically.
    `missing_tail` is what follows the block when the page has `start` but no `end`."""
    text = doc.read_text() if doc.exists() else f"{title}\n\n{start}\n{end}\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1] if end in rest else missing_tail
    atomic_write_text(doc, head + "\n".join(block) + tail)
