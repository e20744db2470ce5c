"""A linear probe: balanced logistic regression per C of a grid, the C with the best validation ROC-AUC.

    fit = fit_best_c(x_tr, y_tr, x_va, y_va, cs=(0.001, 0.01, 0.1))
    fit.c, fit.val_auc, fit.score(x_test)

The one owner of this recipe: the linear PLR guard heads, the TF-IDF baseline, the probes of the
operating-point studies and scripts/. scikit-learn comes with the [train] extra.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dsa.extras import needs_extra
from dsa.metrics import roc_auc

PROBE_CS = (0.001, 0.003, 0.01, 0.03, 0.1)


def decision(clf, x) -> np.ndarray:
    """The default probe score: the estimator's decision function (the logit)."""
    return clf.decision_function(x)


@dataclass
class ProbeFit:
    """The winner of `fit_best_c`: its C, its validation AUC and the estimator as fitted at that C."""

    c: float
    val_auc: float
    estimator: object  # sklearn LogisticRegression
    score_fn: Callable = decision

    @property
    def coef(self) -> np.ndarray:
        """The weights of the first (binary) output, [d]."""
        return self.estimator.coef_[0]

    @property
    def intercept(self) -> float:
        return float(self.estimator.intercept_[0])

    def score(self, x) -> np.ndarray:
        return self.score_fn(self.estimator, x)


def fit_best_c(x_tr, y_tr, x_va, y_va, cs: Sequence[float] = PROBE_CS, *, warm_start: bool = False,
               max_iter: int = 2000, seed: int | None = 0, sample_weight=None, score_fn: Callable | None = None,
               verbose: bool = False) -> ProbeFit:
    """Fit a class-balanced logistic regression per C in `cs` (in that order) and keep the one with
    the best validation ROC-AUC (the first of equals).

    Args:
        x_tr, y_tr: training rows (dense or sparse) and 0/1 labels; x_va, y_va: validation ones.
        cs: the grid, fitted in the order given.
        warm_start: one estimator along the grid, each fit starting from the previous C's optimum
            (pass `cs` strongest L2 first); the winner is a copy taken when it was fitted, since
            the shared estimator moves on.
        max_iter, seed: the estimator's `max_iter` and `random_state` (None leaves it unset).
        sample_weight: per training row, passed to every fit.
        score_fn: `score_fn(estimator, x)`, what the AUC is read from (default: the decision function).
        verbose: print each C's validation AUC.

    Returns:
        ProbeFit (C, val AUC, estimator; `.score(x)` applies `score_fn`).
    """
    with needs_extra("train", "probe fitting"):
        from sklearn.linear_model import LogisticRegression

    score_fn = score_fn or decision
    shared = LogisticRegression(class_weight="balanced", max_iter=max_iter, random_state=seed, warm_start=True)
    best = None
    for c in cs:
        if warm_start:
            clf = shared.set_params(C=c).fit(x_tr, y_tr, sample_weight=sample_weight)
        else:
            clf = LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter, random_state=seed)
            clf.fit(x_tr, y_tr, sample_weight=sample_weight)
        auc = roc_auc(y_va, score_fn(clf, x_va))
        if verbose:
            print(f"   C={c}: val AUC {auc:.4f}", flush=True)
        if best is None or auc > best.val_auc:
            best = ProbeFit(c, auc, copy.deepcopy(clf) if warm_start else clf, score_fn)
    return best
