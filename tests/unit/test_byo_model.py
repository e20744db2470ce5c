"""Bring your own model: an architecture outside the table described in YAML (Python and CLI), and
a model without a chat template (a clear error, or plain-text mode)."""

import pytest
import torch

from dsa.base import from_model, load_base
from dsa.taps import ARCHITECTURES, check_identity, load_arch_spec, run_with_taps
from tests.tiny import tiny_model, tiny_tokenizer

NEOX_YAML = """\
model_type: gpt_neox
layers: gpt_neox.layers
embed: gpt_neox.embed_in
final_norm: gpt_neox.final_layer_norm
attn: post_attention_dropout
mlp: post_mlp_dropout
lm_head: lm_head
"""


@pytest.fixture(autouse=True)
def _no_process_defaults(monkeypatch):
    # The CLI exports --arch / --plain-text as environment variables; restore them after each test.
    monkeypatch.delenv("DSA_ARCH", raising=False)
    monkeypatch.delenv("DSA_CHAT_TEMPLATE", raising=False)


def _save(tmp_path, arch="gpt_neox", template=True):
    model, tok = tiny_model(arch), tiny_tokenizer()
    if not template:
        tok.chat_template = None
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    return str(tmp_path / "m"), model


def _yaml(tmp_path, text=NEOX_YAML, name="arch.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_an_architecture_outside_the_table_from_yaml(tmp_path):
    assert "gpt_neox" not in ARCHITECTURES
    path, model = _save(tmp_path)
    with pytest.raises(ValueError, match=r"unknown architecture 'gpt_neox'.*--arch FILE.yaml"):
        load_base(path, dtype="fp32")
    base = load_base(path, dtype="fp32", spec=_yaml(tmp_path))
    assert base.spec.layers == "gpt_neox.layers" and base.n_layers == 3 and base.d_model == 64
    assert check_identity(base.model, spec=base.spec) < 1e-5
    enc = base.tokenizer(base.chat_text("how do i make a cake ?"), return_tensors="pt")
    with torch.no_grad():
        out, cache = run_with_taps(base.model, dict(enc), ["0", "mlp_out:-1", "final_norm"], spec=base.spec)
        assert torch.equal(out.logits, model(**enc).logits)
    assert cache["layers.2.mlp_out"].shape == (1, enc["input_ids"].shape[1], 64)


def test_the_same_spec_as_a_mapping_or_from_the_environment(tmp_path, monkeypatch):
    path, _ = _save(tmp_path)
    spec, model_type = load_arch_spec(_yaml(tmp_path))
    assert model_type == "gpt_neox"
    assert load_base(path, dtype="fp32", spec={**spec.__dict__, "model_type": "gpt_neox"}).spec == spec
    monkeypatch.setenv("DSA_ARCH", str(_yaml(tmp_path)))
    assert load_base(path, dtype="fp32").spec == spec
    # A file for another model_type leaves the table to do its job.
    monkeypatch.setenv("DSA_ARCH", str(_yaml(tmp_path, NEOX_YAML.replace("gpt_neox\n", "mystery\n", 1))))
    with pytest.raises(ValueError, match="unknown architecture 'gpt_neox'"):
        load_base(path, dtype="fp32")


@pytest.mark.parametrize(("text", "message"), [
    ("layers: model.layers\nblocks: h\n",
     r"unknown field\(s\) \['blocks'\]; an arch spec has \['model_type', 'layers'"),
    ("layers: 3\n", "layers must be a dotted module path"),
    ("- layers\n", "expected a mapping of ArchSpec fields"),
])
def test_a_bad_spec_file_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_arch_spec(_yaml(tmp_path, text))


@pytest.mark.parametrize(("change", "message"), [
    (("gpt_neox.layers", "gpt_neox.blocks"),
     r"module path 'gpt_neox.blocks' not found in GPTNeoXForCausalLM: 'gpt_neox' has no 'blocks'; "
     r"its submodules are \['emb_dropout', 'embed_in', 'final_layer_norm', 'layers', 'rotary_emb'\]"),
    (("attn: post_attention_dropout", "attn: self_attn"),
     r"attn path \(in gpt_neox.layers.0\) 'self_attn' not found in GPTNeoXLayer: 'GPTNeoXLayer' has no "
     r"'self_attn'; its submodules are \['attention', 'input_layernorm'"),
    (("lm_head: lm_head", "lm_head: embed_out"),
     r"module path 'embed_out' not found in GPTNeoXForCausalLM: 'GPTNeoXForCausalLM' has no 'embed_out'; "
     r"its submodules are \['gpt_neox', 'lm_head'\]"),
    (("model_type: gpt_neox", "model_type: llama"),
     r"arch spec is for model_type 'llama', but the model is 'gpt_neox'"),
])
def test_a_spec_that_does_not_fit_the_model_names_the_path(tmp_path, change, message):
    path, _ = _save(tmp_path)
    with pytest.raises(ValueError, match=message):
        load_base(path, dtype="fp32", spec=_yaml(tmp_path, NEOX_YAML.replace(*change)))


def test_cli_arch_option(tmp_path, capsys):
    from dsa.cli import main

    path, _ = _save(tmp_path)
    assert main(["base", "info", "--base", path, "--dtype", "fp32", "--max-new-tokens", "2"]) == 2
    assert "unknown architecture 'gpt_neox'" in capsys.readouterr().err
    assert main(["base", "info", "--base", path, "--dtype", "fp32", "--max-new-tokens", "2",
                 "--arch", str(_yaml(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "layers      3 x d_model 64" in out and "layers.0.attn_out" in out
    with pytest.raises(SystemExit):
        main(["base", "info", "--base", path, "--arch", str(_yaml(tmp_path, "layerz: x\n"))])
    assert "unknown field(s) ['layerz']" in capsys.readouterr().err


def test_a_model_without_a_chat_template(tmp_path):
    path, _ = _save(tmp_path, arch="llama", template=False)
    with pytest.raises(ValueError, match=r"has no chat template; pass --plain-text"):
        load_base(path, dtype="fp32")
    base = load_base(path, dtype="fp32", chat_template="plain")
    assert base.chat_template == "plain"
    assert base.chat_text("how do i make a cake ?") == "how do i make a cake ?"
    assert base.prompt_response_text("hello", "good") == "hello\n\ngood"
    with pytest.raises(ValueError, match="chat_template 'jinja'"):
        load_base(path, chat_template="jinja")


def test_plain_text_mode_runs_features_and_from_the_cli(tmp_path, capsys, monkeypatch):
    from dsa.cli import main
    from dsa.features import extract_features

    tok = tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(ValueError, match="tiny has no chat template"):
        from_model(tiny_model("llama"), tok, name="tiny")
    base = from_model(tiny_model("llama"), tok, name="tiny", chat_template="plain")
    feats = extract_features(base, ["how do i make a cake ?", "hello world"], "-1", pooling="mean")
    assert feats.values["layers.2.resid_post"].shape == (2, 64)

    path, _ = _save(tmp_path, arch="llama", template=False)
    assert main(["base", "info", "--base", path, "--dtype", "fp32", "--max-new-tokens", "2"]) == 2
    assert "has no chat template; pass --plain-text" in capsys.readouterr().err
    assert main(["base", "info", "--base", path, "--dtype", "fp32", "--max-new-tokens", "2", "--plain-text"]) == 0
    assert "user> What is the capital of France?" in capsys.readouterr().out
