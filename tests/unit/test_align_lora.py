"""LoRA refusal patch: α = 0 is the base bit for bit, unpatch restores it, per-row α, save/load, PEFT."""

import json

import pytest
import torch

from dsa.adapter_io import FingerprintMismatch
from dsa.align.lora import LoRASpec, load_lora_patch, patch_lora

from .align_tiny import tiny_base


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _train_a_little(patch):
    for p in patch.parameters():
        torch.nn.init.normal_(p, std=0.05)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_strength_zero_and_unpatch_are_exact(kind):
    base = tiny_base(kind)
    ids = torch.randint(3, 96, (2, 11))
    ref = _logits(base.model, ids)
    patch = patch_lora(base.model, LoRASpec(r=4))
    assert torch.equal(_logits(base.model, ids), ref)  # B = 0 at init
    _train_a_little(patch)
    assert not torch.equal(_logits(base.model, ids), ref)
    patch.set_strength(0.0)
    assert torch.equal(_logits(base.model, ids), ref)
    patch.set_strength(1.0)
    patch.unpatch()
    assert torch.equal(_logits(base.model, ids), ref)
    assert not any("lora" in n for n, _ in base.model.named_parameters())


def test_per_row_strength_matches_scalar():
    base = tiny_base()
    ids = torch.randint(3, 96, (3, 9))
    patch = patch_lora(base.model, LoRASpec(r=4))
    _train_a_little(patch)
    patch.set_strength(torch.tensor([0.0, 1.0, 1.5]))
    rows = _logits(base.model, ids)
    for i, a in enumerate([0.0, 1.0, 1.5]):
        patch.set_strength(a)
        assert torch.allclose(rows[i], _logits(base.model, ids)[i], atol=1e-5)
    patch.unpatch()
    assert torch.equal(rows[0], _logits(base.model, ids)[0])


def test_save_load_roundtrip_and_fingerprint(tmp_path):
    base = tiny_base()
    ids = torch.randint(3, 96, (2, 7))
    patch = patch_lora(base.model, LoRASpec(r=4, layers=[0, 2]))
    _train_a_little(patch)
    patch.set_strength(0.7)
    want = _logits(base.model, ids)
    patch.save(tmp_path / "p", base.fingerprint, base.name)
    patch.unpatch()
    again = load_lora_patch(tmp_path / "p", base.model, base.fingerprint)
    again.set_strength(0.7)
    assert torch.equal(_logits(base.model, ids), want)
    again.unpatch()
    other = tiny_base(seed=1)
    with pytest.raises(FingerprintMismatch, match="fingerprint"):
        load_lora_patch(tmp_path / "p", other.model, other.fingerprint)


def test_peft_export_loads_in_peft(tmp_path):
    peft = pytest.importorskip("peft")
    base = tiny_base()
    ids = torch.randint(3, 96, (2, 7))
    patch = patch_lora(base.model, LoRASpec(r=4))
    _train_a_little(patch)
    want = _logits(base.model, ids)
    patch.export_peft(tmp_path / "peft")
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4
    patch.unpatch()
    model = peft.PeftModel.from_pretrained(base.model, str(tmp_path / "peft"))
    assert torch.allclose(_logits(model, ids), want, atol=1e-4)
