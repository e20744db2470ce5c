"""Policies map guard scores to λ per row; benign rows get exactly 0."""

import pytest
import torch

from dsa.align.policy import make_policy

S = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])


def test_step():
    assert make_policy("step", threshold=0.5)(S).tolist() == [0, 0, 1, 1, 1]


def test_linear_ramp():
    lam = make_policy("linear", low=0.2, high=0.8)(S)
    assert lam[0] == 0 and lam[1] == 0 and lam[-1] == 1 and lam[2] == pytest.approx(0.5)


def test_sigmoid_is_monotone_and_zero_when_clearly_benign():
    lam = make_policy("sigmoid", center=0.5, width=0.05)(S)
    assert lam[0] == 0 and lam[2] == pytest.approx(0.5) and lam[-1] > 0.99
    assert torch.all(lam[1:] >= lam[:-1])


def test_max_lambda_and_unknown():
    assert make_policy("step", max_lambda=0.5)(S)[-1] == 0.5
    assert make_policy("constant", value=0.3)(S).tolist() == pytest.approx([0.3] * 5)
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("cubic")
