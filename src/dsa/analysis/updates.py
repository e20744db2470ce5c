"""Weight updates ΔW, one module at a time, from a LoRA adapter or a fully fine-tuned model dir.

    base = open_weights(resolve_base_path("smollm2-135m-instruct"))
    upd = open_update("adapters/align/refusal-lora", base)
    for key in upd.keys():                 # "model.layers.0.self_attn.q_proj.weight", ...
        delta = upd.delta(key)             # Delta: low-rank factors or a dense difference

Nothing is loaded up front: tensors are read with `safetensors.safe_open` when asked for, so a
full fine-tune is compared with its base one matrix at a time and never as two whole models.
Supported: PEFT LoRA dirs (adapter_config.json + adapter_model.safetensors; rsLoRA and per-module
rank/alpha patterns honoured; DoRA refused), dsa LoRA adapters (adapter.json + adapter.safetensors
with `*lora_A*` / `*lora_B*` tensors), and Hugging Face model dirs (*.safetensors, sharded or not).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from safetensors import safe_open

from dsa.analysis.subspace import Factors, lowrank_svd, svd

_LAYER_RE = re.compile(r"\.(\d+)\.")


def module_of(key: str) -> tuple[int | None, str]:
    """("model.layers.3.self_attn.q_proj.weight") -> (3, "q"): decoder layer and module type."""
    m = _LAYER_RE.search(key)
    name = key.removesuffix(".weight").rsplit(".", 1)[-1]
    return (int(m.group(1)) if m else None), name.removesuffix("_proj")


class WeightReader:
    """Lazy tensor access to every *.safetensors file of a directory (or one file)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no such weights path: {path}")
        files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors files in {path}")
        self.path = path
        self._where: dict[str, Path] = {}
        self._handles: dict[Path, object] = {}
        for f in files:
            h = safe_open(str(f), framework="pt")
            self._handles[f] = h
            for k in h.keys():
                self._where[k] = f

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def get(self, key: str) -> torch.Tensor:
        if key not in self._where:
            raise KeyError(f"tensor {key!r} not found under {self.path}")
        return self._handles[self._where[key]].get_tensor(key)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handles[self._where[key]].get_slice(key).get_shape())

    def dtype(self, key: str) -> str:
        return self._handles[self._where[key]].get_slice(key).get_dtype()


def open_weights(path: str | Path) -> WeightReader:
    """A base model's weights: a local dir or file, else a Hugging Face hub id (downloaded once)."""
    if not Path(path).exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", str(path)):
        from huggingface_hub import snapshot_download

        path = snapshot_download(str(path), allow_patterns=["*.safetensors", "*.json"])
    return WeightReader(path)


@dataclass
class Delta:
    """One module's update: scale·B@A (LoRA) or a dense matrix (full fine-tune)."""

    shape: tuple[int, int]
    B: torch.Tensor | None = None  # [d_out, r]
    A: torch.Tensor | None = None  # [r, d_in]
    scale: float = 1.0
    dense_: torch.Tensor | None = None

    @property
    def low_rank(self) -> bool:
        return self.dense_ is None

    def dense(self) -> torch.Tensor:
        if self.dense_ is not None:
            return self.dense_.to(torch.float64)
        return self.scale * self.B.to(torch.float64) @ self.A.to(torch.float64)

    def svd(self) -> Factors:
        return lowrank_svd(self.B, self.A, self.scale) if self.low_rank else svd(self.dense_)


@runtime_checkable
class Update(Protocol):
    """What the analysis needs: `keys()` lists base weight names with an update; `delta(key)` reads one."""

    kind: str  # "lora" | "full"
    name: str
    info: dict

    def keys(self) -> list[str]: ...

    def delta(self, key: str) -> Delta: ...


class LoraUpdate:
    kind = "lora"

    def __init__(self, path: Path, base: WeightReader, factors: dict[str, tuple[str, str, float]],
                 reader: WeightReader, info: dict):
        self.path, self.name, self.base, self.info = path, path.name, base, info
        self._factors, self._reader = factors, reader
        for key in factors:
            if key not in base:
                raise ValueError(f"{path}: the adapter targets {key!r}, which the base does not have")
            a, b, _ = factors[key]
            d_out, d_in = base.shape(key)
            sa, sb = reader.shape(a), reader.shape(b)
            if len(base.shape(key)) != 2 or sb[0] != d_out or sa[1] != d_in or sa[0] != sb[1]:
                raise ValueError(f"{path}: shape mismatch at {key}: base {base.shape(key)}, "
                                 f"lora_A {sa}, lora_B {sb} (was the adapter trained on another base?)")

    def keys(self) -> list[str]:
        return list(self._factors)

    def delta(self, key: str) -> Delta:
        a, b, scale = self._factors[key]
        A, B = self._reader.get(a).float(), self._reader.get(b).float()
        if self.info.get("fan_in_fan_out"):
            A, B = B.T, A.T
        return Delta(shape=(B.shape[0], A.shape[1]), B=B, A=A, scale=scale)


