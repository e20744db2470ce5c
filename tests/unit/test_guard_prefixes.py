"""Answer-prefix training rows of a response guard (issue #23 item 1 follow-up: a head trained on whole
answers only scored harmful answer starts near zero, so a stream ran ~100 tokens before a stop)."""

import pytest
import torch

from dsa.data.records import Record
from dsa.guards import GuardBank
from dsa.guards.config import GuardTrainConfig
from dsa.guards.featurize import SplitData
from dsa.guards.kinds.plr import PLR
from dsa.guards.prefixes import answer_cuts, prefix_views, with_prefixes
from dsa.guards.streaming import read_answers

from .align_tiny import random_response_guard, tiny_base

HEAD = "resp/unsafe"


def _records(n: int = 6) -> list[Record]:
    return [Record(id=str(i), source="t", prompt=f"question {i}", response="some answer words " * (2 + i),
                   label=int(i % 2)) for i in range(n)]


def test_answer_cuts_keep_short_harmful_starts_out_and_are_seeded():
    assert answer_cuts(40, 0, [8, 16, 32, 64], 0, 16, "a") == [8, 16, 32]  # only cuts inside the answer
    assert answer_cuts(40, 1, [8, 16, 32, 64], 0, 16, "a") == [16, 32]  # harmful: from 16 tokens on
    r = answer_cuts(100, 0, [], 3, 0, "a")
    assert r == answer_cuts(100, 0, [], 3, 0, "a") and all(1 <= c < 100 for c in r) and 1 <= len(r) <= 3
    assert answer_cuts(1, 0, [8], 2, 0, "a") == []


def test_prefix_rows_are_the_features_the_stream_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("DSA_CACHE", str(tmp_path))
    base = tiny_base("llama", layers=4)
    adapter = random_response_guard(base, [1, 3])
    head, cfg = adapter.head, adapter.cfg
    records = _records()
    answers = read_answers(base, GuardBank([adapter]), records)
    cuts = [[1, 3, a["n"]] for a in answers]
    for cached in (False, True):  # computed, then read back from the row cache
        views = prefix_views(base, records, cuts)
        x = head.features(PLR().cached_input(views, list(range(views.mean.shape[0])), cfg))
        got = torch.sigmoid(head.forward_features(x)[:, 0]).detach()
        want = torch.tensor([a["scores"][HEAD][c - 1] for a, cs in zip(answers, cuts, strict=True) for c in cs])
        assert torch.allclose(got, want, atol=2e-3), (cached, got, want)
    assert list((tmp_path / "prefix_features").rglob("rows-*.json"))
    # a second choice of cuts computes only its new rows
    more = prefix_views(base, records[:1], [[2, 1]])
    assert more.mean.shape[0] == 2 and torch.equal(more.mean[1], views.mean[0])


def test_with_prefixes_adds_rows_labelled_as_their_answer(tmp_path, monkeypatch):
    monkeypatch.setenv("DSA_CACHE", str(tmp_path))
    base = tiny_base("llama", layers=4)
    records = _records()
    whole = prefix_views(base, records, [[1] for _ in records])  # stands in for the store's whole-text rows
    labels = torch.tensor([[float(r.label)] for r in records])
    split = SplitData([f"t{i}" for i in range(len(records))], labels, [r.prompt for r in records], whole, records)
    cfg = GuardTrainConfig(task="response_harm", prefix_cuts=[2, 4, 8], prefix_min_harmful=4)
    grown, info = with_prefixes(base, split, cfg)
    n = [len(base.tokenizer(r.response, add_special_tokens=False)["input_ids"]) for r in records]
    want = [[c for c in (2, 4, 8) if c < k and (r.label == 0 or c >= 4)] for r, k in zip(records, n, strict=True)]
    assert info == {"rows": sum(map(len, want)),
                    "harmful": sum(len(w) for w, r in zip(want, records, strict=True) if r.label)}
    assert grown.feats.mean.shape[0] == len(grown.texts) == len(records) + info["rows"]
    assert grown.labels[len(records):, 0].tolist() == [float(r.label) for r, w in zip(records, want, strict=True)
                                                       for _ in w]
    assert torch.equal(grown.feats.mean[:len(records)], whole.mean)  # the whole answers come first, unchanged


def test_prefix_options_are_off_by_default_and_validated():
    cfg = GuardTrainConfig(task="response_harm")
    assert cfg.prefix_cuts == [] and cfg.prefix_random == 0
    for bad in ({"prefix_cuts": [0]}, {"prefix_random": -1}, {"prefix_min_harmful": -2}):
        with pytest.raises(ValueError):
            GuardTrainConfig(task="response_harm", **bad)
    shipped = GuardTrainConfig.from_yaml("configs/guard-response_harm.yaml")
    assert shipped.prefix_cuts and shipped.prefix_min_harmful  # the streaming guard trains on answer starts
