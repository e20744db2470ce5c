"""dsa inside vLLM: guard heads, per-request λ and the DSA adapter tail in vLLM's own forward.

Pieces (each a small module):
    config   the engine's dsa settings (`hf_overrides["dsa"]`), base fingerprint of a weights dir
    model    `DSALlamaForCausalLM`: base + guard pooling + policy λ + adapter tail + logit mixing
    rows     `DSARowState`: a logits processor that mirrors the persistent batch for the model
    worker   `DSAWorkerExtension`: returns guard scores and λ per request to the caller
    llm      `VllmSafetyModel`: a `SafetyModel`-like API over `vllm.LLM`

`register` is the `vllm.general_plugins` entry point (run in every vLLM process); it only
registers the model class by name, so importing vLLM stays lazy.
"""

from __future__ import annotations

import os


def register() -> None:
    """vLLM plugin hook: make `DSALlamaForCausalLM` selectable through `hf_overrides`."""
    # The persistent-batch bookkeeping (logits processor BatchUpdate) is the V1 model runner's.
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    from vllm import ModelRegistry

    from dsa.vllm.config import ARCHITECTURE

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "dsa.vllm.model:DSALlamaForCausalLM")
