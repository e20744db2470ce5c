"""The streaming stop rule of a response guard: calibrated on prefixes, stored in the adapter, applied
by the runtime (issue #23 item 1: a head thresholded on whole answers stopped safe ones at "Hello")."""

import json

import pytest
import torch

from dsa.adapter_io import AdapterIntegrityError, update_adapter_config
from dsa.data.records import Record
from dsa.guards import GuardBank
from dsa.guards.bank import KIND, GuardAdapter
from dsa.guards.kinds import build_head
from dsa.guards.streaming import (
    StreamRule,
    calibrate,
    first_stop,
    operating_point,
    read_answers,
    stop_statistic,
)
from dsa.recipes.guard_stream import calibrate_adapter
from dsa.recipes.guard_train import base_answers
from dsa.runtime import SafetyModel

from .align_tiny import random_response_guard, tiny_base

HEAD = "resp/unsafe"


def _answer(label: int, scores: list[float]) -> dict:
    return {"labels": {HEAD: label}, "n": len(scores), "scores": {HEAD: scores}}


def test_first_stop_needs_min_tokens_and_a_run_of_debounce_flags():
    s = [0.9, 0.9, 0.1, 0.9, 0.9, 0.9]
    assert first_stop(s, StreamRule(0.5)) == 1
    assert first_stop(s, StreamRule(0.5, debounce=2)) == 2
    assert first_stop(s, StreamRule(0.5, min_tokens=2, debounce=2)) == 5  # token 2 alone is a run of 1
    assert first_stop(s, StreamRule(0.5, debounce=4)) is None
    assert first_stop(s, StreamRule(0.95)) is None
    # the statistic is the largest threshold that still stops the answer
    for m, k in ((1, 1), (2, 2), (3, 3), (1, 4)):
        stat = stop_statistic(s, m, k)
        if stat == -float("inf"):
            assert first_stop(s, StreamRule(0.0, m, k)) is None
        else:
            assert first_stop(s, StreamRule(stat, m, k)) is not None
            assert first_stop(s, StreamRule(float(torch.nextafter(torch.tensor(stat, dtype=torch.float64),
                                                                  torch.tensor(2.0, dtype=torch.float64))),
                                            m, k)) is None


def test_calibrate_meets_the_target_fpr_with_the_smallest_threshold():
    # 100 safe answers whose highest prefix score is i / 100; 10 harmful ones reaching 0.5 .. 0.95
    safe = [_answer(0, [0.0, i / 100, 0.0]) for i in range(100)]
    harmful = [_answer(1, [0.0, 0.5 + i / 20, 0.0]) for i in range(10)]
    rule, point, grid = calibrate(safe + harmful, HEAD, target_fpr=0.03, min_tokens=(1,), debounces=(1,))
    assert point["false_stop_rate"] <= 0.03 and point["safe"] == 100 and point["harmful"] == 10
    # three safe answers (0.97, 0.98, 0.99) may stop; the fourth-highest, 0.96, must not
    assert 0.96 < rule.threshold <= 0.97
    assert point == operating_point(safe + harmful, HEAD, rule) and len(grid) == 1
    assert point["detection_rate"] == 0.0  # no harmful answer scores that high: the target wins


def test_calibrate_holds_the_target_in_every_group_of_safe_answers():
    # the labelled safe answers allow a threshold of 0.5; the base's own everyday answers need 0.9
    labelled = [_answer(0, [0.1, 0.4]) for _ in range(50)]
    everyday = [{**_answer(0, [0.85, 0.2]), "group": "base answers"} for _ in range(50)]
    harmful = [_answer(1, [0.1, 0.95]) for _ in range(10)]
    rule, point, _ = calibrate(labelled + everyday + harmful, HEAD, target_fpr=0.03, min_tokens=(1,), debounces=(1,))
    assert 0.85 < rule.threshold <= 0.95
    assert point["false_stop_rate_by_group"] == {"": 0.0, "base answers": 0.0} and point["detection_rate"] == 1.0


def test_calibrate_waits_past_a_safe_answers_opening_when_that_keeps_detection():
    # safe answers spike on their first two tokens ("Hello!"), harmful ones score high later on
    safe = [_answer(0, [0.95, 0.9, 0.3, 0.1, 0.3, 0.1]) for _ in range(50)]
    harmful = [_answer(1, [0.95, 0.9, 0.2, 0.8, 0.85, 0.9]) for _ in range(10)]
    rule, point, _ = calibrate(safe + harmful, HEAD, target_fpr=0.03, debounces=(1,))
    assert point == {**point, "false_stop_rate": 0.0, "detection_rate": 1.0, "tokens_to_stop_median": 4}
    assert rule.min_tokens >= 3 and rule.debounce == 1 and 0.3 < rule.threshold <= 0.8
    assert first_stop(safe[0]["scores"][HEAD], rule) is None


def _guard(base, bias: float, stream: dict | None = None) -> GuardAdapter:
    """A PLR response head whose score is sigmoid(bias) at every token (zero weights)."""
    cfg = {"layers": [1, 2], "poolings": ["mean", "last"]}
    head = build_head("plr", base.d_model, 1, cfg)
    with torch.no_grad():
        head.net.weight.zero_()
        head.net.bias.fill_(bias)
    return GuardAdapter("plr", "resp", "prompt_response", ["unsafe"], cfg, head, [1.0], [0.5], stream=stream)


