"""The HF runtime under the vLLM venv's transformers (issue #25: one KV-cache shim, tested in both
venvs). The main venv's transformers names the cache argument `cache`, this venv's (5.19)
`past_key_values`; dsa.kvcache picks the installed name. The same invariants as
tests/unit/test_runtime.py, run here on tiny random models: cached greedy decoding at λ = 0 equals
transformers' own `generate` token for token, a mixed-λ batch equals its single-λ runs (the cache
is carried across rows), and no deprecated-argument warning is raised."""

from __future__ import annotations

import inspect
import warnings

import pytest

from tests.unit.test_runtime import PROMPTS, _hf_greedy, _model

pytestmark = pytest.mark.vllm


def test_the_shim_names_the_argument_this_transformers_takes():
    from transformers import LlamaForCausalLM

    from dsa.kvcache import kv

    (name,) = kv(LlamaForCausalLM.__new__(LlamaForCausalLM), None)
    assert name in inspect.signature(LlamaForCausalLM.forward).parameters


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_lambda_zero_equals_transformers_greedy(kind):
    sm = _model(kind)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = sm.generate(PROMPTS, alignment=0.0, max_new_tokens=6)
    assert not [w for w in caught if "past_key_values" in str(w.message) or "cache" in str(w.message).lower()], \
        [str(w.message) for w in caught]
    for prompt, r in zip(PROMPTS, res, strict=True):
        assert r.token_ids == _hf_greedy(sm.base, prompt, 6)[: len(r.token_ids)]


def test_mixed_lambda_batch_equals_single_lambda_runs():
    sm = _model()
    batch = sm.generate(PROMPTS, alignment=[0.0, 1.0, 0.5], max_new_tokens=6)
    runs = {lam: sm.generate(PROMPTS, alignment=lam, max_new_tokens=6) for lam in (0.0, 1.0, 0.5)}
    assert [r.token_ids for r in batch] == [runs[lam][i].token_ids for i, lam in enumerate((0.0, 1.0, 0.5))]
    assert [r.lam for r in batch] == [0.0, 1.0, 0.5]
