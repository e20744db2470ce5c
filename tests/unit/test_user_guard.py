"""A guard from a user's labelled file: seeded splits, the shared feature store (a second run
extracts nothing), clear errors, and the adapter loads like a shipped guard."""

import csv
import json

import pytest

from dsa.data.records import DataError
from dsa.guards import GuardBank, classify
from dsa.guards import featurize as fz
from dsa.guards.config import GuardTrainConfig
from dsa.guards.user import user_task
from dsa.recipes.guard_train import train_guard

BAD = ["you are a stupid worthless idiot", "i hate you and your kind", "go away you disgusting pig",
       "nobody wants you here loser"]
GOOD = ["what a lovely sunny day", "thanks for the help with my homework", "the recipe needs two eggs",
        "see you at the library tomorrow"]


@pytest.fixture
def user_csv(tmp_path):
    path = tmp_path / "comments.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["comment", "kind", "extra"])
        for i in range(40):
            w.writerow([f"{BAD[i % 4]} #{i}", "hate", i])
            w.writerow([f"{GOOD[i % 4]} #{i}", "neutral", i])
        w.writerow(["no label on this one", "", 0])  # an unlabelled row is dropped
    return path


@pytest.fixture(scope="module")
def base():
    from dsa.base import from_model
    from tests.tiny import tiny_model, tiny_tokenizer

    return from_model(tiny_model("llama"), tiny_tokenizer(), name="tiny-llama")


def test_user_task_splits_and_labels(user_csv):
    t = user_task(user_csv, {"text": "comment", "label": "kind"}, positive="hate")
    rows = t.train + t.val + t.test
    assert len(rows) == 80 and t.name == "comments" and t.mode == "prompt" and t.heads == ["unsafe"]
    assert sum(r.label for r in rows) == 40 and t.train and t.val and t.test
    sample = user_task(user_csv, {"text": "comment", "label": "kind"}, positive="hate", limit=60)
    assert len(sample.train + sample.val + sample.test) == 60 and sample.val and sample.test  # not all "train"
    again = user_task(user_csv, {"text": "comment", "label": "kind"}, positive="hate")
    assert [r.id for r in again.test] == [r.id for r in t.test]  # seeded


def test_user_task_errors_are_specific(user_csv):
    with pytest.raises(DataError, match="--positive 'toxic' matched none"):
        user_task(user_csv, {"text": "comment", "label": "kind"}, positive="toxic")
    with pytest.raises(DataError, match="missing column 'body'"):
        user_task(user_csv, {"text": "body", "label": "kind"}, positive="hate")
    with pytest.raises(DataError, match="cannot read label 'hate'"):
        user_task(user_csv, {"text": "comment", "label": "kind"})
    with pytest.raises(ValueError, match="does not exist"):
        GuardTrainConfig(data=str(user_csv) + ".missing")


