"""A guard from a user's labelled file: seeded splits, the shared feature store (a second run
extracts nothing), clear errors, and the adapter loads like a shipped guard."""

import csv

import pytest

from dsa.data.records import DataError
from dsa.guards import GuardBank, classify
from dsa.guards import featurize as fz
from dsa.guards.config import GuardTrainConfig
from dsa.guards.evaluate import train_guard
from dsa.guards.user import user_task

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
