import pytest
import torch

from dsa.taps import (
    ARCHITECTURES,
    ArchSpec,
    all_tap_names,
    arch_spec,
    hook_count,
    num_layers,
    record_taps,
    resolve_taps,
    run_with_taps,
)
from tests.tiny import tiny_model

ARCHS = sorted(ARCHITECTURES)


def _inputs(seed=1, batch=2, seq=7):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 290, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0  # a padded row
    return {"input_ids": ids, "attention_mask": mask}


def test_tap_names_are_frozen():
    assert all_tap_names(2) == [
        "embed",
        "layers.0.attn_out", "layers.0.mlp_out", "layers.0.resid_post",
        "layers.1.attn_out", "layers.1.mlp_out", "layers.1.resid_post",
        "final_norm",
    ]


@pytest.mark.parametrize(("shorthand", "expected"), [
    ("18", ["layers.18.resid_post"]),
    ("-1", ["layers.29.resid_post"]),
    ("12:15", ["layers.12.resid_post", "layers.13.resid_post", "layers.14.resid_post"]),
    ("mlp_out:-2", ["layers.28.mlp_out"]),
    ("resid_post:0:30:10", ["layers.0.resid_post", "layers.10.resid_post", "layers.20.resid_post"]),
    ("final_norm,embed,18,layers.18.resid_post", ["final_norm", "embed", "layers.18.resid_post"]),
    (["layers.3.attn_out"], ["layers.3.attn_out"]),
])
def test_resolve_shorthand(shorthand, expected):
    assert resolve_taps(shorthand, 30) == expected


def test_resolve_all_and_wildcard():
    assert resolve_taps("all", 3) == [f"layers.{i}.resid_post" for i in range(3)]
    assert resolve_taps("layers.*.mlp_out", 2) == ["layers.0.mlp_out", "layers.1.mlp_out"]


@pytest.mark.parametrize("bad", ["30", "layers.30.resid_post", "resid:3", "layers.1.foo", "", "x"])
def test_resolve_rejects_bad_taps(bad):
    with pytest.raises(ValueError):
        resolve_taps(bad, 30)


@pytest.mark.parametrize("arch", ARCHS)
def test_taps_equal_hf_hidden_states(arch):
    model = tiny_model(arch)
    n = num_layers(model)
    inputs = _inputs()
    taps = ["embed", *[f"layers.{i}.resid_post" for i in range(n)], "final_norm"]
    with torch.no_grad():
        ref = model(**inputs, output_hidden_states=True)
        out, cache = run_with_taps(model, inputs, taps)
    hs = ref.hidden_states  # [embeddings, layer 0 .. layer n-2 outputs, final-normed last layer]
    assert torch.equal(cache["embed"], hs[0])
    for i in range(n - 1):
        assert torch.equal(cache[f"layers.{i}.resid_post"], hs[i + 1]), f"layer {i}"
    assert torch.equal(cache["final_norm"], hs[n])
    final_norm = model.get_submodule(arch_spec(model).final_norm)
    assert torch.equal(final_norm(cache[f"layers.{n - 1}.resid_post"]), hs[n])
    assert torch.equal(out.logits, ref.logits)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_attn_and_mlp_outputs_sum_to_residual(arch):
    model = tiny_model(arch)
    with torch.no_grad():
        _, c = run_with_taps(model, _inputs(), ["layers.0.resid_post", "layers.1.attn_out",
                                                "layers.1.mlp_out", "layers.1.resid_post"])
    rebuilt = c["layers.0.resid_post"] + c["layers.1.attn_out"] + c["layers.1.mlp_out"]
    torch.testing.assert_close(rebuilt, c["layers.1.resid_post"])


def test_hooks_removed_after_exception_and_logits_restored():
    model = tiny_model("llama")
    inputs = _inputs()
    before = hook_count(model)
    with torch.no_grad():
        ref = model(**inputs).logits
        with pytest.raises(RuntimeError, match="boom"), record_taps(model, ["all", "final_norm"]) as cache:
            model(**inputs)
            assert cache  # filled in place
            raise RuntimeError("boom")
        assert hook_count(model) == before
        assert torch.equal(model(**inputs).logits, ref)


def test_stop_after_last_tap_skips_the_rest():
    model = tiny_model("llama")
    inputs = _inputs()
    calls = []
    model.model.layers[2].register_forward_hook(lambda *_: calls.append(2))
    with torch.no_grad():
        _, full = run_with_taps(model, inputs, ["layers.1.resid_post"])
        calls.clear()
        out, early = run_with_taps(model, inputs, ["layers.1.resid_post"], need_output=False)
    assert out is None and calls == []
    assert torch.equal(early["layers.1.resid_post"], full["layers.1.resid_post"])


def test_unknown_architecture_and_override():
    model = tiny_model("llama")
    model.config.model_type = "mystery"
    with pytest.raises(ValueError, match="unknown architecture 'mystery'"):
        run_with_taps(model, _inputs(), ["0"])
    _, cache = run_with_taps(model, _inputs(), ["0"], spec=ArchSpec())
    assert cache["layers.0.resid_post"].shape == (2, 7, 64)


def test_missing_module_path_is_a_clear_error():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="module path 'model.blocks' not found"):
        run_with_taps(model, _inputs(), ["0"], spec=ArchSpec(layers="model.blocks"))
