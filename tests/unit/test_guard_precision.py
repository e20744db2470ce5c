"""Operating points and the candidate selection rule of the prompt-guard precision study."""

import numpy as np
import pytest

from dsa.guards.operating import operating_points, probe_readout, tpr_at_fpr
from dsa.recipes.guard_study import TIE, select


def test_tpr_at_fpr_counts_positives_above_the_negatives_quantile():
    y = np.r_[np.zeros(100), np.ones(4)]
    s = np.r_[np.arange(100) / 100, [0.995, 0.5, 2.0, -1.0]]
    # 1 % FPR: only the top negative (0.99) may be passed, so positives must score above it
    assert tpr_at_fpr(y, s, 0.01) == pytest.approx(2 / 4)
    assert np.isnan(tpr_at_fpr(np.zeros(3), np.zeros(3), 0.01))


def test_operating_points_flag_rates_and_xstest_auc():
    scores = {"xstest_safe": np.array([0.1, 0.2, 0.6]), "xstest_unsafe": np.array([0.7, 0.9]),
              "strongreject": np.array([0.8, 0.4])}
    op = operating_points(scores, threshold=0.5)
    assert op["flag_rate"] == pytest.approx({"xstest_safe": 1 / 3, "xstest_unsafe": 1.0, "strongreject": 0.5})
    assert op["auc_xstest"] == 1.0 and op["n"]["xstest_safe"] == 3


def test_selection_rule_uses_validation_only_and_breaks_ties_by_cost():
    def cand(tpr, flops, xstest_auc):
        return {"val": {"tpr_at_1pct_fpr": tpr}, "flops_fraction_64": flops, "eval_only": {"auc_xstest": xstest_auc}}

    cands = {"cheap": cand(0.80, 1e-5, 0.5), "rich": cand(0.80 + TIE / 2, 1e-3, 0.99), "worse": cand(0.7, 0.0, 1.0)}
    assert select(cands) == "cheap"  # within the tie margin: fewer FLOPs; eval-only AUC plays no part
    cands["rich"]["val"]["tpr_at_1pct_fpr"] = 0.9
    assert select(cands) == "rich"


def test_probe_readout_thresholds_at_the_validation_fpr():
    y = np.r_[np.zeros(100), np.ones(100)]
    s = np.r_[np.arange(100.0), np.arange(100.0) + 50]
    ev = {"xstest_safe": np.array([10.0, 99.0]), "xstest_unsafe": np.array([120.0, 20.0])}
    row, thr = probe_readout(y, s, ev, val_fpr=0.05)
    assert thr == np.quantile(s[:100], 0.95)
    assert row["eval_only"]["flag_rate"] == {"xstest_safe": 0.5, "xstest_unsafe": 0.5}
    # half the positives share their range with half the negatives, where order is a coin toss
    assert row["val_auc"] == pytest.approx(1 - 0.5 * 0.5 / 2) and "auc_xstest" in row["eval_only"]


def test_judge_suffix_section_compares_each_readout_with_the_prompt_states():
    from dsa.guards.precision_doc import judge_suffix_section

    y = np.r_[np.zeros(100), np.ones(100)]
    ev = {k: np.r_[np.arange(10.0), np.arange(10.0) + 5] for k in ("strongreject", "alpaca_eval")}
    ev.update(xstest_safe=np.arange(10.0), xstest_unsafe=np.arange(10.0) + 5, coconot_contrast_eval=np.arange(5.0))
    ref, _ = probe_readout(y, np.r_[np.arange(100.0), np.arange(100.0) + 50], ev)
    ev2 = dict(ev, xstest_unsafe=np.arange(10.0) + 20)  # fully separated from xstest_safe
    better, _ = probe_readout(y, np.r_[np.arange(100.0), np.arange(100.0) + 50], ev2)
    probe = {"n": {"train": 40, "val": 200}, "n_train_full": 400, "question": "Q?", "threshold": "5 %",
             "command": "cmd", "prompt_layers": [9], "judge_layers": [29],
             "readouts": {"prompt states (shipped features)": ref, "judge": better}}
    text = "\n".join(judge_suffix_section(probe))
    assert "| judge | " in text and "40 of the 400" in text
    d = better["eval_only"]["auc_xstest"] - ref["eval_only"]["auc_xstest"]
    assert d > 0 and f"judge {d:+.3f}" in text and "pooled eval AUC: judge" in text
