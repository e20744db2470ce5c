"""What the dsa vLLM model reads from the engine: adapter paths and the policy, carried in the
base's HF config (`hf_overrides={"architectures": [...], "dsa": {...}}`), so the base weights
directory is served as is.

    overrides = dsa_overrides(guards=["adapters/guards/prompt_safety"], adapter="adapters/align/dsa_adapter")
    LLM(model=base_dir, hf_overrides=overrides, ...)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ARCHITECTURE = "DSALlamaForCausalLM"
ROW_STATE = "dsa.vllm.rows:DSARowState"
WORKER_EXTENSION = "dsa.vllm.worker.DSAWorkerExtension"


@dataclass
class DSAEngineConfig:
    """The dsa part of a served model.

    guards: guard adapter directories (PLR or window heads; read from the base's own prefill).
    adapter: a DSA logit adapter directory (the tail copy of the last k layers), or None.
    policy: guard score → λ (`dsa.align.policy.POLICIES`), around the policy head's stored threshold.
    policy_head: the qualified head driving the policy (default as `SafetyModel`).
    policy_kwargs: extra keyword arguments of the policy (e.g. width).
    verify_base: check each adapter's base fingerprint against the served weights directory.
    allow_exact_alignment: honour `extra_args["dsa_alignment_exact"]` (λ set exactly, below the
        policy too). Off by default, so a client of a bare engine (`vllm serve`) can only raise λ;
        `dsa serve --engine vllm` turns it on and lets only API keys with "override" use it.
    """

    guards: list[str] = field(default_factory=list)
    adapter: str | None = None
    policy: str = "step"
    policy_head: str | None = None
    policy_kwargs: dict = field(default_factory=dict)
    verify_base: bool = True
    allow_exact_alignment: bool = False

    @classmethod
    def from_hf_config(cls, hf_config) -> DSAEngineConfig:
        raw = getattr(hf_config, "dsa", None)
        if raw is None:
            raise ValueError(f"{ARCHITECTURE} needs hf_overrides={{'dsa': {{...}}}} (see dsa.vllm.config)")
        raw = dict(raw)
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown dsa engine keys {sorted(unknown)}: expected {sorted(cls.__dataclass_fields__)}")
        return cls(**raw)


def dsa_overrides(guards=(), adapter=None, policy: str = "step", policy_head: str | None = None,
                  verify_base: bool = True, allow_exact_alignment: bool = False, **policy_kwargs) -> dict:
    """`hf_overrides` selecting the dsa model with these adapters (paths made absolute, since the
    engine's worker processes may run elsewhere)."""
    cfg = DSAEngineConfig([str(Path(g).resolve()) for g in guards],
                          str(Path(adapter).resolve()) if adapter else None, policy, policy_head,
                          dict(policy_kwargs), verify_base, allow_exact_alignment)
    return {"architectures": [ARCHITECTURE], "dsa": asdict(cfg)}


def fingerprint_dir(path: str | Path, n_samples: int = 64) -> str:
    """`dsa.base.fingerprint` of a Hugging Face weights directory, read from its safetensors (the
    served model's vLLM modules have other names and fused shapes, so the files are the ground truth)."""
    from safetensors import safe_open

    from dsa.base import fingerprint_tensors

    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no safetensors weights to fingerprint")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                tensors[k] = st.get_tensor(k)
    if cfg.get("tie_word_embeddings") and "lm_head.weight" not in tensors:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]  # state_dict lists tied weights twice
    return fingerprint_tensors(cfg, tensors.items(), n_samples)
