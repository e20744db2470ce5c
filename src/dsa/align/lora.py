"""LoRA refusal patch (Mou et al., arXiv 2510.09004) with an inference-time strength α.

`patch_lora(model, ...)` replaces the targeted `nn.Linear`s **in place** by `LoRALinear`:

    out = base(x) + α · scale · B(A(x))          scale = lora_alpha / r

α (the patch strength) is a float or a per-row tensor [batch], changeable per request without
reloading. α = 0 skips the low-rank path, so the output is the base's bit for bit, and
`LoRAPatch.unpatch()` puts the original modules back. Weights are saved as a dsa adapter file
(safetensors + JSON with the base fingerprint) and exported in the PEFT format.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from dsa.adapter_io import atomic_save_tensors, atomic_write_text, load_adapter, save_adapter
from dsa.taps import decoder_layers

log = logging.getLogger(__name__)
KIND = "lora_patch"
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoRASpec:
    """Shape of a LoRA patch: which projections, rank and scaling."""

    r: int = 8
    lora_alpha: float = 16.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    layers: list[int] | None = None  # None = every decoder layer

    @property
    def scale(self) -> float:
        return self.lora_alpha / self.r


class LoRALinear(nn.Module):
    """`base(x) + strength · scale · B(A(x))`; the wrapped `nn.Linear` stays frozen and untouched."""

    def __init__(self, base: nn.Linear, r: int, scale: float):
        super().__init__()
        self.base = base
        self.scale = scale
        self.lora_A = nn.Linear(base.in_features, r, bias=False, dtype=torch.float32,
                                device=base.weight.device)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, dtype=torch.float32,
                                device=base.weight.device)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)  # a fresh patch is the identity
        self.strength: float | torch.Tensor = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        s = self.strength
        if isinstance(s, float | int):
            if s == 0:
                return out  # exactly the base
            delta = self.lora_B(self.lora_A(x.to(self.lora_A.weight.dtype)))
            return out + (s * self.scale * delta).to(out.dtype)
        if not bool(s.any()):
            return out
        # per-row strength: [batch] -> [batch, 1, ..., 1]; rows with 0 add exactly 0
        s = s.to(out.device, torch.float32).view(-1, *([1] * (out.dim() - 1)))
        delta = self.lora_B(self.lora_A(x.to(self.lora_A.weight.dtype)))
        return torch.where(s == 0, out, out + (s * self.scale * delta).to(out.dtype))

    def delta_weight(self) -> torch.Tensor:
        """ΔW = scale · B A  [out, in] (at strength 1)."""
        return self.scale * self.lora_B.weight @ self.lora_A.weight


@dataclass
class LoRAPatch:
    """Handle on a patched model: strength, trainable parameters, save/export, and `unpatch()`."""

    model: nn.Module
    spec: LoRASpec
    modules: dict[str, LoRALinear] = field(default_factory=dict)  # "layers.3.self_attn.q_proj" -> module
    _originals: dict[str, tuple[nn.Module, str, nn.Linear]] = field(default_factory=dict)

    def set_strength(self, alpha: float | torch.Tensor) -> None:
        """α for every patched module: a float, or a tensor [batch] (one α per row)."""
        for m in self.modules.values():
            m.strength = float(alpha) if isinstance(alpha, float | int) else alpha

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules.values() for p in (m.lora_A.weight, m.lora_B.weight)]

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, m in self.modules.items():
            out[f"{name}.lora_A"] = m.lora_A.weight.detach()
            out[f"{name}.lora_B"] = m.lora_B.weight.detach()
        return out

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = {f"{n}.lora_{x}" for n in self.modules for x in "AB"} - set(tensors)
        if missing:
            raise ValueError(f"LoRA weights missing for {sorted(missing)[:3]} ...")
        for name, m in self.modules.items():
            m.lora_A.weight.data.copy_(tensors[f"{name}.lora_A"])
            m.lora_B.weight.data.copy_(tensors[f"{name}.lora_B"])

    def unpatch(self) -> None:
        """Put the original `nn.Linear`s back; the model is the base again."""
        for parent, attr, linear in self._originals.values():
            setattr(parent, attr, linear)
        log.warning("LoRA patch removed: %d modules restored", len(self._originals))
        self._originals.clear()
        self.modules.clear()

    def save(self, path: str | Path, base_fingerprint: str, base_name: str = "", extra: dict | None = None) -> Path:
        cfg = asdict(self.spec) | {"targets": list(self.spec.targets)}
        return save_adapter(path, KIND, self.state_dict(), cfg, base_fingerprint, base_name, extra)

    def export_peft(self, path: str | Path, base_model_name_or_path: str = "",
                    module_prefix: str = "model.layers") -> Path:
        """Write `adapter_model.safetensors` + `adapter_config.json` in the PEFT LoRA format
        (loadable by `peft.PeftModel.from_pretrained` and vLLM multi-LoRA)."""
        path = Path(path)
        tensors = {}
        for name, m in self.modules.items():
            # name = "layers.{i}.{sub}.{proj}" -> PEFT key under base_model.model.<module path>
            key = f"base_model.model.{module_prefix}.{name.split('.', 1)[1]}"
            tensors[f"{key}.lora_A.weight"] = m.lora_A.weight.detach().to(torch.float32)
            tensors[f"{key}.lora_B.weight"] = m.lora_B.weight.detach().to(torch.float32)
        atomic_save_tensors(tensors, path / "adapter_model.safetensors", metadata={"format": "pt"})
        layers = sorted({int(n.split(".")[1]) for n in self.modules})
        config = {
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name_or_path,
            "r": self.spec.r, "lora_alpha": self.spec.lora_alpha, "lora_dropout": 0.0, "bias": "none",
            "target_modules": sorted(self.spec.targets), "fan_in_fan_out": False, "inference_mode": True,
            "layers_to_transform": layers if self.spec.layers is not None else None,
            "use_rslora": False, "use_dora": False, "modules_to_save": None,
        }
        atomic_write_text(path / "adapter_config.json", json.dumps(config, indent=2) + "\n")
        return path


def patch_lora(model: nn.Module, spec: LoRASpec | None = None, *, layers_path: str | None = None) -> LoRAPatch:
    """Insert LoRA into `model` in place (said loudly; undo with `.unpatch()`).

    Args:
        model: a causal LM (its decoder layers are found through `dsa.taps.decoder_layers`).
        spec: rank, scaling, target projection names (matched on the module's own attribute name).
    Returns:
        A `LoRAPatch` at strength 1.0 with B = 0 (so the patched model still equals the base).
    """
    spec = spec or LoRASpec()
    stack = model.get_submodule(layers_path) if layers_path else decoder_layers(model)
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise RuntimeError("model already carries a LoRA patch: unpatch() it first")
    patch = LoRAPatch(model=model, spec=spec)
    wanted = set(spec.targets)
    for i, layer in enumerate(stack):
        if spec.layers is not None and i not in spec.layers:
            continue
        for sub_name, sub in list(layer.named_modules()):
            for attr, child in list(sub.named_children()):
                if attr in wanted and isinstance(child, nn.Linear):
                    name = f"layers.{i}.{sub_name + '.' if sub_name else ''}{attr}"
                    wrapped = LoRALinear(child, spec.r, spec.scale)
                    setattr(sub, attr, wrapped)
                    patch.modules[name] = wrapped
                    patch._originals[name] = (sub, attr, child)
    if not patch.modules:
        raise ValueError(f"no nn.Linear named {sorted(wanted)} found in the decoder layers")
    log.warning("model mutated: LoRA patch inserted into %d linear layers (undo with unpatch())",
                len(patch.modules))
    return patch


def load_lora_patch(path: str | Path, model: nn.Module, base_fingerprint: str) -> LoRAPatch:
    """Patch `model` with a saved LoRA patch; refuses a patch made for another base."""
    meta, tensors = load_adapter(path, base_fingerprint, kind=KIND)
    cfg = meta["config"]
    spec = LoRASpec(r=cfg["r"], lora_alpha=cfg["lora_alpha"], targets=tuple(cfg["targets"]),
                    layers=cfg.get("layers"))
    patch = patch_lora(model, spec)
    patch.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
    return patch