def test_train_from_file_second_run_extracts_nothing_and_adapter_loads(user_csv, base, tmp_path, monkeypatch):
    monkeypatch.setenv("DSA_CACHE", str(tmp_path / "cache"))
    cfg = GuardTrainConfig(data=str(user_csv), map={"text": "comment", "label": "kind"}, positive="hate",
                           layer_sets=[["0.5", -1]], out=str(tmp_path / "guard"))
    assert cfg.task == "comments"
    first = train_guard(base, cfg)
    assert first.info["data"]["rows"]["train"] > 40 and 0 <= first.info["test_auc"] <= 1
    calls = []
    real = fz._forward_unit
    monkeypatch.setattr(fz, "_forward_unit", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = train_guard(base, cfg)
    assert calls == [] and second.info["test_auc"] == first.info["test_auc"]
    second.save(cfg.out, base.fingerprint, base.name)
    bank = GuardBank.load([cfg.out], base)
    assert bank.heads == ["comments/unsafe"]
    (res,) = classify(base, bank, ["hello there"])
    assert 0.0 <= res["scores"]["comments/unsafe"] <= 1.0


# --- several label columns -> one head per column ------------------------------------------------

def _multi_rows(n=40):
    """toxic / insult labels; every 7th row has no insult label (unlabelled for that head only)."""
    rows = []
    for i in range(n):
        rows.append({"comment": f"{BAD[i % 4]} #{i}", "toxic": 1, "insult": "" if i % 7 == 0 else i % 2,
                     "kind": "hate"})
        rows.append({"comment": f"{GOOD[i % 4]} #{i}", "toxic": 0, "insult": 0, "kind": "neutral"})
    return rows


def _write(rows, path):
    if path.suffix == ".csv":
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({k: (None if v == "" else v) for k, v in r.items()}) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist([{k: (None if v == "" else v) for k, v in r.items()} for r in rows]), path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_multi_label_task_one_head_per_column(tmp_path, suffix):
    path = _write(_multi_rows(), tmp_path / f"mine{suffix}")
    t = user_task(path, {"text": "comment", "label": "toxic,insult"})
    rows = t.train + t.val + t.test
    assert t.heads == ["toxic", "insult"] and len(rows) == 80 and all(r.label is None for r in rows)
    assert sum(r.labels["insult"] is None for r in rows) == 6  # empty cells: unlabelled for that head only
    assert all(r.labels["toxic"] in (0, 1) for r in rows)
    assert sum(r.labels["toxic"] for r in rows) == 40
    as_list = user_task(path, {"text": "comment", "label": ["toxic", "insult"]})  # a YAML config's list
    assert as_list.heads == t.heads and [r.id for r in as_list.test] == [r.id for r in t.test]


def test_multi_label_with_positive_reads_class_names(tmp_path):
    rows = [r | {"kind2": r["kind"] if i % 3 else "hate"} for i, r in enumerate(_multi_rows())]
    t = user_task(_write(rows, tmp_path / "mine.csv"), {"text": "comment", "label": "kind,kind2"}, positive="hate")
    recs = t.train + t.val + t.test
    assert t.heads == ["kind", "kind2"] and sum(r.labels["kind"] for r in recs) == 40
    assert sum(r.labels["kind2"] for r in recs) > 40


def test_multi_label_errors_are_specific(tmp_path):
    rows = [r | {"never": 0, "bad name": r["toxic"]} for r in _multi_rows()]
    path = _write(rows, tmp_path / "mine.csv")
    with pytest.raises(DataError, match="missing column 'threat'"):
        user_task(path, {"text": "comment", "label": "toxic,threat"})
    with pytest.raises(DataError, match=r"column 'never': a guard head needs both classes.*label 1: 0 rows"):
        user_task(path, {"text": "comment", "label": "toxic,never"})
    with pytest.raises(DataError, match=r"field 'kind': cannot read label 'hate'.*give --positive CLASS"):
        user_task(path, {"text": "comment", "label": "toxic,kind"})
    with pytest.raises(DataError, match="'bad name' cannot name a guard head"):
        user_task(path, {"text": "comment", "label": "toxic,bad name"})
    with pytest.raises(DataError, match="named twice"):
        user_task(path, {"text": "comment", "label": "toxic,toxic"})


def test_multi_label_cli_round_trip_score_and_safety_model(tmp_path, monkeypatch, capsys):
    from dsa.cli import main
    from dsa.runtime import SafetyModel
    from tests.tiny import tiny_model, tiny_tokenizer

    monkeypatch.setenv("DSA_CACHE", str(tmp_path / "cache"))
    mdir = tmp_path / "m"
    tiny_model("llama").save_pretrained(mdir)
    tiny_tokenizer().save_pretrained(mdir)
    data = _write(_multi_rows(), tmp_path / "mine.csv")
    out = tmp_path / "guard"
    assert main(["guard", "train", "layer_sets=[[-1]]", "C_grid=[0.1]", "--data", str(data), "--map", "text=comment",
                 "--map", "label=toxic,insult", "--base", str(mdir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mine/toxic: test AUC" in printed and "mine/insult: test AUC" in printed and "TPR at 1% FPR" in printed
    assert (out / "plots" / "roc.png").stat().st_size > 0 and (out / "plots" / "pr.png").stat().st_size > 0
    info = json.loads((out / "adapter.json").read_text())["info"]
    assert set(info["heads"]) == {"toxic", "insult"}
    for r in info["heads"].values():
        assert 0 <= r["test_auc"] <= 1 and 0 <= r["tpr_at_1pct_fpr"] <= 1 and r["n_test"] > 0
    assert info["heads"]["insult"]["n_test"] <= info["heads"]["toxic"]["n_test"]  # its empty cells left out

    assert main(["guard", "score", str(out), "--base", str(mdir), "--text", "hello there", "--text", "you idiot"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and all(set(r["scores"]) == {"mine/toxic", "mine/insult"} for r in lines)
    assert all(set(r["flags"]) == {"mine/toxic", "mine/insult"} for r in lines)

    sm = SafetyModel.load(str(mdir), guards=[str(out)])  # classify only: no policy head needed
    assert sm.policy_head is None
    res = sm.classify(["hello there", "you idiot"])
    assert [r["scores"] for r in res] == [r["scores"] for r in lines]  # the same adapter, the same numbers
    assert all(set(r["flags"]) == {"mine/toxic", "mine/insult"} for r in res)

    main(["guard", "train", "layer_sets=[[-1]]", "C_grid=[0.1]", "--data", str(data), "--map", "text=comment",
          "--map", "label=toxic,insult", "--base", str(mdir), "--out", str(tmp_path / "g2"), "--no-plots"])
    assert not (tmp_path / "g2" / "plots").exists()


def test_head_report_reads_its_numbers_from_the_scores():
    import numpy as np

    from dsa.guards.user_report import head_report, tpr_at_fpr

    # 100 negatives in [-5, 0]; half the positives above all of them, half below; 3 unlabelled rows
    y = np.r_[np.zeros(100), np.ones(10), np.full(3, np.nan)]
    s = np.r_[np.linspace(-5, 0, 100), np.full(5, 3.0), np.full(5, -10.0), np.full(3, 9.0)]
    r = head_report(y, s, temperature=1.0, threshold=0.9)  # sigmoid(3) = 0.95 >= 0.9 > sigmoid(0)
    assert r["test_auc"] == pytest.approx(0.5) and r["tpr_at_1pct_fpr"] == pytest.approx(0.5)
    assert r["tpr_at_threshold"] == 0.5 and r["fpr_at_threshold"] == 0.0
    assert r["n_test"] == 110 and r["positives"] == 10
    assert tpr_at_fpr(y, -s) == 0.5  # reversed: the low positives come first, before any negative
    assert np.isnan(tpr_at_fpr(np.zeros(4), np.arange(4.0)))  # one class: no curve
