"""Every architecture of the table: the taps add up to the residual stream, on a tiny random model."""

import dataclasses

import pytest
import torch

from dsa.taps import (
    ARCHITECTURES,
    ArchSpec,
    arch_spec,
    check_identity,
    identity_errors,
    run_with_taps,
)
from tests.tiny import tiny_config, tiny_model


def _inputs(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 290, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0  # a padded row
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_table_entry_has_a_tiny_config(arch):
    cfg = tiny_config(arch)
    assert cfg.model_type == arch


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_taps_add_up_to_the_residual_stream(arch):
    model = tiny_model(arch)  # fp32
    assert model.config.model_type == arch
    errors = identity_errors(model, _inputs(model))
    assert len(errors) == 3
    assert max(errors) < 1e-5, errors  # embed + Σ_{j≤i}(attn_out_j + mlp_out_j) = resid_post_i, every i
    assert check_identity(model) < 1e-5  # the same check the results file runs, and final_norm


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_taps_leave_the_logits_unchanged(arch):
    model = tiny_model(arch)
    inputs = _inputs(model)
    with torch.no_grad():
        ref = model(**inputs).logits
        out, cache = run_with_taps(model, inputs, ["embed", "layers.*.attn_out", "layers.*.mlp_out", "all",
                                                   "final_norm"])
    assert torch.equal(out.logits, ref)
    lm_head = model.get_submodule(arch_spec(model).lm_head)
    assert lm_head.weight.shape[-1] == cache["final_norm"].shape[-1]


@pytest.mark.parametrize(("arch", "wrong"), [
    ("gemma2", {"attn": "self_attn", "mlp": "mlp"}),  # the block outputs before their post-norms
    ("gemma3_text", {"attn": "self_attn", "mlp": "mlp"}),
    ("olmo2", {"attn": "self_attn", "mlp": "mlp"}),
    ("granite", {"residual_scale": None}),
])
def test_the_check_sees_a_wrong_entry(arch, wrong):
    model = tiny_model(arch)
    spec = dataclasses.replace(arch_spec(model), **wrong)
    assert min(identity_errors(model, _inputs(model), spec=spec)) > 1e-2
    with pytest.raises(AssertionError, match="differs from layers"):
        check_identity(model, spec=spec)


def test_the_check_works_in_bf16_with_a_looser_tolerance():
    model = tiny_model("gemma2", dtype=torch.bfloat16)
    assert check_identity(model, rtol=5e-2) < 5e-2


def test_a_model_outside_the_table_with_its_own_spec():
    model = tiny_model("gpt_neox")
    assert "gpt_neox" not in ARCHITECTURES
    spec = ArchSpec(layers="gpt_neox.layers", embed="gpt_neox.embed_in", final_norm="gpt_neox.final_layer_norm",
                    attn="post_attention_dropout", mlp="post_mlp_dropout")
    assert check_identity(model, spec=spec) < 1e-5
