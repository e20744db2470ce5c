"""Read tabular files (CSV, TSV, JSONL, JSON list, Parquet) into rows that know where they came from,
and turn a user's file into Records through a column mapping or a public-format preset.

Every row carries its location (`data.csv: line 7`, 1-based as a human sees the file; `row N` for
Parquet, `item N` for a JSON list) so that errors point at the exact place to fix.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dsa.data.records import (
    CONTENT_FIELDS,
    DataError,
    Record,
    content_id,
    parse_label,
    unique_ids,
    where,
)

log = logging.getLogger(__name__)
csv.field_size_limit(2**31 - 1)  # MMLU law questions and DNA responses exceed the 128 KiB default

MAPPABLE = (*CONTENT_FIELDS, "label", "id", "split")


@dataclass
class Table:
    """Rows of one file: `columns` as declared (CSV header / Parquet schema / first JSON object)."""

    path: Path
    columns: list[str]
    header_loc: str
    rows: list[tuple[str, dict[str, Any]]]  # (location, row)


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8", newline="")


def _union_keys(rows: list[tuple[str, dict]]) -> list[str]:
    return list(dict.fromkeys(k for _, row in rows for k in row))


def read_table(path: str | Path) -> Table:
    """Read a file by its extension (`.csv`, `.tsv`, `.jsonl`, `.json`, `.parquet`, optionally `.gz`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    kind = path.name.removesuffix(".gz").rsplit(".", 1)[-1].lower()
    if kind in ("csv", "tsv"):
        with _open_text(path) as f:
            reader = csv.DictReader(f, delimiter="\t" if kind == "tsv" else ",")
            columns = list(reader.fieldnames or [])
            rows, start = [], reader.line_num + 1
            for row in reader:
                if None in row:  # more cells than header names
                    raise DataError(f"{where(path, start)}: {len(row) - 1 + len(row[None])} cells but "
                                    f"the header has {len(columns)} columns")
                rows.append((where(path, start), row))
                start = reader.line_num + 1
        return Table(path, columns, where(path, 1), rows)
    if kind == "jsonl":
        rows = []
        with _open_text(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{where(path, n)}: invalid JSON ({err.msg}, column {err.colno})") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{where(path, n)}: expected a JSON object, got {type(obj).__name__}")
                rows.append((where(path, n), obj))
        return Table(path, _union_keys(rows), rows[0][0] if rows else where(path), rows)
    if kind == "json":
        with _open_text(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as err:
                raise DataError(f"{where(path, err.lineno)}: invalid JSON ({err.msg})") from None
        if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
            raise DataError(f"{path.name}: expected a JSON list of objects")
        rows = [(where(path, i, "item"), x) for i, x in enumerate(data, 1)]
        return Table(path, _union_keys(rows), rows[0][0] if rows else where(path), rows)
    if kind == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{path.name}: reading Parquet needs pyarrow, which is not installed here "
                            "(the [train] extra: pip install 'dsa[train]'), or save the file as CSV / JSONL") from None

        tab = pq.read_table(path)
        rows = [(where(path, i, "row"), x) for i, x in enumerate(tab.to_pylist(), 1)]
        return Table(path, list(tab.column_names), f"{path.name}: schema", rows)
    raise DataError(f"{path.name}: unsupported file type {kind!r}: expected .csv, .tsv, .jsonl, .json or .parquet")


def need(row: dict[str, Any], column: str, loc: str) -> Any:
    """`row[column]`, or a DataError naming the location and the missing column."""
    if column not in row:
        raise DataError(f"{loc}: missing column {column!r} (columns are: {', '.join(map(str, row))})")
    return row[column]


def _text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and v != v):
        return None
    return v if isinstance(v, str) else str(v)


def _label(value: Any, loc: str, column: str) -> int | None:
    try:
        return parse_label(value)
    except ValueError as err:
        raise DataError(f"{loc}: field {column!r}: {err}") from None


# --- public-format presets: row -> Record fields (label, labels) -------------------------------

def _beavertails(row: dict, loc: str) -> dict:
    safe = _label(need(row, "is_safe", loc), loc, "is_safe")
    cats = row.get("category")
    labels = {str(k): int(bool(v)) for k, v in cats.items()} if isinstance(cats, dict) else {}
    return {"label": None if safe is None else 1 - safe, "labels": labels}


def _aegis2(row: dict, loc: str) -> dict:
    p = _label(need(row, "prompt_label", loc), loc, "prompt_label")
    r = _label(row.get("response_label"), loc, "response_label")
    has_response = bool(_text(row.get("response")))
    return {"label": r if has_response and r is not None else p,
            "labels": {"prompt_unsafe": p, "response_unsafe": r}}


