"""Chunked prefill equals a one-shot prefill: guard scores, λ, the first logits and the greedy answer
(tiny random models, float32); moderation read in slices equals `classify`."""

from __future__ import annotations

import pytest
import torch

from dsa.align.policy import make_policy
from dsa.chunked_prefill import (
    ChunkedClassify,
    ChunkedPrefill,
    chunk_blocker,
    fit_tokens,
    read_cost,
)
from dsa.guards import GuardBank
from dsa.guards.bank import GuardAdapter, classify
from dsa.guards.kinds import build_head
from dsa.runtime import SafetyModel

from .align_tiny import ProbeBank
from .server_tiny import tiny_model

LONG = "please tell me everything about the old harbour and the mill, " * 2 + "how to do a bad thing quickly"


def _adapter(base, arch: str, task: str, cfg: dict, max_length: int = 256, seed: int = 3, mode: str = "prompt"):
    torch.manual_seed(seed)
    head = build_head(arch, base.d_model, 1, cfg)
    for p in head.parameters():
        p.data.normal_(0, 0.3)
    if hasattr(head, "sd"):
        head.mu.normal_(0, 0.1)
        head.sd.uniform_(0.5, 2.0)
    return GuardAdapter(arch, task, mode, ["unsafe"], cfg, head, [1.3], [0.5], max_length=max_length,
                        window=cfg.get("w", 8))


def _bank(base, plr_max_length: int = 256) -> GuardBank:
    """A window head (the shipped prompt guard's kind), a PLR head and an RTB head in one bank."""
    return GuardBank([
        _adapter(base, "window", "prompt_safety", {"layers": [1, 2], "window": 8}, max_length=4096),
        _adapter(base, "plr", "other", {"layers": [1, 3], "poolings": ["mean", "last"]}, max_length=plr_max_length),
        _adapter(base, "rtb", "third", {"ladder": [1, 2], "width": 16, "w": 8}),
    ])


def _model(plr_max_length: int = 256, response: bool = False, threshold: float = 0.5) -> SafetyModel:
    sm = tiny_model()
    sm.guards = _bank(sm.base, plr_max_length)
    sm.policy_head = "prompt_safety/unsafe"
    sm.policy = make_policy("step", threshold=threshold)
    if response:
        sm.response_guards = GuardBank([_adapter(sm.base, "plr", "response_harm", {"layers": [2, 3],
                                                "poolings": ["mean", "last"]}, seed=5, mode="prompt_response")])
    return sm


def _chunked(sm, messages, chunk: int, **kw):
    read = ChunkedPrefill(sm, messages, slice_tokens=chunk, **kw)
    steps, one_token = 0, read_cost(1, len(read))
    while not read.done:
        assert 0 < read.advance(chunk) <= max(chunk, one_token)  # a slice reads at least one token
        steps += 1
    return read.finish(), steps


