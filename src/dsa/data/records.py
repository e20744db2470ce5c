"""`Record`: one validated example, whatever dataset it came from, and the helpers that build it.

A record carries the content a guard reads (`text`, or `prompt` [+ `response`], or
`document` + `summary`), a binary `label` (1 = the unsafe / positive class of its task) and,
for multi-category data, `labels` where None means "not annotated".
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

Split = Literal["train", "val", "test", "eval"]
InputKind = Literal["text", "prompt", "prompt_response", "document_summary"]
CONTENT_FIELDS = ("text", "prompt", "response", "document", "summary")


class DataError(ValueError):
    """Bad input data; the message names the file, the line/row and the field."""


def where(path: object, line: int | None = None, unit: str = "line") -> str:
    """`"file.csv: line 7"` (1-based, as a human sees the file) for DataError messages."""
    name = getattr(path, "name", None) or str(path)
    return f"{name}: {unit} {line}" if line is not None else f"{name}"


def normalise_text(s: str) -> str:
    """Lower-case and fold every run of whitespace to one space (the dedup key)."""
    return " ".join(str(s).lower().split())


def content_id(source: str, *parts: str | None) -> str:
    """A stable id from content (not row order), so splits survive shuffled or added rows."""
    key = "\x1f".join(normalise_text(p) if p is not None else "" for p in parts)
    return f"{source}:{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def unique_ids(ids: Iterable[str]) -> list[str]:
    """Suffix repeated ids with `~2`, `~3`, ... (duplicate rows keep distinct ids)."""
    seen: dict[str, int] = {}
    out = []
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
        out.append(i if seen[i] == 1 else f"{i}~{seen[i]}")
    return out


_LABEL_WORDS = {
    "1": 1, "true": 1, "yes": 1, "unsafe": 1, "harmful": 1, "toxic": 1, "positive": 1,
    "0": 0, "false": 0, "no": 0, "safe": 0, "unharmful": 0, "harmless": 0, "benign": 0,
    "non-toxic": 0, "negative": 0,
}


def parse_label(value: Any) -> int | None:
    """0/1, booleans, or words ("safe"/"unsafe", "harmful"/"unharmful", "true"/"false") -> 0/1.

    Empty, None and NaN mean unknown (None). Raises ValueError on anything else.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        if value in (0, 1):
            return int(value)
        raise ValueError(f"label must be 0 or 1, got {value!r}")
    word = str(value).strip().lower()
    if word in ("", "nan", "none", "null"):
        return None
    if word in ("1.0", "0.0"):
        word = word[0]
    if word not in _LABEL_WORDS:
        raise ValueError(f"cannot read label {value!r}: expected 0/1, true/false, safe/unsafe "
                         "or harmful/unharmful")
    return _LABEL_WORDS[word]


class Record(BaseModel):
    """One example. Frozen: derive changed copies with `r.model_copy(update={...})`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    source: str
    split: Split | None = None
    text: str | None = None
    prompt: str | None = None
    response: str | None = None
    document: str | None = None
    summary: str | None = None
    label: int | None = None
    labels: dict[str, int | None] = {}
    meta: dict[str, Any] = {}

    @field_validator("label")
    @classmethod
    def _binary_label(cls, v: int | None) -> int | None:
        if v is not None and v not in (0, 1):
            raise ValueError(f"label must be 0 or 1 (or None), got {v!r}")
        return v

    @field_validator("labels")
    @classmethod
    def _binary_labels(cls, v: dict[str, int | None]) -> dict[str, int | None]:
        bad = {k: x for k, x in v.items() if x not in (0, 1, None)}
        if bad:
            raise ValueError(f"labels must be 0, 1 or None, got {bad}")
        return v

    @model_validator(mode="after")
    def _has_content(self) -> Record:
        if not any((getattr(self, f) or "").strip() for f in CONTENT_FIELDS):
            raise ValueError(f"record {self.id!r} has no content: set one of {', '.join(CONTENT_FIELDS)}")
        return self

    @property
    def input_kind(self) -> InputKind:
        """What a guard reads: document+summary, prompt+response, prompt, or plain text."""
        if self.document is not None and self.summary is not None:
            return "document_summary"
        if self.prompt is not None and self.response is not None:
            return "prompt_response"
        if self.prompt is not None:
            return "prompt"
        return "text"

    @property
    def main_text(self) -> str:
        """The user-side text (prompt, else text, else document/response/summary)."""
        for f in ("prompt", "text", "document", "response", "summary"):
            v = getattr(self, f)
            if v is not None:
                return v
        raise AssertionError("unreachable: validated records have content")
