"""Where a decoder's parts live: `ArchSpec`, the one table of architectures (`ARCHITECTURES`),
its YAML form and the module lookups the taps hook."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import nn


@dataclass(frozen=True)
class ArchSpec:
    """Where the parts of a decoder live, as dotted attribute paths from the causal-LM module.

    `attn` and `mlp` (relative to one layer) name the modules whose outputs the layer adds to
    its residual stream: the attention / MLP block itself on Llama-style layers, the post-norm
    after it on Gemma 2/3 and OLMo 2. `residual_scale`, when set, names a config attribute that
    multiplies both before the add (Granite's `residual_multiplier`).
    """

    layers: str = "model.layers"
    embed: str = "model.embed_tokens"
    final_norm: str = "model.norm"
    attn: str = "self_attn"  # relative to one layer
    mlp: str = "mlp"  # relative to one layer
    lm_head: str = "lm_head"
    residual_scale: str | None = None  # config attribute, e.g. "residual_multiplier"


_LLAMA_LIKE = ArchSpec()
# Attention and MLP outputs normed before the residual add (Gemma 2/3, OLMo 2).
_POST_NORMED = ArchSpec(attn="post_attention_layernorm", mlp="post_feedforward_layernorm")
ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "mixtral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _POST_NORMED,
    "gemma3_text": _POST_NORMED,
    # Gemma 3 with its vision tower: the same text decoder one level down.
    "gemma3": dataclasses.replace(_POST_NORMED, layers="model.language_model.layers",
                                  embed="model.language_model.embed_tokens",
                                  final_norm="model.language_model.norm"),
    # Phi-3 adds its blocks' outputs through a residual dropout (identity in eval).
    "phi3": ArchSpec(attn="resid_attn_dropout", mlp="resid_mlp_dropout"),
    "olmo2": _POST_NORMED,
    "granite": ArchSpec(residual_scale="residual_multiplier"),
    "gpt2": ArchSpec(
        layers="transformer.h", embed="transformer.wte", final_norm="transformer.ln_f", attn="attn"
    ),
}


def arch_spec(model: nn.Module, override: ArchSpec | None = None) -> ArchSpec:
    """The `ArchSpec` for `model` (by `config.model_type`), or `override` when given."""
    if override is not None:
        return override
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {model_type!r}: known are {sorted(ARCHITECTURES)}; "
            "describe it with an ArchSpec(layers=..., embed=..., final_norm=..., attn=..., mlp=...) "
            "or a YAML file of those fields (CLI: --arch FILE.yaml)"
        )
    return ARCHITECTURES[model_type]


ARCH_FIELDS = tuple(f.name for f in dataclasses.fields(ArchSpec))


def arch_spec_from_mapping(data: Mapping, source: str = "arch spec") -> tuple[ArchSpec, str | None]:
    """An `ArchSpec` from a mapping of its fields plus an optional `model_type` (the models it is
    for); unknown fields and non-string paths are errors. Returns `(spec, model_type)`."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping of ArchSpec fields, got {type(data).__name__}")
    unknown = sorted(set(data) - set(ARCH_FIELDS) - {"model_type"})
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {unknown}; an arch spec has "
                         f"{['model_type', *ARCH_FIELDS]}")
    for key, value in data.items():
        if not (isinstance(value, str) and value.strip()) and not (key == "residual_scale" and value is None):
            raise ValueError(f"{source}: {key} must be a dotted module path (a non-empty string), got {value!r}")
    fields = {k: v.strip() if isinstance(v, str) else v for k, v in data.items() if k != "model_type"}
    return ArchSpec(**fields), data.get("model_type")


def load_arch_spec(path: str | Path) -> tuple[ArchSpec, str | None]:
    """Read an `ArchSpec` from a YAML file, e.g.

        model_type: gpt_neox            # optional: the config.model_type it describes
        layers: gpt_neox.layers
        embed: gpt_neox.embed_in
        final_norm: gpt_neox.final_layer_norm
        attn: post_attention_dropout    # what each layer adds to the residual after attention
        mlp: post_mlp_dropout
        lm_head: embed_out

    Fields left out take `ArchSpec`'s Llama-style defaults. Returns `(spec, model_type)`.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"arch spec file {str(path)!r} not found")
    return arch_spec_from_mapping(yaml.safe_load(path.read_text()) or {}, source=str(path))


def _missing_path_error(root: nn.Module, path: str, what: str) -> ValueError:
    """Name the first part of `path` that is missing and what exists at that point."""
    module, walked = root, []
    for part in path.split("."):
        child = module._modules.get(part) if hasattr(module, "_modules") else None
        if child is None:
            children = sorted(module._modules) if hasattr(module, "_modules") else []
            at = ".".join(walked) or type(root).__name__
            return ValueError(f"{what} {path!r} not found in {type(root).__name__}: {at!r} has no "
                              f"{part!r}; its submodules are {children}")
        module, walked = child, [*walked, part]
    return ValueError(f"{what} {path!r} not found in {type(root).__name__}")


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError as err:
        raise _missing_path_error(model, path, "module path") from err


def validate_arch_spec(model: nn.Module, spec: ArchSpec) -> ArchSpec:
    """Check that every path of `spec` exists in `model` (the per-layer ones in layer 0), so a
    wrong spec fails at load with the path and the names that do exist, not at the first tap."""
    for name in ("layers", "embed", "final_norm", "lm_head"):
        get_submodule(model, getattr(spec, name))
    layers = get_submodule(model, spec.layers)
    if not isinstance(layers, nn.ModuleList | nn.Sequential) or len(layers) == 0:
        raise ValueError(f"layers path {spec.layers!r} is a {type(layers).__name__}, "
                         "not a non-empty list of decoder layers")
    for name in ("attn", "mlp"):
        path = getattr(spec, name)
        try:
            layers[0].get_submodule(path)
        except AttributeError as err:
            raise _missing_path_error(layers[0], path, f"{name} path (in {spec.layers}.0)") from err
    if spec.residual_scale is not None:
        residual_scale_value(model, spec)
    return spec


def residual_scale_value(model: nn.Module, spec: ArchSpec) -> float | None:
    if spec.residual_scale is None:
        return None
    cfg = getattr(model, "config", None)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    value = getattr(cfg, spec.residual_scale, None)
    if not isinstance(value, int | float):
        raise ValueError(f"residual_scale {spec.residual_scale!r} is not a number in the model's config "
                         f"(got {value!r})")
    return float(value)


def decoder_layers(model: nn.Module, spec: ArchSpec | None = None) -> nn.ModuleList:
    return get_submodule(model, arch_spec(model, spec).layers)  # type: ignore[return-value]


def num_layers(model: nn.Module, spec: ArchSpec | None = None) -> int:
    return len(decoder_layers(model, spec))
