"""Evaluation parts: metrics of one configuration merge across stages, but never across weights."""

from __future__ import annotations

import json

from dsa.eval import alignment


def test_parts_merge_stages_of_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(alignment, "PARTS", tmp_path)
    w = {"adapters/align/dsa_adapter/adapter.safetensors": "aa"}
    alignment.update_part("dsa_adapter@1", {"xstest_safe_refusal": 0.7}, {"xstest_safe_refusal": 250},
                          {"weights_sha256": w})
    # the same file content under another path (a copy) is the same weights
    alignment.update_part("dsa_adapter@1", {"mmlu_cloze_acc": 0.23}, {"mmlu_cloze_acc": 100},
                          {"weights_sha256": {"runs/copy/adapter.safetensors": "aa"}})
    part = json.loads((tmp_path / "dsa_adapter_at_1.json").read_text())
    assert part["xstest_safe_refusal"] == 0.7 and part["mmlu_cloze_acc"] == 0.23
    assert part["n"] == {"xstest_safe_refusal": 250, "mmlu_cloze_acc": 100}


def test_a_retrained_adapter_drops_the_old_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(alignment, "PARTS", tmp_path)
    alignment.update_part("context_dependent@step", {"mmlu_cloze_acc": 0.22}, {"mmlu_cloze_acc": 100},
                          {"weights_sha256": {"a.safetensors": "old"}})
    alignment.update_part("context_dependent@step", {"xstest_safe_refusal": 0.5}, {"xstest_safe_refusal": 250},
                          {"weights_sha256": {"a.safetensors": "new"}})
    part = json.loads((tmp_path / "context_dependent_at_step.json").read_text())
    assert "mmlu_cloze_acc" not in part and part["n"] == {"xstest_safe_refusal": 250}
    assert part["weights_sha256"] == {"a.safetensors": "new"}
