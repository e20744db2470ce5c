"""Decode steps skip an LM head whose logits would be discarded: the base's when every row is at
λ = 1 (rows at λ = 0 never run the adapter at all: tests/unit/test_adapter_rows.py). The logits
must not change."""

import torch

from dsa.align.logit_adapter import LogitAdapter, LogitAdapterSpec, mix_logits
from dsa.runtime import SafetyModel

from .align_tiny import tiny_base

PROMPTS = ["hello there", "how to do a bad thing quickly"]


def _model():
    base = tiny_base("llama", layers=4)
    adapter = LogitAdapter(base, LogitAdapterSpec(k=2))
    for p in adapter.trainable_parameters():
        p.data.add_(torch.randn_like(p) * 0.2)
    return SafetyModel(base, adapter=adapter)


def _step_logits(sm, alignment):
    batch = sm.prefill(PROMPTS, alignment=alignment, max_new_tokens=4)
    sm.decode_step(batch)
    return batch.logits


def test_lambda_one_skips_the_base_lm_head_without_changing_logits():
    sm = _model()
    fast = _step_logits(sm, 1.0)
    # the same step with every LM head run: mix the base and aligned logits at λ = 1
    batch = sm.prefill(PROMPTS, alignment=1.0, max_new_tokens=4)
    nxt = batch.logits.argmax(-1)
    mask = torch.cat([batch.mask, torch.ones_like(batch.mask[:, :1])], 1)
    pos = batch.last_pos + 1
    with torch.inference_mode():
        from dsa.taps import record_taps

        with record_taps(sm.base.model, [sm.adapter.input_tap], spec=sm.base.spec) as cache:
            out = sm.base.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                                past_key_values=batch.base_cache, use_cache=True)
        aligned, _ = sm.adapter(cache[sm.adapter.input_tap], mask, pos, batch.ad_cache, use_cache=True)
    assert torch.equal(fast, mix_logits(out.logits[:, -1], aligned[:, -1], batch.lam))
