"""Alignment on the real embedded SmolLM2-135M: λ = 0 equals plain greedy decoding, one prefill
per request, and the shipped adapters load onto this base (skipped where they are absent)."""

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def base(real_base):
    return real_base  # the session-wide embedded base from tests/conftest.py


def test_lambda_zero_is_greedy_base_and_one_prefill(base):
    from dsa.align.logit_adapter import LogitAdapter, LogitAdapterSpec
    from dsa.runtime import SafetyModel

    sm = SafetyModel(base, adapter=LogitAdapter(base, LogitAdapterSpec(k=2)))
    prompt = "Name three primary colours."
    calls: list[int] = []
    h = base.model.model.register_forward_pre_hook(
        lambda m, a, k: calls.append(int(k["input_ids"].shape[1])), with_kwargs=True)
    pair = [prompt, "How do I bake bread?"]
    try:
        r = sm.generate(pair, alignment=[0.0, 1.0], max_new_tokens=8)[0]
    finally:
        h.remove()
    assert calls[0] > 1 and all(c == 1 for c in calls[1:])
    # the λ = 0 row is the base's own answer in the same batch (bf16 rounding depends on the
    # padded batch shape, so compare like with like) ...
    assert r.token_ids == sm.generate(pair, alignment=0.0, max_new_tokens=8)[0].token_ids
    # ... and alone it is exactly Hugging Face greedy decoding
    alone = sm.generate([prompt], alignment=0.0, max_new_tokens=8)[0]
    enc = base.tokenizer([base.chat_text(prompt)], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        ref = base.model.generate(**enc, max_new_tokens=8, do_sample=False)[0, enc["input_ids"].shape[1]:]
    assert alone.token_ids == ref.tolist()[: len(alone.token_ids)]


@pytest.mark.parametrize("kind", ["lora_patch", "dsa_adapter"])
def test_shipped_adapters_load(base, kind):
    path = ROOT / "adapters" / "align" / kind
    if not path.exists():
        pytest.skip(f"{path} not built yet (dsa align train configs/align-*.yaml)")
    if kind == "lora_patch":
        from dsa.align.lora import load_lora_patch

        patch = load_lora_patch(path, base.model, base.fingerprint)
        patch.unpatch()
        assert (path / "peft" / "adapter_config.json").exists()
    else:
        from dsa.align.logit_adapter import LogitAdapter

        assert LogitAdapter.load(path, base).spec.k >= 1


def test_hard_negatives_are_the_benign_prompts_the_guard_scores_highest(base):
    """Mined rows are benign training prompts, ordered by the shipped guard's score, and the
    public classify() agrees that they score above the rest of the pool."""
    from dsa.data import guard_task
    from dsa.recipes.train_data import guard_hard_negatives
    from dsa.runtime import SafetyModel

    guard = ROOT / "adapters" / "guards" / "prompt_safety"
    if not guard.is_dir():
        pytest.skip("no shipped prompt guard")
    pool = guard_hard_negatives(base, str(guard), 40, pool=40)  # the whole pool, ranked
    hard = pool[:8]
    benign = {r.main_text for r in guard_task("prompt_safety").train if r.label == 0}
    assert len(set(pool)) == 40 and set(pool) <= benign
    sm = SafetyModel.load(base, guards=[str(guard)])
    scores = [r["scores"]["prompt_safety/unsafe"] for r in sm.classify(pool)]
    rest = sorted(scores[len(hard):])
    # features from the store (shared-prefix forward) vs the runtime's forward: equal up to bf16 noise
    assert min(scores[:len(hard)]) >= rest[len(rest) // 2]
    assert sum(scores[:len(hard)]) / len(hard) > sum(rest) / len(rest)