def _wildguardmix(row: dict, loc: str) -> dict:
    p = _label(need(row, "prompt_harm_label", loc), loc, "prompt_harm_label")
    r = _label(row.get("response_harm_label"), loc, "response_harm_label")
    refusal = {"refusal": 1, "compliance": 0}.get(str(row.get("response_refusal_label")).lower())
    return {"label": p, "labels": {"prompt_harm": p, "response_harm": r, "response_refusal": refusal}}


PRESETS: dict[str, tuple[tuple[str, ...], Callable[[dict, str], dict]]] = {
    # name -> (columns that identify the format, row -> {"label", "labels"})
    "beavertails": (("prompt", "response", "is_safe"), _beavertails),
    "aegis2": (("prompt", "prompt_label"), _aegis2),
    "wildguardmix": (("prompt", "prompt_harm_label"), _wildguardmix),
}


def detect_preset(columns: list[str]) -> str | None:
    """The preset whose identifying columns are all present, if any."""
    return next((name for name, (cols, _) in PRESETS.items() if set(cols) <= set(columns)), None)


def load_user_file(path: str | Path, mapping: dict[str, str] | None = None, source: str | None = None,
                   preset: str | None = None) -> list[Record]:
    """Read a user's CSV / TSV / JSONL / JSON list / Parquet file into Records.

    Args:
        path: the file; its extension picks the reader.
        mapping: Record field -> column name (fields: text, prompt, response, document, summary,
            label, id, split). Default: columns with those names. Mapped columns must exist.
            `label` may name several comma-separated columns: each row's `labels` then holds
            one binary label per column (None where the cell is empty).
        source: the Records' `source` (default: the file's stem).
        preset: "beavertails" (label = not is_safe), "aegis2" (prompt_label / response_label),
            "wildguardmix" (label = prompt_harm_label); detected from the columns when neither
            mapping nor preset is given.
    Returns:
        One Record per row; other columns go to `meta`.
    """
    table = read_table(path)
    name = table.path.name
    if not table.rows:
        raise DataError(f"{name}: no rows")
    if preset is None and mapping is None:
        preset = detect_preset(table.columns)
        if preset:
            log.info("%s: columns look like %s; reading it with that preset", name, preset)
    if preset is not None and preset not in PRESETS:
        raise DataError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
    bad = set(mapping or {}) - set(MAPPABLE)
    if bad:
        raise DataError(f"mapping: unknown Record field(s) {sorted(bad)}: expected some of {', '.join(MAPPABLE)}")
    explicit = dict(mapping or {})
    fields = explicit or {f: f for f in MAPPABLE if f in table.columns}
    if preset:
        fields = {f: c for f, c in fields.items() if f != "label"} | {
            f: f for f in ("prompt", "response") if f in table.columns and f not in fields}
    # `label` may name several columns ("toxic,insult"): one binary label per column in `labels`
    label_cols = [c.strip() for c in fields["label"].split(",")] if "label" in fields else []
    for field, column in explicit.items():
        for col in (label_cols if field == "label" else [column]):
            if col not in table.columns:
                raise DataError(f"{table.header_loc}: missing column {col!r} for field {field!r} "
                                f"(columns are: {', '.join(table.columns)})")
    if not any(f in fields for f in CONTENT_FIELDS):
        raise DataError(f"{table.header_loc}: no content column: expected one of {', '.join(CONTENT_FIELDS)} "
                        f"or a mapping (columns are: {', '.join(table.columns)})")
    source = source or table.path.name.split(".")[0]
    used = set(fields.values()) | set(label_cols)
    drafts = []
    for loc, row in table.rows:
        d: dict[str, Any] = {f: _text(need(row, c, loc)) for f, c in fields.items() if f in CONTENT_FIELDS}
        if len(label_cols) == 1:
            d["label"] = _label(need(row, label_cols[0], loc), loc, label_cols[0])
        elif label_cols:
            d["labels"] = {c: _label(need(row, c, loc), loc, c) for c in label_cols}
        if preset:
            d |= PRESETS[preset][1](row, loc)
        if "split" in fields:
            d["split"] = _text(row.get(fields["split"])) or None
        rid = _text(row.get(fields["id"])) if "id" in fields else None
        d["id"] = f"{source}:{rid}" if rid else content_id(source, *(d.get(f) for f in CONTENT_FIELDS))
        d["meta"] = {k: v for k, v in row.items() if k not in used}
        drafts.append((loc, d))
    out = []
    for (loc, d), rid in zip(drafts, unique_ids(d["id"] for _, d in drafts), strict=True):
        try:
            out.append(Record(source=source, **(d | {"id": rid})))
        except ValidationError as err:
            e = err.errors()[0]
            field = ".".join(map(str, e["loc"])) or "record"
            raise DataError(f"{loc}: field {field!r}: {e['msg']}") from None
    return out
