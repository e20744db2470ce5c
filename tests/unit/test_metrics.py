"""dsa.metrics against sklearn on known inputs."""

import numpy as np
import pytest
from sklearn import metrics as M

from dsa.metrics import auprc, binary_report, ece, fpr_at_tpr, pr_curve, roc_auc, roc_curve


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = np.round(rng.normal(size=400) + 1.2 * y, 1)  # rounding makes ties
    return y, s


def test_auc_and_ap_match_sklearn(scored):
    y, s = scored
    assert roc_auc(y, s) == pytest.approx(M.roc_auc_score(y, s), abs=1e-12)
    assert auprc(y, s) == pytest.approx(M.average_precision_score(y, s), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, s)
    f2, t2, _ = M.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)
    precision, recall, _ = pr_curve(y, s)
    assert recall[0] == 0 and recall[-1] == 1 and len(precision) == len(recall)


def test_fpr_at_tpr_and_edge_cases(scored):
    y, s = scored
    fpr, tpr, _ = M.roc_curve(y, s)
    assert fpr_at_tpr(y, s, 0.95) == pytest.approx(fpr[np.argmax(tpr >= 0.95)])
    assert fpr_at_tpr([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert np.isnan(roc_auc([1, 1], [0.1, 0.2]))
    assert roc_auc([0, 1, np.nan], [0.1, 0.9, 0.5]) == 1.0  # NaN labels dropped


def test_ece_known_values():
    assert ece([0, 1, 0, 1], [0.0, 1.0, 0.0, 1.0]) == 0.0
    assert ece([0, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    # two bins: |0.5 - 0.1| and |0.5 - 0.9|, each with half the mass
    assert ece([0, 1, 0, 1], [0.1, 0.1, 0.9, 0.9], n_bins=10) == pytest.approx(0.4)
    rep = binary_report([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.3], [0.1, 0.9, 0.8, 0.3])
    assert set(rep) == {"auc", "auprc", "fpr_at_95tpr", "ece", "n_test"} and rep["n_test"] == 4


def test_results_doc_from_a_results_dict(tmp_path):
    from dsa.guards.doc import write_doc
    from dsa.recipes.guard_train import report_from_logits

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (200, 1)).astype(float)
    z = rng.normal(size=(200, 1)) + 2 * y
    rep = report_from_logits(y, z, y, z)
    assert rep["auc"] == pytest.approx(M.roc_auc_score(y[:, 0], z[:, 0]))
    results = {"command": "dsa guard eval --all", "base": "tiny", "tasks": {"toxigen": {"dsa_plr": rep}},
               "dsa_heads": {"toxigen": {"dsa_plr": {"params": 10, "flops_fraction_64": 1e-5,
                                                     "flops_fraction_256": 1e-5, "val_auc": 0.9,
                                                     "head": {"layers": [1], "poolings": ["mean"]}}}},
               "notes": {"missing": "nothing"}}
    text = write_doc(results, tmp_path / "r.md").read_text()
    assert f"{rep['auc']:.3f}" in text and "dsa guard eval --all" in text and "nothing" in text


def test_results_doc_notes_zero_shot_below_chance_only_when_it_is():
    from dsa.guards.doc import zero_shot_note

    rows = {"toxigen": {"zero_shot": {"auc": 0.41}}, "xstest": {"zero_shot": {"auc": 0.58}}}
    note = "\n".join(zero_shot_note({"tasks": rows}))
    assert "toxigen 0.410" in note and "xstest" not in note
    assert zero_shot_note({"tasks": {"xstest": rows["xstest"]}}) == []


def test_missed_target_notes_quote_the_results_not_literals():
    from dsa.guards.doc import ORDER, target_notes

    def row(auc, n):
        return {"auc": auc, "auprc": 0.5, "fpr_at_95tpr": 0.5, "ece": 0.1, "n_test": n}

    sizes = {t: 1001 + k for k, t in enumerate(ORDER)}  # sizes no real split has
    results = {"tasks": {t: {"dsa_plr": row(0.61, n), "minilm_finetune": row(0.62, n)} for t, n in sizes.items()},
               "dsa_heads": {"summedits": {"dsa_plr": {"val_auc": 0.577}}}}
    notes = {line.split("**")[1]: line for line in target_notes(results) if line.startswith("- **")}
    assert set(notes) == set(ORDER)
    for t in ("toxigen", "prompt_safety", "response_harm", "openai_moderation"):
        assert f"{sizes[t]:,}" in notes[t] or str(sizes[t]) in notes[t], t
    assert "0.58-0.58" in notes["summedits"] and "0.620" in notes["summedits"]  # val AUC range, MiniLM's test AUC
    assert "1,927" not in notes["prompt_safety"] and "0.610-0.620" in notes["prompt_safety"]
    assert "32 harmful" not in notes["response_harm"] and "eight categories are all" not in notes["openai_moderation"]
