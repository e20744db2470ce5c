"""dsa.vllm.config needs no vLLM: these run in the main suite (tiny model, no engine)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dsa.base import fingerprint
from dsa.vllm.config import ARCHITECTURE, DSAEngineConfig, dsa_overrides, fingerprint_dir
from tests.tiny import tiny_model


@pytest.mark.parametrize("tied", [False, True])
def test_weights_dir_fingerprint_equals_the_loaded_models(tmp_path, tied):
    model = tiny_model("llama")
    model.config.tie_word_embeddings = tied
    if tied:
        model.tie_weights()
    model.save_pretrained(tmp_path)
    assert fingerprint_dir(tmp_path) == fingerprint(model)


def test_overrides_round_trip_and_unknown_keys_are_refused(tmp_path):
    ov = dsa_overrides(["adapters/guards/prompt_safety"], "adapters/align/dsa_adapter", policy="linear", width=0.1)
    assert ov["architectures"] == [ARCHITECTURE]
    cfg = DSAEngineConfig.from_hf_config(SimpleNamespace(dsa=ov["dsa"]))
    assert cfg.policy == "linear" and cfg.policy_kwargs == {"width": 0.1}
    assert all(p.startswith("/") for p in cfg.guards) and cfg.adapter.startswith("/")
    with pytest.raises(ValueError, match="unknown dsa engine keys"):
        DSAEngineConfig.from_hf_config(SimpleNamespace(dsa={**ov["dsa"], "polcy": "step"}))
    with pytest.raises(ValueError, match="needs hf_overrides"):
        DSAEngineConfig.from_hf_config(SimpleNamespace())
