"""The compute bound that scripts/bench_vllm.py reports beside its dsa/plain throughput ratio."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from dsa.vllm.parity import compute_bound


@pytest.fixture
def dirs(tmp_path):
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir(), adapter.mkdir()
    layer = {"self_attn.q_proj.weight": (8, 8), "self_attn.o_proj.weight": (8, 8), "mlp.up_proj.weight": (16, 8),
             "input_layernorm.weight": (8,)}
    w = {f"model.layers.{i}.{k}": torch.zeros(s) for i in range(3) for k, s in layer.items()}
    w |= {"model.embed_tokens.weight": torch.zeros(50, 8), "model.norm.weight": torch.zeros(8)}
    save_file(w, str(base / "model.safetensors"))
    save_file({f"layers.3.{k}": torch.zeros(s) for k, s in layer.items()} | {"norm.weight": torch.zeros(8)},
              str(adapter / "adapter.safetensors"))
    return base, adapter


def test_counts_layers_head_and_tail(dirs):
    b = compute_bound(*dirs, rows_aligned=2, rows=4)
    per_layer = 8 * 8 + 8 * 8 + 16 * 8  # norms are not matrix work
    assert b["plain_macs_per_token"] == 3 * per_layer + 50 * 8  # tied embeddings serve as the LM head
    assert b["tail_macs_per_token"] == per_layer and b["lm_head_macs_per_token"] == 50 * 8
    plain = 3 * per_layer + 400
    assert b["ratio"] == round(plain / (plain + (per_layer + 400) * 2 / 4), 4)  # half the rows pay tail + head


def test_no_aligned_row_costs_nothing_and_more_cost_more(dirs):
    assert compute_bound(*dirs, rows_aligned=0, rows=4)["ratio"] == 1.0
    ratios = [compute_bound(*dirs, rows_aligned=k, rows=4)["ratio"] for k in range(1, 5)]
    assert ratios == sorted(ratios, reverse=True) and ratios[0] < 1.0


def test_untied_lm_head_is_counted(dirs):
    base, adapter = dirs
    save_file({"lm_head.weight": torch.zeros(60, 8)}, str(base / "zz-head.safetensors"))
    assert compute_bound(base, adapter, 1, 1)["lm_head_macs_per_token"] == 60 * 8
