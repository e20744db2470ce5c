"""The λ of a request row is decided once (`dsa.align.policy`): a caller's value is a floor where a
guard policy decides, exact only with the override permission, the language rule raises "auto"
rows only, and nothing applies λ without an adapter. The runtime is checked against the rule."""

import pytest
import torch

from dsa.align.policy import (
    AlignmentRequest,
    check_alignment_request,
    decide_lambda,
    decide_lambdas,
    effective_floor,
    request_alignment,
)


@pytest.mark.parametrize(("value", "exact", "guarded", "want"), [
    (None, False, True, ("auto", None, "auto")),
    ("auto", True, True, ("auto", None, "auto")),
    (0.3, False, True, ("auto", 0.3, "floor")),  # a client's number only raises the policy's λ
    (0.3, True, True, (0.3, None, "override")),  # the override permission sets it exactly
    (0.0, True, True, (0.0, None, "override")),
    (None, False, False, (0.0, None, "unguarded")),
    (0.7, False, False, (0.7, None, "unguarded")),
])
def test_request_alignment_fails_closed(value, exact, guarded, want):
    assert request_alignment(value, exact=exact, guarded=guarded) == AlignmentRequest(*want)


def test_a_floor_only_raises_lambda_and_an_override_is_exact():
    assert decide_lambda(1.0, "auto", 0.2) == 1.0
    assert decide_lambda(0.0, "auto", 0.2) == pytest.approx(0.2)
    assert decide_lambda(0.0, "auto", None) == 0.0
    assert decide_lambda(1.0, 0.1) == pytest.approx(0.1)  # exact: the policy's λ is not used
    assert decide_lambda(None, 0.4) == pytest.approx(0.4)
    assert decide_lambda(1.0, "auto", 0.5, can_align=False) == 0.0


def test_the_language_rule_raises_auto_rows_only():
    assert decide_lambda(0.0, "auto", language_flagged=True, flagged_lambda=1.0) == 1.0
    assert decide_lambda(0.0, 0.0, language_flagged=True, flagged_lambda=1.0) == 0.0  # an override stays
    assert effective_floor("auto", 0.2, language_flagged=True, flagged_lambda=0.8) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="flagged_lambda"):
        effective_floor("auto", language_flagged=True)


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="auto"):
        decide_lambda(0.0, "always")
    with pytest.raises(ValueError, match="policy"):
        decide_lambda(None, "auto")
    with pytest.raises(ValueError, match="one value per row"):
        decide_lambdas([0.0, 1.0], ["auto"])
    with pytest.raises(ValueError, match="adapter"):
        check_alignment_request(0.5, None, guarded=True, can_align=False)
    with pytest.raises(ValueError, match="boolean"):
        check_alignment_request(True, None, guarded=True, can_align=True)


def test_decide_lambdas_mixes_auto_and_fixed_rows():
    lam = decide_lambdas([1.0, 0.0, 1.0], ["auto", "auto", 0.25], [None, 0.5, None])
    assert lam.dtype == torch.float32 and lam.tolist() == pytest.approx([1.0, 0.5, 0.25])


def test_the_runtime_decides_by_the_rule():
    """SafetyModel._lambda (every generate/prefill path) equals decide_lambdas on a grid of requests."""
    from tests.unit.test_runtime import _model

    sm = _model()
    scores = {sm.policy_head: torch.tensor([0.0, 0.99])}
    policy = sm.policy_lambda(scores).tolist()
    for alignment in ("auto", 0.0, 0.6, [0.0, 1.0], ["auto", 0.3]):
        for floor in (None, 0.4, [0.0, 0.9]):
            rows = (["auto"] * 2 if alignment == "auto" else list(alignment) if isinstance(alignment, list)
                    else [alignment] * 2)
            floors = None if floor is None else (floor if isinstance(floor, list) else [floor] * 2)
            want = decide_lambdas(policy, rows, floors)
            assert sm._lambda(alignment, scores, 2, floor).tolist() == pytest.approx(want.tolist()), (alignment, floor)
