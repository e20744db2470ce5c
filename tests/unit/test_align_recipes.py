"""The alignment training rows built from the real shared datasets (skipped when absent)."""

from __future__ import annotations

import pytest

from dsa.data.tasks import SENSITIVE_WORDS
from dsa.data.wrappers import TRAIN_FAMILIES
from dsa.recipes.align_config import AlignTrainConfig
from dsa.recipes.align_train import build_examples
from dsa.recipes.train_data import care_refusal_for, is_self_harm, refusal_for
from tests.shared_data import require_data
from tests.unit.align_tiny import tiny_base


@pytest.fixture(scope="module")
def examples():
    require_data()
    cfg = AlignTrainConfig(n_harmful=24, n_benign=24, dpo=True, n_hh=4, wrap_share=0.3, min_self_harm=3,
                           care_refusals=True, self_harm_repeat=2)
    base = tiny_base()
    base.model.config.max_position_embeddings = 2048  # character tokens: wrapped training prompts run long
    return build_examples(cfg, base)


def test_sft_rows_are_templated_refusals(examples):
    sft = [e for e in examples if e.kind == "sft"]
    assert all(e.response == refusal_for(e.plain or e.prompt) for e in sft)
    # 24 harmful prompts, then one wrapped extra copy of each self-harm request (self_harm_repeat=2)
    sh = [e.plain or e.prompt for e in sft[:24] if is_self_harm(e.plain or e.prompt)]
    extra = sft[24:]
    assert len(extra) == len(sh) >= 3 and sorted(e.plain for e in extra) == sorted(sh)
    assert all(e.wrapper and e.plain in e.prompt and e.plain != e.prompt for e in extra)


def test_wrapped_copies_on_both_sides_keep_their_targets(examples):
    kinds = {f.name for f in TRAIN_FAMILIES} | {"pad_before", "pad_after", "pad_around"}
    for kind in ("sft", "distill"):
        rows = [e for e in examples if e.kind == kind]
        wrapped = [e for e in rows if e.wrapper is not None]
        assert wrapped and len(wrapped) < len(rows), kind
        assert all(e.wrapper in kinds and e.plain in e.prompt and e.plain != e.prompt for e in wrapped)
        assert all(e.plain is None for e in rows if e.wrapper is None)
    # a wrapped harmful prompt keeps its plain prompt's refusal, not one picked by the wrapper's text
    assert all(e.response == refusal_for(e.plain) for e in examples if e.kind == "sft" and e.wrapper)


def test_self_harm_requests_are_in_the_training_set_and_refused_with_care(examples):
    sh = [e for e in examples if e.kind == "sft" and is_self_harm(e.plain or e.prompt)]
    assert len(sh) >= 6
    assert all(e.response == care_refusal_for(e.plain or e.prompt) and "988" in e.response for e in sh)


def test_dpo_prefers_the_base_answer_on_edgy_safe_prompts(examples):
    distill = {e.prompt: e.response for e in examples if e.kind == "distill"}
    plain = {e.prompt: e.plain or e.prompt for e in examples if e.kind == "distill"}
    edgy = [e for e in examples if e.kind == "dpo" and e.prompt in distill]
    assert edgy, "the benign rows hold edgy prompts, so DPO gets answer-over-refusal pairs"
    for e in edgy:
        assert SENSITIVE_WORDS.search(plain[e.prompt])
        assert e.response == distill[e.prompt] and e.rejected == refusal_for(plain[e.prompt])
    harmful = {e.prompt: e.response for e in examples if e.kind == "sft"}
    assert not set(harmful) & set(distill)
    # refusal over compliance on the harmful side (wrapped copies included), hh_rlhf pairs as they come
    pairs = [e for e in examples if e.kind == "dpo" and e.prompt in harmful]
    assert pairs and all(e.response == harmful[e.prompt] for e in pairs)
    assert sum(e.kind == "dpo" and e.prompt not in harmful and e.prompt not in distill for e in examples) == 4
