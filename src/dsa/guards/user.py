"""A guard from a user's own labelled file (CSV / TSV / JSONL / JSON / Parquet): the rows become a
guard task with seeded splits, read through the same feature store and trainer as the built-in
tasks, and the result is an ordinary guard adapter (`dsa guard score`, `SafetyModel` load it).

    dsa guard train --data mine.csv --map text=comment --map label=is_toxic --out adapters/guards/mine
    dsa guard train --data toxigen_annotated_train.csv --map label=label --positive hate --limit 2000 ...
    dsa guard train --data comments.csv --map text=comment --map label=toxic,insult,threat --out ...

One label column gives one head, "unsafe"; several comma-separated label columns give one head per
column, named after it (`mine/toxic`, `mine/insult`, ...). An empty cell leaves that row
unlabelled for that head only. The second run on the same rows reads every text's features from
the store: seconds, not minutes.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from dsa.data.records import DataError
from dsa.data.splits import SPLITS, assign_splits
from dsa.data.tasks import GuardTask
from dsa.data.user_files import load_user_file

HEAD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # no "/": heads are addressed as task/head
MIN_PER_CLASS = 5


def label_columns(mapping: dict[str, str] | None) -> list[str]:
    """The label column(s) of a mapping: `label=toxic,insult` -> ["toxic", "insult"] (default ["label"])."""
    cols = [c.strip() for c in (mapping or {}).get("label", "label").split(",")]
    if not all(cols):
        raise DataError(f"--map label={(mapping or {}).get('label')!r}: an empty column name")
    if len(set(cols)) != len(cols):
        raise DataError(f"--map label: a column is named twice in {cols}")
    return cols


def user_task(path: str | Path, mapping: dict[str, str] | None = None, *, positive: str | None = None,
              limit: int | None = None, seed: int = 0, name: str | None = None) -> GuardTask:
    """The guard task of a user's file: one head "unsafe" per single label column, else one head per column.

    Args:
        mapping: Record field -> column (text, prompt, response, label, id, split); default: the
            columns with those names. `label` may list several columns (comma-separated or a list).
        positive: for label columns of class names: this value is label 1, any other is 0.
        limit: keep a seeded sample of this many labelled rows.
        seed: split (70/10/20 by content hash, unless the file has a split column) and sample seed.
    """
    mapping = dict(mapping or {})
    if isinstance(mapping.get("label"), list | tuple):  # YAML: map: {label: [toxic, insult]}
        mapping["label"] = ",".join(map(str, mapping["label"]))
    cols = label_columns(mapping)
    multi = len(cols) > 1
    heads = cols if multi else ["unsafe"]
    for c in heads:
        if not HEAD_NAME.fullmatch(c):
            raise DataError(f"{Path(path).name}: column {c!r} cannot name a guard head (letters, digits, "
                            f"'_', '.', '-'; no '/' or spaces): rename the column")
    if positive is not None:
        mapping.pop("label", None)
    try:
        recs = load_user_file(path, mapping or None, source=name)
    except DataError as err:
        if positive is None and "cannot read label" in str(err):
            raise DataError(f"{err}; for a column of class names give --positive CLASS") from None
        raise
    if positive is not None:
        for c in cols:
            if c not in recs[0].meta:  # load_user_file raises on an empty file
                raise DataError(f"{Path(path).name}: no label column {c!r} (map it with --map label=COLUMN)")
        recs = [r.model_copy(update={"labels": {c: None if _empty(r.meta[c]) else
                                                int(str(r.meta[c]).strip() == str(positive)) for c in cols}})
                for r in recs]
    if not multi:  # one column: Record.label, as the built-in single-head tasks
        recs = [r.model_copy(update={"label": r.labels[cols[0]], "labels": {}}) if cols[0] in r.labels else r
                for r in recs]
    labelled = (lambda r: any(v is not None for v in r.labels.values())) if multi else (lambda r: r.label is not None)
    recs = [r for r in recs if labelled(r)]
    if limit is not None:
        # its own hash key: the split hashes f"{seed}:{id}", so a prefix of that order would be all "train"
        recs = sorted(recs, key=lambda r: hashlib.sha256(f"{seed}:sample:{r.id}".encode()).hexdigest())[:limit]
    for c in cols:
        ys = [r.labels.get(c) if multi else r.label for r in recs]
        counts = {y: sum(v == y for v in ys) for y in (0, 1)}
        if min(counts.values()) < MIN_PER_CLASS:
            raise DataError(
                f"{Path(path).name}: column {c!r}: a guard head needs both classes, at least {MIN_PER_CLASS} "
                f"rows each (label 0: {counts[0]} rows, label 1: {counts[1]} rows"
                f"{'; --positive ' + repr(positive) + ' matched none' if positive and not counts[1] else ''})")
    if any(r.split not in SPLITS for r in recs):
        recs = assign_splits(recs, seed)
    # a (prompt, response) pair is read as the chat transcript; any other row as the user's message
    mode = "prompt_response" if all(r.prompt and r.response for r in recs) else "prompt"
    task = GuardTask(name or Path(path).name.split(".")[0], mode, heads,
                     *([r for r in recs if r.split == s] for s in SPLITS),
                     description=f"user file {Path(path).name}: {len(recs)} labelled rows")
    for s in ("train", "val"):
        if not task.split(s):
            raise DataError(f"{Path(path).name}: the {s} split is empty ({len(recs)} rows)")
    return task


def _empty(v) -> bool:
    return v is None or (isinstance(v, float) and v != v) or str(v).strip() == ""
