"""Record validation, label parsing and text normalisation."""

import pytest
from pydantic import ValidationError

from dsa.data import Record, normalise_text, parse_label
from dsa.data.records import content_id, unique_ids


def test_record_needs_content():
    with pytest.raises(ValidationError, match="no content"):
        Record(id="x", source="s", label=1)
    with pytest.raises(ValidationError, match="no content"):
        Record(id="x", source="s", text="   ")


@pytest.mark.parametrize("label", [2, -1])
def test_record_label_is_binary(label):
    with pytest.raises(ValidationError, match="label must be 0 or 1"):
        Record(id="x", source="s", text="hi", label=label)


def test_record_labels_allow_unknown_but_not_other_values():
    r = Record(id="x", source="s", text="hi", labels={"S": 1, "H": None})
    assert r.labels == {"S": 1, "H": None}
    with pytest.raises(ValidationError, match="labels must be 0, 1 or None"):
        Record(id="x", source="s", text="hi", labels={"S": 3})


def test_record_split_is_checked_and_records_are_frozen():
    with pytest.raises(ValidationError):
        Record(id="x", source="s", text="hi", split="dev")
    r = Record(id="x", source="s", text="hi", split="eval")
    with pytest.raises(ValidationError):
        r.split = "train"
    assert r.model_copy(update={"split": "train"}).split == "train"


@pytest.mark.parametrize(("fields", "kind"), [
    ({"text": "t"}, "text"),
    ({"prompt": "p"}, "prompt"),
    ({"prompt": "p", "response": "r"}, "prompt_response"),
    ({"document": "d", "summary": "s"}, "document_summary"),
    ({"response": "r"}, "text"),
])
def test_input_kind(fields, kind):
    assert Record(id="x", source="s", **fields).input_kind == kind


@pytest.mark.parametrize(("value", "expected"), [
    (1, 1), (0, 0), (True, 1), (False, 0), (1.0, 1), ("1", 1), ("0.0", 0), ("true", 1), ("False", 0),
    ("unsafe", 1), ("safe", 0), ("harmful", 1), ("unharmful", 0), (" Unsafe ", 1),
    ("", None), (None, None), (float("nan"), None),
])
def test_parse_label(value, expected):
    assert parse_label(value) == expected


@pytest.mark.parametrize("value", [2, "maybe", 0.5])
def test_parse_label_rejects(value):
    with pytest.raises(ValueError):
        parse_label(value)


def test_normalise_and_ids():
    assert normalise_text("  Hello\n\tWORLD  ") == "hello world"
    assert content_id("s", "Hello  world") == content_id("s", "hello world")
    assert unique_ids(["a", "b", "a", "a"]) == ["a", "b", "a~2", "a~3"]
