"""Operating points and the candidate selection rule of the prompt-guard precision study."""

import numpy as np
import pytest

from dsa.guards.operating import operating_points, tpr_at_fpr
from dsa.guards.study import TIE, select


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
