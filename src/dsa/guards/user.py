"""A guard from a user's own labelled file (CSV / TSV / JSONL / JSON / Parquet): the rows become a
guard task with seeded splits, read through the same feature store and trainer as the built-in
tasks, and the result is an ordinary guard adapter (`dsa guard score`, `SafetyModel` load it).

    dsa guard train --data mine.csv --map text=comment --map label=is_toxic --out adapters/guards/mine
    dsa guard train --data toxigen_annotated_train.csv --map label=label --positive hate --limit 2000 ...

The second run on the same rows reads every text's features from the store: seconds, not minutes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dsa.data.records import DataError
from dsa.data.splits import SPLITS, assign_splits
from dsa.data.tasks import GuardTask
from dsa.data.user_files import load_user_file


def user_task(path: str | Path, mapping: dict[str, str] | None = None, *, positive: str | None = None,
              limit: int | None = None, seed: int = 0, name: str | None = None) -> GuardTask:
    """The guard task of a user's file: one head ("unsafe" = label 1).

    Args:
        mapping: Record field -> column (text, prompt, response, label, id, split); default: the
            columns with those names.
        positive: for a label column of class names: this value is label 1, any other is 0.
        limit: keep a seeded sample of this many labelled rows.
        seed: split (70/10/20 by content hash, unless the file has a split column) and sample seed.
    """
    mapping = dict(mapping or {})
    label_col = mapping.pop("label", "label") if positive is not None else None
    recs = load_user_file(path, mapping or None, source=name)
    if positive is not None:
        if label_col not in recs[0].meta:  # load_user_file raises on an empty file
            raise DataError(f"{Path(path).name}: no label column {label_col!r} (map it with --map label=COLUMN)")
        recs = [r.model_copy(update={"label": None if _empty(r.meta[label_col]) else
                                     int(str(r.meta[label_col]).strip() == str(positive))}) for r in recs]
    recs = [r for r in recs if r.label is not None]
    if limit is not None:
        # its own hash key: the split hashes f"{seed}:{id}", so a prefix of that order would be all "train"
        recs = sorted(recs, key=lambda r: hashlib.sha256(f"{seed}:sample:{r.id}".encode()).hexdigest())[:limit]
    counts = {y: sum(r.label == y for r in recs) for y in (0, 1)}
    if min(counts.values()) < 5:
        raise DataError(f"{Path(path).name}: a guard needs both classes (label 0: {counts[0]} rows, label 1: "
                        f"{counts[1]} rows{'; --positive ' + repr(positive) + ' matched none' if positive and not counts[1] else ''})")
    if any(r.split not in SPLITS for r in recs):
        recs = assign_splits(recs, seed)
    # a (prompt, response) pair is read as the chat transcript; any other row as the user's message
    mode = "prompt_response" if all(r.prompt and r.response for r in recs) else "prompt"
    task = GuardTask(name or Path(path).name.split(".")[0], mode, ["unsafe"],
                     *([r for r in recs if r.split == s] for s in SPLITS),
                     description=f"user file {Path(path).name}: {len(recs)} labelled rows")
    for s in ("train", "val"):
        if not task.split(s):
            raise DataError(f"{Path(path).name}: the {s} split is empty ({len(recs)} rows)")
    return task


def _empty(v) -> bool:
    return v is None or (isinstance(v, float) and v != v) or str(v).strip() == ""
