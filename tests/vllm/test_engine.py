"""dsa inside vLLM against plain vLLM and the HF runtime (one engine each per session)."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="dsa-in-vLLM tests run in .venv-vllm (scripts/setup-vllm.sh)")
pytestmark = pytest.mark.vllm

from dsa.vllm import parity  # noqa: E402
from tests.vllm.conftest import REQUESTED  # noqa: E402

GUARD_TOL = 0.1  # |score| (probability) between vLLM's and the HF runtime's bf16 forwards (measured max 0.066)
LAMBDA1_TOL = 1.0  # |logit| at λ = 1, bf16 logits of magnitude ~30 (or twice the base path's own vLLM-vs-HF gap)


def _row(r) -> dict:
    return {"token_ids": r.token_ids, "logits": r.logprobs}


def test_guard_scores_equal_hf_runtime(ref, runs):
    head = ref["policy_head"]
    got = [r.guard_scores[head] for r in runs["auto"]]
    want = [s[head] for s in ref["guard_scores"]]
    assert len(got) >= 16
    diffs = [abs(a - b) for a, b in zip(got, want, strict=True)]
    assert max(diffs) <= GUARD_TOL, diffs


def test_auto_lambda_follows_policy_and_flags(ref, runs):
    auto = runs["auto"]
    flagged = [i for i, lam in enumerate(ref["lam"]) if lam > 0]
    assert flagged, "the parity prompts should include prompts the shipped guard flags"
    for i, r in enumerate(auto):  # the same λ, unless the score sits within the tolerance of the threshold
        assert r.lam == ref["lam"][i] or abs(r.guard_scores[ref["policy_head"]] - ref["threshold"]) < GUARD_TOL
    assert all(auto[i].lam > 0 or abs(auto[i].guard_scores[ref["policy_head"]] - ref["threshold"]) < GUARD_TOL
               for i in flagged)
    assert any(r.lam == 0 for r in auto)


def test_lambda0_rows_equal_plain_vllm(runs, plain_rows):
    zero = [i for i, r in enumerate(runs["auto"]) if r.lam == 0]
    assert zero
    for i in zero:
        assert runs["auto"][i].token_ids == plain_rows[i]["token_ids"]
    assert parity.max_abs_diff([_row(runs["auto"][i]) for i in zero], [plain_rows[i] for i in zero]) == 0.0


def test_lambda1_logits_equal_hf_adapter(ref, runs, plain_rows):
    """λ = 1 agrees with the HF runtime's adapter about as well as vLLM's base agrees with HF's
    base (both bf16): within max(LAMBDA1_TOL, 2 × the base's own difference)."""
    full = runs[1.0]
    assert all(r.lam == 1.0 for r in full)
    hf = parity.hf_logits(ref["prompt_ids"], [_row(r) for r in full], [1.0] * len(full))
    hf_base = parity.hf_logits(ref["prompt_ids"], plain_rows, [0.0] * len(plain_rows))
    base_diff = parity.max_abs_diff(plain_rows, [{"logits": h["base_logits"]} for h in hf_base])
    assert parity.max_abs_diff([_row(r) for r in full], hf) <= max(LAMBDA1_TOL, 2 * base_diff)


def test_floor_only_raises_lambda(ref, runs):
    """λ = max(policy, floor), the policy read on this engine's own scores (the HF runtime's λ may
    differ where a score sits within GUARD_TOL of the threshold: bf16 forwards of two engines)."""
    head = ref["policy_head"]
    for r, auto, lam in zip(runs[0.5], runs["auto"], ref["lam"], strict=True):
        assert r.lam == max(auto.lam, 0.5)
        assert r.lam == max(lam, 0.5) or abs(auto.guard_scores[head] - ref["threshold"]) < GUARD_TOL


def test_mixed_batch_equals_single_lambda_runs(runs):
    single = {0.0: runs["auto"], 0.5: runs[0.5], 1.0: runs[1.0]}  # "auto" is the floor 0
    for i, r in enumerate(runs["mixed"]):
        same = single[REQUESTED[i % len(REQUESTED)]][i]
        assert r.lam == same.lam
        assert r.token_ids == same.token_ids
        assert parity.max_abs_diff([_row(r)], [_row(same)]) <= 1e-6


def test_bad_alignment_is_refused(sm):
    # vLLM re-raises the row-state processor's ValueError as this (a 400 over HTTP)
    from vllm.exceptions import VLLMValidationError

    with pytest.raises((ValueError, VLLMValidationError), match="dsa_alignment must be in"):
        sm.generate(["hello"], alignment=1.5, max_new_tokens=2)
