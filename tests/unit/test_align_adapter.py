"""DSA logit adapter: starts equal to the base, λ = 0 is the base exactly, save/load, training moves it."""

import pytest
import torch

from dsa.adapter_io import FingerprintMismatch
from dsa.align.logit_adapter import LogitAdapter, LogitAdapterSpec, mix_logits
from dsa.recipes.sft import AdapterStudent, Example, ModelStudent, batch_loss, train
from dsa.taps import record_taps

from .align_tiny import tiny_base


def _aligned(base, adapter, ids):
    with torch.no_grad(), record_taps(base.model, [adapter.input_tap]) as cache:
        out = base.model(input_ids=ids)
        aligned, _ = adapter(cache[adapter.input_tap])
    return out.logits, aligned


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_fresh_adapter_reproduces_base_logits(kind):
    base = tiny_base(kind, layers=4)
    adapter = LogitAdapter(base, LogitAdapterSpec(k=2))
    ids = torch.randint(3, 96, (2, 10))
    ref, aligned = _aligned(base, adapter, ids)
    assert torch.allclose(aligned, ref, atol=1e-5)


def test_mix_is_exact_at_lambda_zero_per_row():
    b, a = torch.randn(3, 5, 96), torch.randn(3, 5, 96)
    out = mix_logits(b, a, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(out[0], b[0])
    assert torch.allclose(out[1], 0.5 * b[1] + 0.5 * a[1])
    assert torch.allclose(out[2], a[2])


def test_save_load_roundtrip_and_fingerprint(tmp_path):
    base = tiny_base(layers=4)
    adapter = LogitAdapter(base, LogitAdapterSpec(k=2))
    for p in adapter.trainable_parameters():
        p.data.add_(torch.randn_like(p) * 0.01)
    ids = torch.randint(3, 96, (2, 8))
    _, want = _aligned(base, adapter, ids)
    adapter.save(tmp_path / "a", base)
    again = LogitAdapter.load(tmp_path / "a", base)
    assert torch.equal(_aligned(base, again, ids)[1], want)
    with pytest.raises(FingerprintMismatch):
        LogitAdapter.load(tmp_path / "a", tiny_base(layers=4, seed=3))


def test_loaded_adapter_hashes_the_same_whatever_the_seed(tmp_path):
    # the answer cache keys on every tensor of the module: nothing may be left random at load
    import hashlib

    from dsa.eval.answer_cache import _update

    base = tiny_base(layers=4)
    LogitAdapter(base, LogitAdapterSpec(k=2)).save(tmp_path / "a", base)
    digests = set()
    for seed in (1, 2):
        torch.manual_seed(seed)
        h = hashlib.sha256()
        _update(h, LogitAdapter.load(tmp_path / "a", base))
        digests.add(h.hexdigest())
    assert len(digests) == 1


def test_training_leaves_the_base_untouched_and_lowers_the_loss():
    base = tiny_base(layers=4)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    adapter = LogitAdapter(base, LogitAdapterSpec(k=2))
    rows = [Example("bad thing", "no way", "sft"), Example("nice thing", "sure", "distill"),
            Example("bad", "no", "dpo", rejected="yes")] * 2
    student = AdapterStudent(adapter, base)
    first, _ = batch_loss(student, base, rows)
    train(student, base, rows, epochs=8, batch_size=6, lr=3e-3)
    last, stats = batch_loss(student, base, rows)
    assert float(last) < float(first) and "dpo" in stats
    assert all(torch.equal(before[k], v) for k, v in base.model.state_dict().items())


def test_model_student_rejects_dpo():
    base = tiny_base()
    with pytest.raises(ValueError, match="DPO"):
        batch_loss(ModelStudent(base.model, base, []), base, [Example("a", "b", "dpo", "c")])
