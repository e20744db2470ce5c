"""The alignment training rows built from the real shared datasets (skipped when absent)."""

from __future__ import annotations

import pytest

from dsa.data.tasks import SENSITIVE_WORDS
from dsa.recipes.align_config import AlignTrainConfig
from dsa.recipes.align_train import build_examples
from dsa.recipes.train_data import refusal_for
from tests.shared_data import require_data
from tests.unit.align_tiny import tiny_base


@pytest.fixture(scope="module")
def examples():
    require_data()
    cfg = AlignTrainConfig(n_harmful=24, n_benign=24, dpo=True, n_hh=4)
    return build_examples(cfg, tiny_base())


def test_sft_rows_are_templated_refusals(examples):
    sft = [e for e in examples if e.kind == "sft"]
    assert len(sft) == 24 and all(e.response == refusal_for(e.prompt) for e in sft)


def test_dpo_prefers_the_base_answer_on_edgy_safe_prompts(examples):
    distill = {e.prompt: e.response for e in examples if e.kind == "distill"}
    edgy = [e for e in examples if e.kind == "dpo" and e.prompt in distill]
    assert edgy, "the benign rows hold edgy prompts, so DPO gets answer-over-refusal pairs"
    for e in edgy:
        assert SENSITIVE_WORDS.search(e.prompt)
        assert e.response == distill[e.prompt] and e.rejected == refusal_for(e.prompt)
    harmful = {e.prompt for e in examples if e.kind == "sft"}
    assert not harmful & set(distill)
    # refusal over compliance on the harmful side, hh_rlhf pairs as they come
    assert any(e.kind == "dpo" and e.prompt in harmful and e.response == refusal_for(e.prompt) for e in examples)
    assert sum(e.kind == "dpo" and e.prompt not in harmful and e.prompt not in distill for e in examples) == 4
