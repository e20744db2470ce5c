"""Evaluation parts: metrics of one configuration merge across stages, but never across weights."""

from __future__ import annotations

import json

from dsa.recipes import align_eval


def test_parts_merge_stages_of_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(align_eval, "PARTS", tmp_path)
    w = {"adapters/align/dsa_adapter/adapter.safetensors": "aa"}
    align_eval.update_part("dsa_adapter@1", {"xstest_safe_refusal": 0.7}, {"xstest_safe_refusal": 250},
                          {"weights_sha256": w})
    # the same file content under another path (a copy) is the same weights
    align_eval.update_part("dsa_adapter@1", {"mmlu_cloze_acc": 0.23}, {"mmlu_cloze_acc": 100},
                          {"weights_sha256": {"runs/copy/adapter.safetensors": "aa"}})
    part = json.loads((tmp_path / "dsa_adapter_at_1.json").read_text())
    assert part["xstest_safe_refusal"] == 0.7 and part["mmlu_cloze_acc"] == 0.23
    assert part["n"] == {"xstest_safe_refusal": 250, "mmlu_cloze_acc": 100}


def test_a_retrained_adapter_drops_the_old_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(align_eval, "PARTS", tmp_path)
    align_eval.update_part("context_dependent@step", {"mmlu_cloze_acc": 0.22}, {"mmlu_cloze_acc": 100},
                          {"weights_sha256": {"a.safetensors": "old"}})
    align_eval.update_part("context_dependent@step", {"xstest_safe_refusal": 0.5}, {"xstest_safe_refusal": 250},
                          {"weights_sha256": {"a.safetensors": "new"}})
    part = json.loads((tmp_path / "context_dependent_at_step.json").read_text())
    assert "mmlu_cloze_acc" not in part and part["n"] == {"xstest_safe_refusal": 250}
    assert part["weights_sha256"] == {"a.safetensors": "new"}


def _evaluator(tmp_path, monkeypatch):
    """An Evaluator on tiny parts (no checkpoint loading): a guard bank and an alignment adapter."""
    from tests.unit.server_tiny import tiny_model

    monkeypatch.setattr(align_eval, "PARTS", tmp_path)
    sm = tiny_model()
    ev = align_eval.Evaluator.__new__(align_eval.Evaluator)
    ev.cfg = type("Cfg", (), {"guards": [], "dsa_adapter": None})()
    ev.base, ev._adapter, ev._bank, ev._patch, ev._ft, ev._dpo = sm.base, sm.adapter, sm.guards, None, None, None
    return ev


def test_cached_answers_are_keyed_on_calibration_not_only_weight_files(tmp_path, monkeypatch):
    ev = _evaluator(tmp_path, monkeypatch)
    ev.cfg.max_new_tokens = 64
    name = "context_dependent@step"
    before, flags_before = ev.answer_file(name, "xstest_safe"), align_eval._cache_file(
        "response_flags", ev.base.fingerprint, ev._bank)
    adapter_only = ev.artifacts_key("dsa_adapter@1")
    ev._bank.adapters[0].thresholds[0] = 0.9999  # recalibrated: same weights, other λs and answers
    assert ev.answer_file(name, "xstest_safe") != before
    assert align_eval._cache_file("response_flags", ev.base.fingerprint, ev._bank) != flags_before
    assert ev.artifacts_key("dsa_adapter@1") == adapter_only  # a fixed λ does not read the guard
    assert ev.artifacts_key("dsa_adapter@1") != ev.artifacts_key("dsa_adapter@0.5")


def test_a_recalibrated_guard_drops_the_old_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(align_eval, "PARTS", tmp_path)
    w = {"a.safetensors": "same"}
    align_eval.update_part("context_dependent@step", {"mmlu_cloze_acc": 0.22}, {"mmlu_cloze_acc": 100},
                          {"weights_sha256": w, "config_key": "k-old"})
    align_eval.update_part("context_dependent@step", {"xstest_safe_refusal": 0.5}, {"xstest_safe_refusal": 250},
                          {"weights_sha256": w, "config_key": "k-new"})
    part = json.loads((tmp_path / "context_dependent_at_step.json").read_text())
    assert "mmlu_cloze_acc" not in part and part["config_key"] == "k-new"


def test_parts_are_restored_from_results_only_where_nothing_changed(tmp_path, monkeypatch):
    ev = _evaluator(tmp_path / "parts", monkeypatch)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter.safetensors").write_bytes(b"weights")
    ev.cfg.dsa_adapter, ev.cfg.guards = str(adapter), []
    ev.cfg.lora_patch = ev.cfg.dsa_dpo = ev.cfg.full_ft = ""
    now = ev.weights_sha256("dsa_adapter@1")
    results = tmp_path / "alignment.json"
    results.write_text(json.dumps({"configs": {
        "base": {"weights_sha256": {}, "n": {"x": 1}, "x": 0.1},
        "dsa_adapter@1": {"weights_sha256": now, "n": {"x": 1}, "x": 0.9},
        "dsa_adapter@0.5": {"weights_sha256": {str(adapter / "adapter.safetensors"): "retrained"}, "n": {}},
        "context_dependent@step": {"weights_sha256": now, "n": {}},  # reads a guard, no key recorded
        "context_dependent@linear": {"weights_sha256": now, "n": {}, "config_key": "other-calibration"},
    }}))
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "base.json").write_text(json.dumps({"config": "base", "n": {}, "x": 0.2}))
    assert ev.restore_parts(results) == ["dsa_adapter@1"]
    part = json.loads((tmp_path / "parts" / "dsa_adapter_at_1.json").read_text())
    assert part["config"] == "dsa_adapter@1" and part["x"] == 0.9
    assert json.loads((tmp_path / "parts" / "base.json").read_text())["x"] == 0.2  # a newer part is kept
    assert ev.restore_parts(tmp_path / "missing.json") == []
