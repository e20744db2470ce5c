"""SafetyModel: one base prefill per request, per-row λ, λ = 0 rows equal the base bit for bit."""

import pytest
import torch

from dsa.align.logit_adapter import LogitAdapter, LogitAdapterSpec
from dsa.align.policy import make_policy
from dsa.runtime import SafetyModel

from .align_tiny import ForwardCounter, ProbeBank, tiny_base

PROMPTS = ["hello there", "how to do a bad thing quickly", "what is two plus two"]


def _model(kind="llama", bias=0.0):
    base = tiny_base(kind, layers=4)
    adapter = LogitAdapter(base, LogitAdapterSpec(k=2))
    for p in adapter.trainable_parameters():
        p.data.add_(torch.randn_like(p) * 0.2)
    bank = ProbeBank("layers.1.resid_post", base.d_model, bias=bias)
    return SafetyModel(base, bank, adapter, make_policy("step"))


def _hf_greedy(base, prompt, n):
    enc = base.tokenizer([base.chat_text(prompt)], return_tensors="pt")
    with torch.no_grad():
        out = base.model.generate(**enc, max_new_tokens=n, do_sample=False, eos_token_id=None,
                                  pad_token_id=0)
    return out[0, enc["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_lambda_zero_equals_plain_greedy_decoding(kind):
    sm = _model(kind)
    res = sm.generate(PROMPTS[:1], alignment=0.0, max_new_tokens=6)
    assert res[0].token_ids == _hf_greedy(sm.base, PROMPTS[0], 6)[: len(res[0].token_ids)]


def test_one_prefill_per_request_and_adapter_only_when_needed():
    sm = _model()
    base_stack = ForwardCounter(sm.base.model.model)
    tail = ForwardCounter(sm.adapter.tail)
    res = sm.generate(PROMPTS, alignment=[0.0, 1.0, 0.5], max_new_tokens=5)
    # one prefill for the whole batch, then one single-token step per decoded token (the last
    # picked token needs no forward)
    assert base_stack.seq_lens[0] > 1 and all(n == 1 for n in base_stack.seq_lens[1:])
    assert len(base_stack.seq_lens) == max(len(r.token_ids) for r in res)
    assert len(tail.seq_lens) == len(base_stack.seq_lens)  # adapter decodes alongside
    base_stack.seq_lens.clear()
    tail.seq_lens.clear()
    sm.generate(PROMPTS, alignment=0.0, max_new_tokens=5)
    assert len([n for n in base_stack.seq_lens if n > 1]) == 1
    assert tail.seq_lens == []  # λ = 0 everywhere: the adapter never runs
    base_stack.remove()
    tail.remove()


def test_per_row_lambda_matches_single_row_runs():
    sm = _model()
    batch = sm.generate(PROMPTS, alignment=[0.0, 1.0, 0.0], max_new_tokens=6)
    base_only = sm.generate(PROMPTS, alignment=0.0, max_new_tokens=6)
    aligned = sm.generate(PROMPTS, alignment=1.0, max_new_tokens=6)
    assert batch[0].token_ids == base_only[0].token_ids and batch[2].token_ids == base_only[2].token_ids
    assert batch[1].token_ids == aligned[1].token_ids
    assert [r.lam for r in batch] == [0.0, 1.0, 0.0]


def test_auto_alignment_uses_guard_scores_and_policy():
    for bias, want in ((-50.0, 0.0), (50.0, 1.0)):
        sm = _model(bias=bias)
        res = sm.generate(PROMPTS, alignment="auto", max_new_tokens=3)
        assert all(r.lam == want for r in res)
        assert all(set(r.guard_scores) == {"unsafe"} for r in res)
        assert all(r.stop_reason in ("eos", "length") for r in res)


def test_alignment_without_adapter_is_an_error():
    sm = _model()
    sm.adapter = None
    with pytest.raises(ValueError, match="adapter"):
        sm.generate(PROMPTS, alignment=1.0, max_new_tokens=2)


def test_auto_without_adapter_or_guard_is_an_error_not_a_silent_zero():
    sm = _model()
    sm.adapter = None
    with pytest.raises(ValueError, match="alignment adapter"):
        sm.generate(PROMPTS, alignment="auto", max_new_tokens=2)
    sm = _model()
    sm.guards = None
    with pytest.raises(ValueError, match="prompt guard"):
        sm.generate(PROMPTS, alignment="auto", max_new_tokens=2)


@pytest.mark.parametrize("bad", [-0.5, 1.5, float("nan"), float("inf"), True, "0.5", [0.1, "x", 0.2]])
def test_alignment_must_be_a_finite_number_in_unit_interval(bad):
    with pytest.raises(ValueError, match="alignment"):
        _model().generate(PROMPTS, alignment=bad, max_new_tokens=2)


def test_min_alignment_only_raises_lambda():
    for bias in (-50.0, 50.0):  # policy λ 0 (benign) and 1 (flagged)
        sm = _model(bias=bias)
        res = sm.generate(PROMPTS, alignment="auto", min_alignment=0.25, max_new_tokens=2)
        assert [r.lam for r in res] == [max(0.25, 1.0 if bias > 0 else 0.0)] * 3
    res = _model().generate(PROMPTS, alignment=[0.0, 0.5, 1.0], min_alignment=0.25, max_new_tokens=2)
    assert [r.lam for r in res] == [0.25, 0.5, 1.0]


class _TwoHeadBank(ProbeBank):
    """A bank whose second head (a moderation category) is always high."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.heads = ["prompt_safety/unsafe", "toxigen/unsafe"]
        self.thresholds = {"prompt_safety/unsafe": 0.3, "toxigen/unsafe": 0.9}

    def score(self, cache, attention_mask):
        s = super().score(cache, attention_mask)["unsafe"]
        return {"prompt_safety/unsafe": s, "toxigen/unsafe": torch.ones_like(s)}


def test_policy_uses_the_named_head_and_its_calibrated_threshold():
    base = _model().base
    bank = _TwoHeadBank("layers.1.resid_post", base.d_model, bias=-50.0)
    sm = SafetyModel(base, bank, LogitAdapter(base, LogitAdapterSpec(k=2)), "step")
    assert sm.policy_head == "prompt_safety/unsafe"
    # the other head's score (1.0) must not drive λ: the max over heads did before
    assert [r.lam for r in sm.generate(PROMPTS, alignment="auto", max_new_tokens=2)] == [0.0] * 3
    assert sm.policy(torch.tensor([0.29, 0.3])).tolist() == [0.0, 1.0]  # the stored threshold
    other = SafetyModel(base, bank, sm.adapter, "step", policy_head="toxigen")
    assert other.policy_head == "toxigen/unsafe"
    assert [r.lam for r in other.generate(PROMPTS, alignment="auto", max_new_tokens=2)] == [1.0] * 3
    with pytest.raises(ValueError, match="not loaded"):
        SafetyModel(base, bank, sm.adapter, "step", policy_head="nope")


def test_several_heads_without_the_default_need_a_policy_head_only_to_align():
    base = _model().base
    bank = _TwoHeadBank("layers.1.resid_post", base.d_model, bias=-50.0)
    bank.heads = ["mine/toxic", "mine/insult"]
    bank.thresholds = {"mine/toxic": 0.5, "mine/insult": 0.5}
    adapter = LogitAdapter(base, LogitAdapterSpec(k=2))
    with pytest.raises(ValueError, match="policy_head= one of"):
        SafetyModel(base, bank, adapter, "step")
    guard_only = SafetyModel(base, bank)  # scoring only: nothing for a policy to switch on
    assert guard_only.policy_head is None
    with pytest.raises(ValueError, match="policy_head= one of"):
        guard_only.policy_score({"mine/toxic": torch.zeros(1)})


def _patched_model(tmp_path=None):
    from dsa.align.lora import LoRASpec, patch_lora

    base = tiny_base("llama", layers=4)
    bank = ProbeBank("layers.1.resid_post", base.d_model)
    plain = [r.token_ids for r in SafetyModel(base).generate(PROMPTS, alignment=0.0, max_new_tokens=6)]
    patch = patch_lora(base.model, LoRASpec(r=4))
    for p in patch.parameters():
        torch.nn.init.normal_(p, std=0.3)
    patch.set_strength(0.0)
    return SafetyModel(base, bank, policy="step", patch=patch), plain


def test_lora_patch_route_lambda_zero_is_the_base_and_per_row_alpha_matches_a_global_patch():
    sm, plain = _patched_model()
    zero = sm.generate(PROMPTS, alignment=0.0, max_new_tokens=6)
    assert [r.token_ids for r in zero] == plain  # strength 0: the base bit for bit
    mixed = sm.generate(PROMPTS, alignment=[0.0, 1.0, 0.0], max_new_tokens=6)
    sm.patch.set_strength(1.0)  # the whole model patched at α = 1, decoded as the base
    full = SafetyModel(sm.base).generate(PROMPTS, alignment=0.0, max_new_tokens=6)
    sm.patch.set_strength(0.0)
    assert mixed[0].token_ids == plain[0] and mixed[2].token_ids == plain[2]
    assert mixed[1].token_ids == full[1].token_ids != plain[1]
    assert all(m.strength == 0.0 for m in sm.patch.modules.values())  # reset after every forward
    # the guard reads the unpatched states: scores do not depend on λ
    assert [r.guard_scores for r in mixed] == [r.guard_scores for r in zero]


def test_safety_model_load_routes_a_lora_patch_file(tmp_path):
    from dsa.align.lora import LoRASpec, patch_lora

    base = tiny_base("llama", layers=4)
    patch = patch_lora(base.model, LoRASpec(r=4))
    patch.save(tmp_path / "patch", base.fingerprint, base.name)
    patch.unpatch()
    sm = SafetyModel.load(base, adapter=tmp_path / "patch")
    assert sm.patch is not None and sm.adapter is None and sm.can_align
    assert sm.generate(PROMPTS[:1], alignment=1.0, max_new_tokens=2)[0].lam == 1.0
    with pytest.raises(ValueError, match="one alignment route"):
        SafetyModel(base, adapter=object(), patch=sm.patch)


def test_generation_passes_the_cache_under_the_installed_transformers_name():
    """Issue #25: the runtime passed `past_key_values=`, which transformers 5.24 warns about on every
    first generate (removed in 5.40); the argument's name now follows the installed version."""
    import warnings

    sm = _model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sm.generate(PROMPTS, alignment=[0.0, 1.0, 0.5], max_new_tokens=4)
    assert not [w for w in caught if "past_key_values" in str(w.message)], [str(w.message) for w in caught]
