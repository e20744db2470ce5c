"""What every source loader shares: its table of loaders (`registrar`), the rows of a data file,
and a Record or a number read from a row with the file and row in the error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dsa.data.records import DataError, Record, content_id
from dsa.data.user_files import need, read_table

Loader = Callable[..., list[Record]]


def registrar(table: dict[str, Loader]) -> Callable[[str], Callable[[Loader], Loader]]:
    """A decorator factory: `@source(name)` puts a loader into `table` under `name`, in order."""
    def source(name: str) -> Callable[[Loader], Loader]:
        def register(fn: Loader) -> Loader:
            table[name] = fn
            return fn
        return register
    return source


def table_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    if not path.is_file():
        raise DataError(f"{path}: missing (is the data folder complete?)")
    yield from read_table(path).rows


def make_record(loc: str, source: str, **fields: Any) -> Record:
    fields.setdefault("id", content_id(source, fields.get("prompt") or fields.get("text"), fields.get("response")))
    try:
        return Record(source=source, **fields)
    except ValidationError as err:
        e = err.errors()[0]
        raise DataError(f"{loc}: field {'.'.join(map(str, e['loc'])) or 'record'!r}: {e['msg']}") from None


def int_field(loc: str, row: dict, column: str) -> int:
    try:
        return int(float(need(row, column, loc)))
    except (TypeError, ValueError):
        raise DataError(f"{loc}: field {column!r}: expected a number, got {row[column]!r}") from None
