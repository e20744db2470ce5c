"""A second base, loaded from a Hugging Face model directory as a user's own model is.

    DSA_SECOND_BASE=~/models/qwen2.5-0.5b-instruct .venv/bin/pytest -m integration tests/integration/test_second_base.py

Any Hugging Face causal LM directory: an architecture outside `dsa.taps.ARCHITECTURES` takes
`DSA_ARCH=FILE.yaml` (an ArchSpec in YAML), and a model without a chat template is run in
plain-text mode. Without `DSA_SECOND_BASE` (CI: no second chat model installs cleanly here) the
tests build one: a small random-weight Qwen2 (an architecture other than the embedded Llama)
saved with `save_pretrained` beside the embedded base's tokenizer and chat template, so the
directory path, another architecture's taps and the default fraction layers are exercised on
every run.
"""

import csv
import os
from pathlib import Path

import pytest
import torch

from dsa.base import load_base
from dsa.features import extract_features
from dsa.guards.config import GuardTrainConfig
from dsa.recipes.guard_train import train_guard
from dsa.taps import check_identity, identity_errors, run_with_taps

SECOND = os.environ.get("DSA_SECOND_BASE", "")
pytestmark = pytest.mark.integration


def _tiny_qwen2_dir(root: Path) -> Path:
    """A real-format model directory: random Qwen2 weights (6 layers) + the embedded tokenizer."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from dsa.base import resolve_base_path

    tok = AutoTokenizer.from_pretrained(resolve_base_path("smollm2-135m-instruct"))
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                      tie_word_embeddings=True)
    path = root / "tiny-qwen2"
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def second_base(tmp_path_factory):
    from transformers import AutoTokenizer

    path = Path(SECOND).expanduser() if SECOND else _tiny_qwen2_dir(tmp_path_factory.mktemp("second_base"))
    if not (path / "config.json").is_file():
        pytest.fail(f"DSA_SECOND_BASE={SECOND!r} is not a Hugging Face model directory (no config.json)")
    has_template = bool(getattr(AutoTokenizer.from_pretrained(path), "chat_template", None))
    return load_base(str(path), dtype="fp32", chat_template="auto" if has_template else "plain")


def _enc(base, texts):
    base.tokenizer.padding_side = "right"
    return dict(base.tokenizer([base.chat_text(t) for t in texts], return_tensors="pt", padding=True))


def test_taps_add_up_on_the_real_model(second_base):
    enc = _enc(second_base, ["What is the capital of France?", "Write one line about the sea."])
    errors = identity_errors(second_base.model, enc, spec=second_base.spec)
    assert len(errors) == second_base.n_layers
    print(f"{second_base.model.config.model_type}: worst relative error {max(errors):.2e} over {len(errors)} layers")
    assert check_identity(second_base.model, enc, spec=second_base.spec, rtol=1e-3) < 1e-3


def test_taps_equal_output_hidden_states(second_base):
    enc = _enc(second_base, ["Hi there"])
    n = second_base.n_layers
    with torch.inference_mode():
        hs = second_base.model(**enc, output_hidden_states=True).hidden_states
        _, cache = run_with_taps(second_base.model, enc, ["embed", "all"], spec=second_base.spec)
    assert len(hs) == n + 1
    assert torch.equal(cache["embed"], hs[0])
    for i in range(n - 1):
        assert torch.equal(cache[f"layers.{i}.resid_post"], hs[i + 1]), f"layer {i}"


def test_features_and_a_guard_with_the_default_fraction_layers(second_base, tmp_path, monkeypatch):
    monkeypatch.setenv("DSA_CACHE", str(tmp_path / "cache"))  # leave the shared cache alone
    texts = ["how do I bake bread", "you are a worthless idiot", "thanks for the help", "I hate your kind"]
    feats = extract_features(second_base, texts, "0.62,-1", pooling="mean")
    layer = round(0.62 * (second_base.n_layers - 1))
    assert feats.values[f"layers.{layer}.resid_post"].shape == (4, second_base.d_model)

    data = tmp_path / "comments.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(20):
            w.writerow([f"{texts[i % 4]} ({i})", i % 2])
    cfg = GuardTrainConfig(data=str(data), map={"text": "text", "label": "label"})  # default layer_sets / ladder
    resolved = cfg.resolved(second_base.n_layers)
    assert all(0 <= i < second_base.n_layers for ls in resolved.layer_sets for i in ls)
    adapter = train_guard(second_base, cfg, feature_root=tmp_path / "store")
    assert 0.0 <= adapter.info["test_auc"] <= 1.0
