"""Subspace analysis on the real embedded base: a random LoRA sits exactly at the random baseline."""

import pytest
import torch

from dsa.analysis.compare import analyze_updates
from dsa.analysis.pipeline import prompt_moments
from dsa.analysis.updates import WeightReader, open_update
from dsa.base import resolve_base_path
from tests.shared_data import require_data

pytestmark = pytest.mark.integration


def test_random_lora_matches_random_baseline_and_interference_is_small(real_base, tmp_path):
    require_data()  # the interference half reads prompts from the shared datasets
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "down_proj"], layers_to_transform=[0, 15])
    model = get_peft_model(real_base.model, cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 1e-3)
    model.save_pretrained(tmp_path / "lora")
    model.unload()  # give the shared real_base back untouched

    reader = WeightReader(resolve_base_path(real_base.name))
    upd = open_update(tmp_path / "lora", reader)
    modules = [k.removesuffix(".weight") for k in upd.keys()]
    moments = prompt_moments(real_base.name, modules, n_prompts=4)
    res = analyze_updates(reader, {"random": upd}, ks=[16, 64], moments=moments, progress=False)["random"]
    assert res["overall"]["n_modules"] == 4
    for k in (16, 64):
        e, b = res["overall"]["proj_energy_k"][k], res["overall"]["random_baseline_k"][k]
        assert e == pytest.approx(b, rel=0.25)
    assert 0 < res["interference"]["benign"]["pooled"] < 1e-3