def _rule(**kw) -> dict:
    return {"rules": [StreamRule(**kw).as_dict()]}


def test_runtime_honours_the_stored_stream_rule():
    base = tiny_base("llama", layers=4)
    prompts = ["hello there", "what is two plus two"]
    # score 0.73 at every token: above the whole-answer threshold 0.5
    old = SafetyModel(base, None, None, response_guards=GuardBank([_guard(base, 1.0)]))
    assert [r.stop_reason for r in old.generate(prompts, alignment=0.0, max_new_tokens=8)] == ["guard"] * 2
    under = SafetyModel(base, None, None, response_guards=GuardBank([_guard(base, 1.0, _rule(threshold=0.8))]))
    for r in under.generate(prompts, alignment=0.0, max_new_tokens=8):
        assert r.stop_reason == "length" and r.n_tokens == 8  # a score under the stream threshold never stops
    late = SafetyModel(base, None, None,
                       response_guards=GuardBank([_guard(base, 1.0, _rule(threshold=0.7, min_tokens=4, debounce=2))]))
    for r in late.generate(prompts, alignment=0.0, max_new_tokens=8):
        # tokens 1-3 are shown (before min_tokens), token 4 is held, token 5 completes the run
        assert r.stop_reason == "guard" and r.n_tokens == 3
    late.response_debounce = 1  # the server's override of every head's debounce
    assert all(r.n_tokens == 3 for r in late.generate(prompts, alignment=0.0, max_new_tokens=8))
    late.response_debounce = 10**9
    assert all(r.stop_reason == "length" for r in late.generate(prompts, alignment=0.0, max_new_tokens=8))


def test_stream_rule_round_trips_and_is_covered_by_the_checksum(tmp_path):
    base = tiny_base("llama", layers=4)
    path = _guard(base, 1.0, _rule(threshold=0.7, min_tokens=4, debounce=2)).save(tmp_path / "g", base.fingerprint)
    bank = GuardBank.load([path], base)
    assert bank.stream_rules == {HEAD: StreamRule(0.7, 4, 2)}
    update_adapter_config(path, {"stream": _rule(threshold=0.9)}, kind=KIND)  # a recalibration re-signs it
    assert GuardBank.load([path], base).stream_rules == {HEAD: StreamRule(0.9, 1, 1)}
    meta = json.loads((path / "adapter.json").read_text())
    meta["config"]["stream"]["rules"][0]["threshold"] = 0.9999  # an edit by hand
    (path / "adapter.json").write_text(json.dumps(meta))
    with pytest.raises(AdapterIntegrityError):
        GuardBank.load([path], base)


def test_calibrate_adapter_reads_answers_as_the_runtime_and_stores_the_rule(tmp_path):
    base = tiny_base("llama", layers=4)
    path = random_response_guard(base, [1, 2]).save(tmp_path / "g", base.fingerprint)
    records = [Record(id=str(i), source="t", prompt=f"question {i}", response="some answer " * (1 + i % 4),
                      label=int(i % 3 == 0)) for i in range(24)]
    stream = calibrate_adapter(base, path, records, target_fpr=0.1)
    bank = GuardBank.load([path], base)
    rule = bank.stream_rules[HEAD]
    assert stream["rules"] == [rule.as_dict()] and stream["val"][HEAD]["false_stop_rate"] <= 0.1
    # the answers it read are the runtime's: prompt prefill, then one update per response token
    answers = read_answers(base, bank, records)
    assert operating_point(answers, HEAD, rule) == stream["val"][HEAD]
    r = records[1]
    ids = base.tokenizer(r.response)["input_ids"]
    sm = SafetyModel(base, None, None, response_guards=bank)
    batch = sm.prefill([r.prompt], alignment=0.0, max_new_tokens=len(ids))
    batch.logits = torch.full_like(batch.logits, -1e9)
    batch.logits[0, ids[0]] = 0  # decode the answer's first token
    sm.decode_step(batch)
    assert batch.rows[0].response[HEAD] == pytest.approx(read_answers(base, bank, [r])[0]["scores"][HEAD][0], abs=1e-5)


def test_base_answers_are_cached_safe_records_and_join_a_split_after_its_cap():
    from dsa.data.tasks import GuardTask
    from dsa.guards.featurize import task_splits

    base = tiny_base("llama", layers=4)
    first = base_answers(base, ["hello there", "what is two plus two"], max_new_tokens=4)
    assert [r.label for r in first] == [0, 0] and all(r.response for r in first)
    from dsa.base import cache_dir

    (cached,) = (cache_dir() / "base_answers").glob("*.json")
    cached.write_text(json.dumps(["one", "two"]))  # a second call reads the cache, not the model
    assert [r.response for r in base_answers(base, ["hello there", "what is two plus two"], max_new_tokens=4)] == \
        ["one", "two"]
    task = GuardTask("resp", "prompt_response", ["unsafe"],
                     train=[Record(id=f"t{i}", source="t", prompt=f"q{i}", response="a", label=i % 2)
                            for i in range(6)])
    _, _, splits = task_splits(base, task, train_cap=4, extra={"train": first})
    assert len(splits["train"].texts) == 6 and splits["train"].labels[-2:].tolist() == [[0.0], [0.0]]