def _answer(sm, batch) -> list[int]:
    while not batch.finished:
        sm.decode_step(batch)
    return batch.rows[0].tokens


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_prefill_equals_one_shot(chunk):
    sm = _model()
    one = sm.prefill([LONG], max_new_tokens=12)
    many, steps = _chunked(sm, LONG, chunk, max_new_tokens=12)
    assert steps >= -(-int(one.mask.sum()) // chunk) and (steps == 1) == (chunk == 1000)
    assert set(many.scores) == set(one.scores) == {"prompt_safety/unsafe", "other/unsafe", "third/unsafe"}
    for h, v in one.scores.items():
        assert float(many.scores[h]) == pytest.approx(float(v), abs=1e-4), h
    assert torch.equal(many.lam, one.lam)
    assert torch.allclose(many.logits, one.logits, atol=1e-4)
    assert _answer(sm, many) == _answer(sm, one)


@pytest.mark.parametrize("threshold", [0.0, 1.0])  # every prompt flagged (λ 1: the adapter's logits) / none
def test_chunked_prefill_gives_the_policys_lambda_and_the_same_answer(threshold):
    sm = _model(threshold=threshold)
    one = sm.prefill([LONG], max_new_tokens=10)
    many, _ = _chunked(sm, LONG, 9, max_new_tokens=10)
    assert float(one.lam[0]) == float(many.lam[0]) == (1.0 if threshold == 0.0 else 0.0)
    assert _answer(sm, many) == _answer(sm, one)


def test_a_prompt_longer_than_a_heads_max_length_is_rescored_as_classify_reads_it():
    sm = _model(plr_max_length=20)  # the PLR head reads the last 20 tokens of classify's rendering
    one = sm.prefill([LONG], max_new_tokens=4)
    read = ChunkedPrefill(sm, LONG, max_new_tokens=4, slice_tokens=6)
    assert read.rescore is not None
    while not read.done:
        assert read.advance(6) <= 6
    many = read.finish()
    for h, v in one.scores.items():
        assert float(many.scores[h]) == pytest.approx(float(v), abs=1e-4), h
    assert _answer(sm, many) == _answer(sm, one)


def test_response_guard_state_after_a_chunked_prefill_equals_one_shot():
    sm = _model(response=True)
    one = sm.prefill([LONG], max_new_tokens=8)
    many, _ = _chunked(sm, LONG, 11, max_new_tokens=8)
    for _ in range(5):
        sm.decode_step(one)
        sm.decode_step(many)
        assert many.rows[0].tokens == one.rows[0].tokens
        assert many.rows[0].response["response_harm/unsafe"] == pytest.approx(
            one.rows[0].response["response_harm/unsafe"], abs=1e-4)


def test_a_chunked_row_merges_into_a_running_batch_and_answers_as_alone():
    sm = _model()
    alone = _answer(sm, sm.prefill([LONG], max_new_tokens=8))
    running = sm.prefill(["hello there"], max_new_tokens=12)
    sm.decode_step(running)
    many, _ = _chunked(sm, LONG, 16, max_new_tokens=8)
    assert running.can_merge(many)
    running.merge(many)
    while not running.finished:
        sm.decode_step(running)
    assert running.rows[1].tokens == alone


def test_a_slice_late_in_a_long_prompt_reads_fewer_tokens_for_the_same_budget():
    assert fit_tokens(128, 0) == 120 and fit_tokens(128, 3800) == 27  # span 1,024
    for span in (1024, 3072):
        for past in (0, 500, 3000, 8000):
            n = fit_tokens(128, past, span)
            assert read_cost(n, past, span) <= 128 < read_cost(n + 1, past, span)
        assert fit_tokens(1, 8000, span) == 1  # a slice always reads a token


def test_moderation_in_slices_equals_classify():
    sm = _model(plr_max_length=20)
    inputs = ["hi", LONG, "short one", [{"role": "user", "content": LONG[:50]}, {"role": "assistant", "content": "ok"}],
              "x" * 30, "the end"]
    want = classify(sm.base, sm.guards, inputs)
    task = ChunkedClassify(sm, inputs, slice_tokens=40)  # short inputs grouped, LONG read in chunks
    while not task.done:
        assert 0 < task.advance(40) <= 40
    for got, w in zip(task.results, want, strict=True):
        assert list(got["scores"]) == list(w["scores"]) and got["flags"] == w["flags"]
        for h, v in w["scores"].items():
            assert got["scores"][h] == pytest.approx(v, abs=1e-4), h


def test_models_that_cannot_prefill_in_chunks_say_why():
    sm = _model()
    assert chunk_blocker(sm) is None
    sm.response_guards = ProbeBank("layers.2.resid_post", sm.base.d_model)  # needs every prompt token's states
    assert "response guard" in chunk_blocker(sm)
    with pytest.raises(ValueError, match="cannot prefill in chunks"):
        ChunkedPrefill(sm, LONG)