def _pattern_value(patterns: dict, module: str, default: float) -> float:
    # PEFT matches rank/alpha pattern keys as regex suffixes of the module name.
    for pat, value in (patterns or {}).items():
        if re.search(rf"(^|\.){pat}$", module):
            return value
    return default


def _open_peft(path: Path, base: WeightReader) -> LoraUpdate:
    cfg = json.loads((path / "adapter_config.json").read_text())
    if cfg.get("use_dora"):
        raise ValueError(f"{path}: DoRA adapters are not supported (ΔW is not scale·B@A)")
    reader = WeightReader(path)
    factors: dict[str, tuple[str, str, float]] = {}
    for k in reader.keys():
        m = re.match(r"^(?:base_model\.model\.)?(.+)\.lora_A(?:\.[^.]+)?\.weight$", k)
        if not m:
            continue
        module = m.group(1)
        b = k.replace(".lora_A", ".lora_B")
        if b not in reader:
            raise ValueError(f"{path}: {k} has no matching lora_B tensor")
        r = _pattern_value(cfg.get("rank_pattern"), module, cfg["r"])
        alpha = _pattern_value(cfg.get("alpha_pattern"), module, cfg["lora_alpha"])
        scale = alpha / (r ** 0.5 if cfg.get("use_rslora") else r)
        factors[f"{module}.weight"] = (k, b, float(scale))
    if not factors:
        raise ValueError(f"{path}: no lora_A/lora_B tensors in the PEFT adapter")
    info = {"format": "peft", "r": cfg["r"], "lora_alpha": cfg["lora_alpha"],
            "target_modules": cfg.get("target_modules"), "fan_in_fan_out": cfg.get("fan_in_fan_out", False)}
    return LoraUpdate(path, base, factors, reader, info)


def _open_dsa_lora(path: Path, base: WeightReader) -> LoraUpdate:
    meta = json.loads((path / "adapter.json").read_text())
    cfg = meta.get("config", {})
    r = cfg.get("r", cfg.get("rank"))
    alpha = cfg.get("lora_alpha", cfg.get("alpha", r))
    scale = float(cfg.get("scale", (alpha / r) if r else 1.0))
    reader = WeightReader(path / "adapter.safetensors")
    factors = {}
    for k in reader.keys():
        m = re.match(r"^(.+?)\.?lora_A(?:\.weight)?$", k)
        if m:
            b = k.replace("lora_A", "lora_B")
            if b not in reader:
                raise ValueError(f"{path}: {k} has no matching lora_B tensor")
            factors[f"{m.group(1)}.weight"] = (k, b, scale)
    if not factors:
        raise ValueError(f"{path}: adapter kind {meta.get('kind')!r} has no lora_A/lora_B tensors")
    return LoraUpdate(path, base, factors, reader, {"format": "dsa", "r": r, "lora_alpha": alpha})


class FullUpdate:
    """ΔW = W_ft − W0 for every 2-D weight inside a decoder layer present in both dirs."""

    kind = "full"

    def __init__(self, path: Path, base: WeightReader):
        self.path, self.name, self.base = path, path.name, base
        self.ft = WeightReader(path)
        self._keys = []
        for k in self.ft.keys():
            if k not in base or module_of(k)[0] is None or len(self.ft.shape(k)) != 2:
                continue
            if self.ft.shape(k) != base.shape(k):
                raise ValueError(f"{path}: shape mismatch at {k}: fine-tune {self.ft.shape(k)} vs base "
                                 f"{base.shape(k)} (is this a fine-tune of that base?)")
            self._keys.append(k)
        if not self._keys:
            raise ValueError(f"{path}: no decoder-layer weights shared with the base {base.path}")
        dtypes = sorted({self.ft.dtype(k) for k in self._keys})
        self.info = {"format": "full", "dtypes": dtypes}

    def keys(self) -> list[str]:
        return self._keys

    def delta(self, key: str) -> Delta:
        d = self.ft.get(key).to(torch.float64) - self.base.get(key).to(torch.float64)
        return Delta(shape=tuple(d.shape), dense_=d)


def open_update(path: str | Path, base: WeightReader) -> Update:
    """Open a PEFT LoRA dir, a dsa LoRA adapter dir or a full fine-tuned model dir."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"adapter path {path} is not a directory")
    if (path / "adapter_config.json").exists():
        return _open_peft(path, base)
    if (path / "adapter.json").exists():
        return _open_dsa_lora(path, base)
    if (path / "config.json").exists() and any(path.glob("*.safetensors")):
        return FullUpdate(path, base)
    raise ValueError(f"{path} is neither a PEFT adapter (adapter_config.json), a dsa adapter "
                     "(adapter.json) nor a model dir with config.json + *.safetensors")
