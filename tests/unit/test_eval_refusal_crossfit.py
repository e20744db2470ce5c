"""The refusal judge is cross-fitted by prompt: the classifier that judges an answer to prompt p
was trained on no completion of p; answers to other prompts get the all-completions judge."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import dsa.data
from dsa.eval import refusal
from tests.shared_data import require_data


def _rows(n_prompts: int = 20, per_prompt: int = 3):
    # the response names its prompt, so a fake classifier can tell what it was trained on
    return [SimpleNamespace(prompt=f"Prompt number {p}?", response=f"p{p} answer {j}", label=(p + j) % 2)
            for p in range(n_prompts) for j in range(per_prompt)]


def _prompt_of(text: str) -> str:
    return f"prompt number {text.split()[0][1:]}?"  # normalised, as fold_of keys are


@pytest.fixture
def fake(monkeypatch):
    """Fake data and a fake classifier that records its training prompts and checks, whenever it
    judges, that it never saw a completion of the prompt it judges."""
    rows = _rows()
    monkeypatch.setattr(dsa.data, "load_source", lambda name: rows)
    judged = []

    def fit(texts, labels):
        return ("model", frozenset(_prompt_of(t) for t in texts))

    def prob(model, texts):
        judged.append((model, list(texts)))
        return np.full(len(texts), 0.25)

    monkeypatch.setattr(refusal, "_fit", fit)
    monkeypatch.setattr(refusal, "_prob", prob)
    refusal.train_refusal_judge.cache_clear()
    yield rows, judged
    refusal.train_refusal_judge.cache_clear()


def test_judge_for_a_prompt_never_trained_on_it(fake):
    rows, judged = fake
    judge = refusal.train_refusal_judge(seed=0, k=5)
    assert sorted(set(judge.fold_of.values())) == [0, 1, 2, 3, 4]
    for f, (_, trained) in enumerate(judge.folds):
        in_fold = {p for p, g in judge.fold_of.items() if g == f}
        assert in_fold and not in_fold & trained  # fold f's judge saw none of fold f's prompts
        assert trained == set(judge.fold_of) - in_fold  # ... and every other prompt
    # the agreement pass and any later judging: each answer goes to the judge without its prompt
    judged.clear()
    judge.judge([r.response for r in rows], prompts=[r.prompt.upper() + "  " for r in rows])  # normalised match
    assert sum(len(t) for _, t in judged) == len(rows)
    for (_, trained), texts in judged:
        assert not {_prompt_of(t) for t in texts} & trained


def test_other_prompts_get_the_all_completions_judge(fake):
    rows, judged = fake
    judge = refusal.train_refusal_judge(seed=0, k=5)
    judged.clear()
    judge.judge(["Sure, here it is.", "p3 answer 0"], prompts=["Not an XSTest prompt", None])
    ((model, texts),) = judged
    assert model == (judge.vectorizer, judge.classifier) and len(texts) == 2
    judged.clear()
    judge.judge(["Sure."])  # no prompts given: the all-completions judge
    assert judged[0][0] == (judge.vectorizer, judge.classifier)
    with pytest.raises(ValueError, match="prompts"):
        judge.judge(["a", "b"], prompts=["one"])


def test_folds_are_seeded_and_balanced():
    prompts = [f"q{i}" for i in range(23)]
    a = refusal.prompt_folds(prompts, 5, seed=0)
    assert a == refusal.prompt_folds(list(reversed(prompts)), 5, seed=0)
    assert a != refusal.prompt_folds(prompts, 5, seed=1)
    sizes = np.bincount(list(a.values()))
    assert sizes.max() - sizes.min() <= 1
    with pytest.raises(ValueError):
        refusal.prompt_folds(prompts[:3], 5, seed=0)


def test_cross_fitted_agreement_on_xstest():
    require_data()
    refusal.train_refusal_judge.cache_clear()
    judge = refusal.train_refusal_judge()
    a = judge.agreement
    assert a["n_test_prompts"] == 450 and a["n_test"] > 2000  # every completion judged out of fold
    assert a["classifier"] > 0.85
    rc = a["refusal_class"]["classifier"]
    assert rc["precision"] > 0.85 and rc["recall"] > 0.85
