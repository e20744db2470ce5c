"""Subspace analysis math and update readers on tiny random models (no downloads)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch

from dsa.analysis.compare import analyze_updates
from dsa.analysis.interference import (
    input_second_moments,
    lowrank_output_energy,
    output_energy,
    relative_output_energy,
)
from dsa.analysis.subspace import (
    energy_curve,
    lowrank_svd,
    principal_angles,
    projection_energy,
    random_basis,
    svd,
)
from dsa.analysis.updates import WeightReader, module_of, open_update

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _w0(d_out=48, d_in=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d_out, d_in, generator=g, dtype=torch.float64)


def test_projection_energy_inside_and_orthogonal():
    W0 = _w0()
    f = svd(W0)
    k = 6
    g = torch.Generator().manual_seed(1)
    inside = f.U[:, :k] @ torch.randn(k, W0.shape[1], generator=g, dtype=torch.float64)
    outside = f.U[:, k:] @ torch.randn(f.U.shape[1] - k, W0.shape[1], generator=g, dtype=torch.float64)
    assert projection_energy(W0, inside, k) == pytest.approx(1.0, abs=1e-10)
    assert projection_energy(W0, outside, k) == pytest.approx(0.0, abs=1e-10)
    right_inside = torch.randn(W0.shape[0], k, generator=g, dtype=torch.float64) @ f.Vh[:k]
    assert projection_energy(W0, right_inside, k, side="right") == pytest.approx(1.0, abs=1e-10)


def test_energy_curve_is_cumulative_and_reaches_one():
    W0, dW = _w0(32, 32), _w0(32, 32, seed=3)
    curve = energy_curve(svd(W0).U, svd(dW))
    assert torch.all(curve[1:] >= curve[:-1] - 1e-12)
    assert float(curve[-1]) == pytest.approx(1.0, abs=1e-10)


def test_random_baseline_is_k_over_d():
    d, k = 200, 20
    dW = svd(_w0(d, 30, seed=5))
    g = torch.Generator().manual_seed(0)
    draws = [float(energy_curve(random_basis(d, k, g), dW)[k - 1]) for _ in range(200)]
    assert np.mean(draws) == pytest.approx(k / d, rel=0.05)


def test_principal_angles_match_scipy():
    g = torch.Generator().manual_seed(2)
    A = torch.linalg.qr(torch.randn(30, 5, generator=g, dtype=torch.float64))[0]
    B = torch.linalg.qr(torch.randn(30, 3, generator=g, dtype=torch.float64))[0]
    ours = np.sort(principal_angles(A, B).numpy())
    ref = np.sort(scipy.linalg.subspace_angles(A.numpy(), B.numpy()))
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_lowrank_svd_equals_dense():
    g = torch.Generator().manual_seed(4)
    B, A = torch.randn(40, 4, generator=g), torch.randn(4, 25, generator=g)
    f = lowrank_svd(B, A, 2.5)
    np.testing.assert_allclose((f.U * f.S) @ f.Vh, 2.5 * (B.double() @ A.double()), atol=1e-9)
    np.testing.assert_allclose(f.S, torch.linalg.svdvals(2.5 * (B.double() @ A.double()))[:4], atol=1e-9)


def test_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="shape mismatch"):
        projection_energy(_w0(10, 8), _w0(8, 10), 2)


# --- tiny random Llama + PEFT LoRA + full fine-tune dirs -------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=97, max_position_embeddings=64)
    base = LlamaForCausalLM(cfg).eval()
    base.save_pretrained(root / "base")
    base_sd = {k: v.clone() for k, v in base.state_dict().items()}

    to_adapt = LlamaForCausalLM(cfg).eval()
    to_adapt.load_state_dict(base_sd)
    peft_model = get_peft_model(to_adapt, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    peft_model.save_pretrained(root / "lora")
    merged = {k: v.clone() for k, v in peft_model.merge_and_unload().state_dict().items()}

    ft = LlamaForCausalLM(cfg).eval()
    ft.load_state_dict(base_sd)
    with torch.no_grad():
        for n, p in ft.named_parameters():
            if p.ndim == 2 and "layers" in n:
                p.add_(torch.randn_like(p) * 0.01)
    ft.save_pretrained(root / "full")
    return {"root": root, "base_sd": base_sd, "merged": merged, "ft": ft, "base": base}


def test_module_of():
    assert module_of("model.layers.12.self_attn.q_proj.weight") == (12, "q")
    assert module_of("model.layers.0.mlp.down_proj.weight") == (0, "down")


def test_peft_delta_is_scale_b_a_and_matches_merge(tiny):
    reader = WeightReader(tiny["root"] / "base")
    upd = open_update(tiny["root"] / "lora", reader)
    assert upd.kind == "lora" and len(upd.keys()) == 2 * len(TARGETS)
    lora = WeightReader(tiny["root"] / "lora")
    key = "model.layers.1.mlp.up_proj.weight"
    d = upd.delta(key)
    A = lora.get("base_model.model.model.layers.1.mlp.up_proj.lora_A.weight").double()
    B = lora.get("base_model.model.model.layers.1.mlp.up_proj.lora_B.weight").double()
    assert d.scale == 2.0
    np.testing.assert_allclose(d.dense(), 2.0 * B @ A, atol=1e-12)
    for key in upd.keys():
        merged_minus_base = tiny["merged"][key].double() - tiny["base_sd"][key].double()
        np.testing.assert_allclose(upd.delta(key).dense(), merged_minus_base, atol=1e-5)


def test_full_ft_streaming_equals_in_memory(tiny):
    reader = WeightReader(tiny["root"] / "base")
    upd = open_update(tiny["root"] / "full", reader)
    assert upd.kind == "full" and len(upd.keys()) == 2 * len(TARGETS)
    res = analyze_updates(reader, {"full": upd}, ks=[1, 4, 16], rank=4, progress=False)["full"]
    ft_sd = tiny["ft"].state_dict()
    for row in res["per_layer"]:
        W0 = tiny["base_sd"][row["key"]].double()
        dW = ft_sd[row["key"]].double() - W0
        for k in (1, 4, 16):
            assert row["full"]["proj_energy"][k] == pytest.approx(projection_energy(W0, dW, k), abs=1e-9)
            f = svd(dW).top(4)
            assert row["top_r"]["proj_energy"][k] == pytest.approx(
                projection_energy(W0, (f.U * f.S) @ f.Vh, k), abs=1e-9)
    assert set(res["overall"]["proj_energy_k"]) == {1, 4, 16}
    assert 0 < res["overall"]["top_r_energy_share"] < 1


def test_bad_paths_and_mismatched_shapes(tiny, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    reader = WeightReader(tiny["root"] / "base")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        open_update(tmp_path / "nope", reader)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a PEFT adapter"):
        open_update(tmp_path / "empty", reader)
    other = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=97))
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="shape mismatch"):
        open_update(tmp_path / "other", reader)
    with pytest.raises(ValueError, match="shape mismatch"):
        open_update(tiny["root"] / "lora", WeightReader(tmp_path / "other"))
    cfg = json.loads((tiny["root"] / "lora" / "adapter_config.json").read_text())
    assert cfg["r"] == 4


def test_interference_matches_direct_outputs(tiny):
    model = tiny["base"]

    class Tok:  # whitespace "tokenizer" over the tiny vocab
        def __call__(self, texts, **_):
            ids = [[hash(w) % 97 for w in t.split()] for t in texts]
            n = max(map(len, ids))
            out = {"input_ids": torch.tensor([i + [0] * (n - len(i)) for i in ids]),
                   "attention_mask": torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i in ids])}

            class Enc(dict):
                def to(self, _device):
                    return self
            return Enc(out)

    names = [f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in ("q_proj", "k_proj")]
    names.append("model.layers.0.mlp.down_proj")
    texts = ["a b c d", "e f", "g h i j k l"]
    mom, n = input_second_moments(model, Tok(), texts, names, batch_size=2)
    assert n == 12
    assert mom["model.layers.0.self_attn.q_proj"] is mom["model.layers.0.self_attn.k_proj"]
    xs = []
    h = model.get_submodule("model.layers.1.self_attn.q_proj").register_forward_pre_hook(
        lambda _m, a: xs.append(a[0][0]))
    for t in texts:
        model(**Tok()([t]))
    h.remove()
    X = torch.cat(xs).detach().double()  # [tokens, d]
    W0 = tiny["base_sd"]["model.layers.1.self_attn.q_proj.weight"].double()
    dW = torch.randn_like(W0) * 0.1
    direct = float((X @ dW.T).pow(2).sum() / (X @ W0.T).pow(2).sum())
    C = mom["model.layers.1.self_attn.q_proj"]
    assert relative_output_energy(W0, dW, C) == pytest.approx(direct, rel=1e-4)
    B, A = torch.randn(W0.shape[0], 3), torch.randn(3, W0.shape[1])
    assert lowrank_output_energy(B, A, 0.5, C) == pytest.approx(output_energy(0.5 * B @ A, C), rel=1e-4)


def test_cli_writes_json_plots_and_doc(tiny, tmp_path):
    from dsa.cli import main

    root = tiny["root"]
    out, doc = tmp_path / "subspace.json", tmp_path / "docs" / "results-subspace.md"
    rc = main(["analyze", "subspace", "--base", str(root / "base"), "--adapter", f"patch={root / 'lora'}",
               "--compare", f"ft={root / 'full'}", "--ks", "1,4,16", "--k-ref", "4", "--no-interference",
               "--out", str(out), "--doc", str(doc), "--img-dir", str(tmp_path / "docs" / "img")])
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data) == {"patch", "ft"}
    o = data["patch"]["overall"]
    assert set(o["proj_energy_k"]) == set(o["random_baseline_k"]) == {"1", "4", "16"}
    assert len(data["patch"]["per_layer"]) == 14 and "full_delta" in data["ft"]["per_layer"][0]
    assert data["ft"]["rank"] == 4  # the LoRA's rank sets the top-r view of the full fine-tune
    text = doc.read_text()
    assert "LoRA more orthogonal than full fine-tuning" in text and "img/subspace-heatmap.png" in text
    for name in ("heatmap", "curves", "modules"):
        assert (tmp_path / "docs" / "img" / f"subspace-{name}.png").stat().st_size > 1000


def test_cli_bad_adapter_path_is_one_line_error(tiny, tmp_path, capsys):
    from dsa.cli import main

    rc = main(["analyze", "subspace", "--base", str(tiny["root"] / "base"), "--adapter", str(tmp_path / "missing"),
               "--no-interference", "--out", str(tmp_path / "x.json"), "--doc", ""])
    assert rc == 2
    assert "is not a directory" in capsys.readouterr().err
