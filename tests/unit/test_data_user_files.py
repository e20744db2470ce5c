"""User files: CSV / JSONL / JSON / Parquet, column mappings, presets and error messages."""

import json

import pytest

from dsa.data import DataError, load_user_file


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_default_columns_and_meta(tmp_path):
    p = write(tmp_path / "data.csv", 'text,label,extra\nhello,1,a\n"multi\nline",safe,b\n')
    recs = load_user_file(p)
    assert [(r.text, r.label, r.meta) for r in recs] == [("hello", 1, {"extra": "a"}),
                                                          ("multi\nline", 0, {"extra": "b"})]
    assert {r.source for r in recs} == {"data"} and len({r.id for r in recs}) == 2


def test_csv_missing_mapped_column_names_file_line_and_column(tmp_path):
    p = write(tmp_path / "data.csv", "text,foo\nhello,1\n")
    with pytest.raises(DataError, match=r"data\.csv: line 1: missing column 'label'.*columns are: text, foo"):
        load_user_file(p, mapping={"text": "text", "label": "label"})


def test_csv_bad_label_names_line_and_field(tmp_path):
    # the second record starts on line 3 because the first spans two lines
    p = write(tmp_path / "data.csv", 'text,label\n"a\nb",1\nc,maybe\n')
    with pytest.raises(DataError, match=r"data\.csv: line 4: field 'label'.*maybe"):
        load_user_file(p)


def test_malformed_jsonl_names_line(tmp_path):
    p = write(tmp_path / "x.jsonl", "\n".join(['{"text": "a"}'] * 6 + ['{"text": "b",']) + "\n")
    with pytest.raises(DataError, match=r"x\.jsonl: line 7: invalid JSON"):
        load_user_file(p)


def test_jsonl_row_missing_mapped_field(tmp_path):
    p = write(tmp_path / "x.jsonl", '{"q": "a", "y": 1}\n{"q": "b"}\n')
    with pytest.raises(DataError, match=r"x\.jsonl: line 2: missing column 'y'"):
        load_user_file(p, mapping={"prompt": "q", "label": "y"})


def test_mapping_and_json_list(tmp_path):
    rows = [{"question": "how?", "answer": "so.", "is_bad": "harmful", "uid": 7}]
    p = write(tmp_path / "qa.json", json.dumps(rows))
    (r,) = load_user_file(p, mapping={"prompt": "question", "response": "answer", "label": "is_bad", "id": "uid"},
                          source="mine")
    assert (r.id, r.source, r.prompt, r.response, r.label, r.input_kind) == \
        ("mine:7", "mine", "how?", "so.", 1, "prompt_response")


def test_no_content_column_is_an_error(tmp_path):
    p = write(tmp_path / "d.csv", "foo,label\nx,1\n")
    with pytest.raises(DataError, match="no content column"):
        load_user_file(p)


def test_unknown_extension(tmp_path):
    with pytest.raises(DataError, match="unsupported file type"):
        load_user_file(write(tmp_path / "d.xlsx", ""))


def test_parquet_beavertails_preset_detected(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"prompt": ["p1", "p2"], "response": ["r1", "r2"], "is_safe": [True, False],
                      "category": [{"violence": False}, {"violence": True}]})
    pq.write_table(table, tmp_path / "bt.parquet")
    recs = load_user_file(tmp_path / "bt.parquet")  # columns look like BeaverTails
    assert [r.label for r in recs] == [0, 1]
    assert recs[1].labels == {"violence": 1}


def test_aegis2_and_wildguardmix_presets(tmp_path):
    p = write(tmp_path / "aegis.jsonl",
              '{"prompt": "a", "response": null, "prompt_label": "unsafe", "response_label": null}\n'
              '{"prompt": "b", "response": "ok", "prompt_label": "unsafe", "response_label": "safe"}\n')
    a = load_user_file(p, preset="aegis2")
    assert [(r.label, r.input_kind) for r in a] == [(1, "prompt"), (0, "prompt_response")]
    p = write(tmp_path / "wgm.csv", "prompt,response,prompt_harm_label,response_harm_label,response_refusal_label\n"
                                    "x,y,harmful,unharmful,refusal\n")
    (w,) = load_user_file(p)
    assert w.label == 1 and w.labels == {"prompt_harm": 1, "response_harm": 0, "response_refusal": 1}


def test_unknown_preset(tmp_path):
    with pytest.raises(DataError, match="unknown preset"):
        load_user_file(write(tmp_path / "d.csv", "text\nx\n"), preset="nope")


def test_several_label_columns_fill_labels_with_none_for_empty_cells(tmp_path):
    p = write(tmp_path / "data.csv", "text,toxic,insult,extra\nhello,0,0,a\nyou idiot,1,,b\n")
    recs = load_user_file(p, mapping={"text": "text", "label": "toxic, insult"})
    assert [(r.label, r.labels, r.meta) for r in recs] == [(None, {"toxic": 0, "insult": 0}, {"extra": "a"}),
                                                            (None, {"toxic": 1, "insult": None}, {"extra": "b"})]
    with pytest.raises(DataError, match=r"data\.csv: line 1: missing column 'threat' for field 'label'"):
        load_user_file(p, mapping={"text": "text", "label": "toxic,threat"})
    bad = write(tmp_path / "bad.csv", "text,toxic,insult\nhello,0,0\nyou idiot,1,maybe\n")
    with pytest.raises(DataError, match=r"bad\.csv: line 3: field 'insult'.*maybe"):
        load_user_file(bad, mapping={"text": "text", "label": "toxic,insult"})


def test_parquet_without_pyarrow_says_so(tmp_path, monkeypatch):
    import sys

    p = write(tmp_path / "data.parquet", "not really parquet")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as if not installed
    with pytest.raises(DataError, match=r"data\.parquet: reading Parquet needs pyarrow.*CSV / JSONL"):
        load_user_file(p)
