"""Policies map guard scores to λ per row around the calibrated threshold; benign rows get exactly 0."""

import pytest
import torch

from dsa.align.policy import make_policy, reveals_score

S = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.5, 0.9, 1.0])


def test_step_fires_at_the_threshold():
    assert make_policy("step", threshold=0.3)(S).tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_linear_ramp_reaches_one_at_the_threshold():
    lam = make_policy("linear", threshold=0.3, width=0.2)(S)
    assert lam[:2].tolist() == [0, 0] and lam[2] == pytest.approx(0.5)
    assert lam[3:].tolist() == [1, 1, 1, 1]


def test_sigmoid_is_monotone_zero_when_clearly_benign_and_one_when_flagged():
    lam = make_policy("sigmoid", threshold=0.3, width=0.2)(S)
    assert lam[0] == 0 and lam[2] == pytest.approx(0.5) and lam[3:].tolist() == [1, 1, 1, 1]
    assert torch.all(lam[1:] >= lam[:-1])


def test_max_lambda_constant_and_bad_arguments():
    assert make_policy("step", threshold=0.5, max_lambda=0.5)(S)[-1] == 0.5
    assert make_policy("constant", value=0.3, threshold=0.9)(S).tolist() == pytest.approx([0.3] * 7)
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("cubic")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_policy("step", threshold=1.5)
    with pytest.raises(ValueError, match="width"):
        make_policy("linear", threshold=0.3, width=0)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.77, 1.0])
def test_only_the_ramps_reveal_more_than_the_flag(threshold):
    ramp = threshold > 0  # at threshold 0 every score is flagged: a ramp is λ = 1 throughout
    assert reveals_score("linear", threshold) == ramp and reveals_score("sigmoid", threshold) == ramp
    assert not reveals_score("step", threshold)
    assert not reveals_score(make_policy("step", threshold=threshold, max_lambda=0.5), threshold)
    assert not reveals_score(make_policy("constant", value=0.3), threshold)
