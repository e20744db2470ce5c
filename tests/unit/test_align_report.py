"""Report: parts merge into one results file; the doc's generated block is
replaced while the hand-written text around it stays."""

import json

from dsa.recipes.align_report import END, START, merge, write_doc


def test_merge_and_doc(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    for name, acc, sr in (("base", 0.4, 0.1), ("dsa_adapter@1", 0.38, 0.9), ("lora_patch@0.5", 0.3, 0.8)):
        (parts / f"{name}.json").write_text(json.dumps(
            {"config": name, "mmlu_cloze_acc": acc, "strongreject_refusal": sr, "n": {"mmlu_cloze_acc": 10}}))
    (parts / "guard_scores.json").write_text("{}")
    result = merge(parts, tmp_path / "alignment.json", {"note": "x"})
    assert list(result["configs"]) == ["base", "lora_patch@0.5", "dsa_adapter@1"]
    assert result["configs"]["dsa_adapter@1"] == {"mmlu_cloze_acc": 0.38, "strongreject_refusal": 0.9,
                                                  "n": {"mmlu_cloze_acc": 10}}
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Title\n\nintro\n\n{START}\nold table\n{END}\n\nhand-written tail\n")
    write_doc(result, doc)
    text = doc.read_text()
    assert "old table" not in text and "intro" in text and "hand-written tail" in text
    assert "| dsa_adapter@1 | – | 0.900 |" in text


def test_targets_are_checked_on_the_best_context_dependent_configuration(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    rows = {"base": {"strongreject_refusal": 0.1, "xstest_safe_refusal": 0.02, "mmlu_cloze_acc": 0.40},
            "context_dependent@step": {"strongreject_refusal": 0.96, "xstest_safe_refusal": 0.08,
                                       "coconot_contrast_refusal": 0.2, "mmlu_cloze_acc": 0.396, "via_runtime": True},
            "context_dependent@linear": {"strongreject_refusal": 0.99, "xstest_safe_refusal": 0.30,
                                         "mmlu_cloze_acc": 0.30, "via_runtime": True}}
    for name, m in rows.items():
        (parts / f"{name}.json").write_text(json.dumps({"config": name, **m, "n": {}}))
    result = merge(parts, tmp_path / "alignment.json", {})
    doc = tmp_path / "doc.md"
    write_doc(result, doc)
    text = doc.read_text()
    assert "checked on `context_dependent@step`" in text
    assert "strongreject_refusal: 0.960, target ≥ 0.95: met" in text
    assert "coconot_contrast_refusal: 0.200, target ≤ 0.1: **missed by 0.100**" in text
    assert "mmlu_cloze_acc: 0.990 × base" in text and "ifeval_prompt_strict: not measured" in text
    assert "| context_dependent@step | yes |" in text
    assert "closest StrongREJECT refusal" not in text  # no static adapter rows to compare with


def test_context_dependent_is_compared_with_the_static_adapter_of_closest_safety(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    rows = {"dsa_adapter@0.5": {"strongreject_refusal": 0.6, "xstest_safe_refusal": 0.3, "benign_identity": 0.5},
            "dsa_adapter@1": {"strongreject_refusal": 0.9, "xstest_safe_refusal": 0.7, "benign_identity": 0.3},
            "context_dependent@step": {"strongreject_refusal": 0.8, "xstest_safe_refusal": 0.5,
                                       "benign_identity": 1.0, "via_runtime": True}}
    for name, m in rows.items():
        (parts / f"{name}.json").write_text(json.dumps({"config": name, **m, "n": {}}))
    doc = tmp_path / "doc.md"
    write_doc(merge(parts, tmp_path / "alignment.json", {}), doc)
    assert ("`context_dependent@step` vs `dsa_adapter@1`: strongreject_refusal 0.800 vs 0.900, "
            "xstest_safe_refusal 0.500 vs 0.700, benign_identity 1.000 vs 0.300.") in doc.read_text()


def test_plots_only_metrics_that_were_measured_and_the_doc_links_them(tmp_path):
    from dsa.recipes.align_report import plot

    parts = tmp_path / "parts"
    parts.mkdir()
    for name, sr, ifeval in (("base", 0.1, 0.17), ("dsa_adapter@1", 0.9, 0.16), ("context_dependent@step", 0.8, 0.17)):
        (parts / f"{name}.json").write_text(json.dumps(
            {"config": name, "strongreject_refusal": sr, "xstest_safe_refusal": 0.3, "ifeval_prompt_strict": ifeval}))
    result = merge(parts, tmp_path / "alignment.json", {})
    docs = tmp_path / "docs"
    docs.mkdir()
    images = plot(result, docs / "img")
    assert sorted(p.name for p in images) == ["align-overrefusal.png", "align-tradeoff-ifeval.png"]
    assert all(p.stat().st_size > 0 for p in images)
    doc = docs / "results.md"
    write_doc(result, doc, images)
    text = doc.read_text()
    assert "![align-tradeoff-ifeval](img/align-tradeoff-ifeval.png)" in text
    assert "align-tradeoff-mmlu" not in text
