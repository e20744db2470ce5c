import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402

from dsa.metrics import roc_auc  # noqa: E402
from dsa.probe_fit import fit_best_c  # noqa: E402

CS = (0.001, 0.01, 1.0, 100.0)


def noisy(seed: int = 0, n: int = 60, d: int = 40):
    """Few rows, many features, one informative: a strong L2 reads validation rows best."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + 200, d))
    y = (x[:, 0] + 1.5 * rng.normal(size=n + 200) > 0).astype(int)
    return x[:n], y[:n], x[n:], y[n:]


def cold_aucs(x_tr, y_tr, x_va, y_va, cs, **kw):
    return [roc_auc(y_va, LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=0)
                    .fit(x_tr, y_tr, **kw).decision_function(x_va)) for c in cs]


def test_it_keeps_the_c_with_the_best_validation_auc():
    x_tr, y_tr, x_va, y_va = noisy()
    aucs = cold_aucs(x_tr, y_tr, x_va, y_va, CS)
    want = int(np.argmax(aucs))  # the first of equals, as the helper
    assert want != len(CS) - 1  # the fixture: the last fit is not the winner
    fit = fit_best_c(x_tr, y_tr, x_va, y_va, CS)
    assert fit.c == CS[want] and fit.val_auc == aucs[want]
    assert fit.estimator.C == CS[want]
    np.testing.assert_array_equal(fit.score(x_va), fit.estimator.decision_function(x_va))
    assert fit.intercept == float(fit.estimator.intercept_[0]) and fit.coef.shape == (x_tr.shape[1],)


def test_warm_start_keeps_a_snapshot_of_the_winner_not_the_last_fit():
    x_tr, y_tr, x_va, y_va = noisy()
    cold = fit_best_c(x_tr, y_tr, x_va, y_va, CS)
    warm = fit_best_c(x_tr, y_tr, x_va, y_va, CS, warm_start=True, max_iter=500)
    assert warm.c == cold.c != CS[-1]
    # the path's first fit starts from zeros, so it is the cold fit; later ones reach the same optimum
    np.testing.assert_allclose(warm.coef, cold.coef, atol=1e-3)
    assert warm.estimator.C == warm.c  # a copy taken at the winner: the shared estimator went on to CS[-1]
    last = LogisticRegression(C=CS[-1], class_weight="balanced", max_iter=2000, random_state=0).fit(x_tr, y_tr)
    assert not np.allclose(warm.coef, last.coef_[0], atol=1e-2)


def test_the_first_fit_of_a_warm_path_equals_a_cold_fit_bit_for_bit():
    x_tr, y_tr, x_va, y_va = noisy()
    first = lambda clf, x: clf.decision_function(x) * (1 if clf.C == CS[0] else -1)  # noqa: E731
    warm = fit_best_c(x_tr, y_tr, x_va, y_va, CS, warm_start=True, max_iter=500, score_fn=first)
    cold = LogisticRegression(C=CS[0], class_weight="balanced", max_iter=500, random_state=0).fit(x_tr, y_tr)
    assert warm.c == CS[0]
    np.testing.assert_array_equal(warm.coef, cold.coef_[0])


def test_ties_go_to_the_first_c_and_verbose_prints_each(capsys):
    x_tr, y_tr, x_va, y_va = noisy()
    fit = fit_best_c(x_tr, y_tr, x_va, y_va, CS, score_fn=lambda clf, x: x[:, 0], verbose=True)
    assert fit.c == CS[0]
    assert capsys.readouterr().out.splitlines() == [f"   C={c}: val AUC {fit.val_auc:.4f}" for c in CS]


def test_sample_weight_reaches_every_fit():
    x_tr, y_tr, x_va, y_va = noisy()
    w = np.where(np.arange(len(y_tr)) < 30, 5.0, 1.0)
    fit = fit_best_c(x_tr, y_tr, x_va, y_va, (1.0,), sample_weight=w)
    ref = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=0)
    np.testing.assert_array_equal(fit.coef, ref.fit(x_tr, y_tr, sample_weight=w).coef_[0])
    plain = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=0).fit(x_tr, y_tr)
    assert not np.allclose(fit.coef, plain.coef_[0])


def test_the_score_reads_the_informative_feature():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int)
    fit = fit_best_c(x[:150], y[:150], x[150:], y[150:], cs=(0.001, 1.0))
    assert fit.c in (0.001, 1.0) and fit.score(x[150:]).shape == (50,)
    assert np.corrcoef(fit.score(x[150:]), x[150:, 0])[0, 1] > 0.9
