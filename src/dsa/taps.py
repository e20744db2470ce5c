"""Named tap points on a decoder-only LM, captured by scoped forward hooks.

Tap names are stable dotted strings:

    embed                     the residual stream entering layer 0 (embeddings, scaled/positioned as the model does)
    layers.{i}.resid_post     output of decoder layer i (the residual stream after it)
    layers.{i}.attn_out       what layer i's attention block adds to the residual stream
    layers.{i}.mlp_out        what layer i's MLP block adds to the residual stream
    final_norm                output of the final norm (what the LM head reads)

So `embed + Σ_{j≤i} (attn_out_j + mlp_out_j) = resid_post_i` on every architecture of the table
(`check_identity` measures it): on Gemma 2/3 and OLMo 2 the block outputs are read after their
post-norms, on Granite they are scaled by `residual_multiplier`, as the model adds them.

`resolve_taps` expands shorthand ("18", "-1", "12:18", "all", "resid_post:18", "layers.*.mlp_out").
Every architecture difference lives in `ARCHITECTURES`; pass an `ArchSpec` to override, or
describe it in YAML (`load_arch_spec`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

TAP_KINDS = ("resid_post", "attn_out", "mlp_out")
GLOBAL_TAPS = ("embed", "final_norm")


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
        _residual_scale(model, spec)
    return spec


def _residual_scale(model: nn.Module, spec: ArchSpec) -> float | None:
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


def all_tap_names(n_layers: int) -> list[str]:
    """Every tap name of a model with `n_layers` decoder layers, in forward order."""
    names = ["embed"]
    for i in range(n_layers):
        names += [f"layers.{i}.attn_out", f"layers.{i}.mlp_out", f"layers.{i}.resid_post"]
    return names + ["final_norm"]


_TAP_RE = re.compile(r"^layers\.(\d+)\.(resid_post|attn_out|mlp_out)$")


class LayerRangeError(ValueError):
    """A layer index or fraction that the model does not have."""


def resolve_layer(spec: int | float | str, n_layers: int) -> int:
    """One layer given as an index (negative counts from the end, as in Python) or as a fraction of
    depth ("0.6", 0.6: layer round(0.6 × (n_layers − 1))), checked against the model.

    So configs stay valid across depths: 0.62 is layer 18 of SmolLM2's 30 and layer 14 of a
    24-layer model; 1.0 and -1 are the last layer of any model.
    """
    if isinstance(spec, bool):
        raise LayerRangeError(f"layer {spec!r}: expected an index or a fraction of depth")
    text = str(spec).strip()
    is_fraction = isinstance(spec, float) or (isinstance(spec, str) and ("." in text or "e" in text.lower()))
    try:
        value = float(text) if is_fraction else int(text)
    except ValueError as err:
        raise LayerRangeError(f"layer {spec!r}: expected an index (e.g. 18, -1) or a fraction of depth "
                              f"(e.g. 0.6)") from err
    if is_fraction:
        if not 0.0 <= value <= 1.0:
            raise LayerRangeError(f"layer fraction {spec!r} out of range: a fraction of depth is in [0, 1]")
        return round(value * (n_layers - 1))
    if not -n_layers <= value < n_layers:
        raise LayerRangeError(f"layer {value} out of range: the model has {n_layers} layers "
                              f"(0..{n_layers - 1}, or -{n_layers}..-1, or a fraction of depth such as 0.6)")
    return value % n_layers


def resolve_layers(specs, n_layers: int) -> list[int]:
    """`resolve_layer` of each item."""
    return [resolve_layer(s, n_layers) for s in specs]


def _layer_indices(expr: str, n_layers: int) -> list[int]:
    """'18' -> [18]; '-1' -> [n-1]; '12:18' -> 12..17; '::3' -> every third; 'all'/'*' -> all."""
    if expr in ("all", "*"):
        return list(range(n_layers))
    if ":" in expr:
        parts = [int(p) if p else None for p in expr.split(":")]
        return list(range(n_layers))[slice(*parts)]
    return [resolve_layer(expr, n_layers)]


def resolve_taps(taps: str | Sequence[str], n_layers: int) -> list[str]:
    """Expand shorthand into canonical tap names, keeping order and dropping duplicates.

    Accepts canonical names, "KIND:LAYERS" (e.g. "mlp_out:-1", "resid_post:10:20"), bare layer
    expressions ("18", "-1", "12:18", "all") meaning resid_post, "layers.*.KIND", and a
    comma-separated string of any of these.
    """
    items = taps.split(",") if isinstance(taps, str) else list(taps)
    out: list[str] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        if item in GLOBAL_TAPS:
            names = [item]
        elif m := _TAP_RE.match(item):
            names = [f"layers.{_layer_indices(m.group(1), n_layers)[0]}.{m.group(2)}"]
        elif m := re.match(r"^layers\.\*\.(\w+)$", item):
            names = [f"layers.{i}.{m.group(1)}" for i in range(n_layers)]
        elif ":" in item and item.split(":", 1)[0] in TAP_KINDS:
            kind, expr = item.split(":", 1)
            names = [f"layers.{i}.{kind}" for i in _layer_indices(expr, n_layers)]
        else:
            try:
                names = [f"layers.{i}.resid_post" for i in _layer_indices(item, n_layers)]
            except LayerRangeError as err:
                if re.fullmatch(r"-?\d+|\d*\.\d+", item):  # a layer the model does not have
                    raise
                raise ValueError(
                    f"cannot read tap {item!r}: expected one of {GLOBAL_TAPS}, 'layers.I.KIND' "
                    f"with KIND in {TAP_KINDS}, 'KIND:LAYERS', or a layer expression like 18, -1, 12:18, all"
                ) from err
        for name in names:
            m = _TAP_RE.match(name)
            if m and (int(m.group(1)) >= n_layers or m.group(2) not in TAP_KINDS):
                raise ValueError(f"tap {name!r} does not exist: the model has {n_layers} layers")
            if name not in out:
                out.append(name)
    if not out:
        raise ValueError("no taps requested")
    return out


def tap_layer(name: str) -> int | None:
    """The decoder layer index a tap belongs to (None for embed/final_norm)."""
    m = _TAP_RE.match(name)
    return int(m.group(1)) if m else None


def _tap_module(model: nn.Module, spec: ArchSpec, name: str) -> nn.Module:
    if name == "embed":
        return get_submodule(model, f"{spec.layers}.0")  # read as layer 0's input (pre-hook)
    if name == "final_norm":
        return get_submodule(model, spec.final_norm)
    m = _TAP_RE.match(name)
    if m is None:
        raise ValueError(f"not a canonical tap name: {name!r} (use resolve_taps for shorthand)")
    layer = get_submodule(model, f"{spec.layers}.{m.group(1)}")
    kind = m.group(2)
    if kind == "resid_post":
        return layer
    return get_submodule(layer, spec.attn if kind == "attn_out" else spec.mlp)


def _first_tensor(output: object) -> torch.Tensor:
    # Decoder layers and attention blocks return a tensor or a tuple whose first item is one.
    return output[0] if isinstance(output, tuple | list) else output  # type: ignore[return-value]


_NAMES: dict[tuple[tuple[str, ...], int], tuple[list[str], str]] = {}


def _resolved(taps: Sequence[str], n_layers: int) -> tuple[list[str], str]:
    """(canonical names, the deepest of them), memoised: decode steps record the same taps every token."""
    key = (tuple(taps), n_layers)
    if key not in _NAMES:
        if len(_NAMES) > 1024:
            _NAMES.clear()
        names = resolve_taps(list(taps), n_layers)
        order = all_tap_names(n_layers)
        _NAMES[key] = (names, max(names, key=order.index))
    return _NAMES[key]


def _tap_modules(model: nn.Module, spec: ArchSpec, names: list[str]) -> list[nn.Module]:
    """The module each tap hooks, looked up from the decoder layer list (one path walk, not one per tap)."""
    layers = get_submodule(model, spec.layers)
    out = []
    for name in names:
        m = _TAP_RE.match(name)
        if m is None or m.group(2) != "resid_post":
            out.append(_tap_module(model, spec, name))
        else:
            out.append(layers[int(m.group(1))])
    return out


class StopForward(Exception):
    """Raised by a hook to end the forward pass once the deepest requested tap is captured."""


@contextmanager
def record_taps(
    model: nn.Module,
    taps: Sequence[str],
    *,
    spec: ArchSpec | None = None,
    stop_after_last: bool = False,
    detach: bool = True,
    reduce: Mapping[str, Callable[[torch.Tensor], object]] | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the named taps of every forward pass run inside the block.

    Yields a dict filled in place: tap name -> tensor [batch, seq, d_model]. Every hook is removed
    on exit, also when the block raises. With `stop_after_last`, the forward pass is cut short
    (by `StopForward`, which the block swallows) right after the deepest requested tap.
    `reduce` maps (canonical) tap names to a function of the tensor whose result is stored instead,
    so a consumer that needs only a pooled summary does not keep the full states alive.
    """
    spec = arch_spec(model, spec)
    layers = get_submodule(model, spec.layers)
    names, last = _resolved(taps, len(layers))
    scale = _residual_scale(model, spec)
    cache: dict[str, torch.Tensor] = {}
    handles = []
    reduce = reduce or {}

    def store(name: str, t: torch.Tensor) -> None:
        t = t.detach() if detach else t
        if scale is not None and name.endswith(("attn_out", "mlp_out")):
            t = t * scale  # what the layer adds to its residual stream
        cache[name] = reduce[name](t) if name in reduce else t
        if stop_after_last and name == last:
            raise StopForward

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            store(name, _first_tensor(output))

        return hook

    def embed_hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        store("embed", args[0] if args else kwargs["hidden_states"])

    try:
        for name, module in zip(names, _tap_modules(model, spec, names), strict=True):
            if name == "embed":
                handles.append(module.register_forward_pre_hook(embed_hook, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(make_hook(name)))
        try:
            yield cache
        except StopForward:
            pass
    finally:
        for h in handles:
            h.remove()


def run_with_taps(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    taps: Sequence[str],
    *,
    spec: ArchSpec | None = None,
    need_output: bool = True,
    detach: bool = True,
    reduce: Mapping[str, Callable[[torch.Tensor], object]] | None = None,
) -> tuple[object | None, dict[str, torch.Tensor]]:
    """Run `model(**inputs)` and return `(output, cache)`.

    With `need_output=False` the forward stops after the deepest tap and `output` is None, which
    skips the remaining layers and the LM head.
    """
    output = None
    with record_taps(model, taps, spec=spec, stop_after_last=not need_output, detach=detach, reduce=reduce) as cache:
        output = model(**inputs)
    return output, cache


def hook_count(model: nn.Module) -> int:
    """Forward (pre-)hooks on all modules of `model`; transformers installs a few of its own, so
    compare counts before and after rather than expecting zero."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def identity_errors(
    model: nn.Module, inputs: dict[str, torch.Tensor], *, spec: ArchSpec | None = None
) -> list[float]:
    """How far the taps are from adding up, per layer: the relative error
    ‖embed + Σ_{j≤i}(attn_out_j + mlp_out_j) − resid_post_i‖ / ‖resid_post_i‖ for each layer i
    (over the positions `inputs["attention_mask"]` keeps, when given)."""
    n = num_layers(model, spec)
    with torch.no_grad():
        _, cache = run_with_taps(model, inputs, ["embed", "layers.*.attn_out", "layers.*.mlp_out", "all"],
                                 spec=spec, need_output=False)
    keep = inputs.get("attention_mask")
    keep = torch.ones(cache["embed"].shape[:2], dtype=torch.bool) if keep is None else keep.bool()
    keep = keep.to(cache["embed"].device)
    running = cache["embed"].double()  # [batch, seq, d_model]
    errors = []
    for i in range(n):
        running = running + cache[f"layers.{i}.attn_out"].double() + cache[f"layers.{i}.mlp_out"].double()
        target = cache[f"layers.{i}.resid_post"].double()
        errors.append(float((running - target)[keep].norm() / target[keep].norm().clamp_min(1e-30)))
    return errors


def check_identity(
    model: nn.Module,
    inputs: dict[str, torch.Tensor] | None = None,
    *,
    spec: ArchSpec | None = None,
    rtol: float = 1e-4,
) -> float:
    """Assert that the taps add up (`identity_errors` ≤ `rtol` at every layer) and that
    `final_norm` is the final norm of the last `resid_post`; return the largest relative error.

    Run it in fp32: bf16 rounding alone is ~1e-2. `inputs` default to two rows of random token
    ids (one with padding) below the model's vocabulary size.
    """
    if inputs is None:
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        g = torch.Generator().manual_seed(0)
        device = next(model.parameters()).device
        ids = torch.randint(min(5, cfg.vocab_size - 1), cfg.vocab_size, (2, 9), generator=g).to(device)
        mask = torch.ones_like(ids)
        mask[1, :3] = 0
        inputs = {"input_ids": ids, "attention_mask": mask}
    errors = identity_errors(model, inputs, spec=spec)
    worst = max(range(len(errors)), key=errors.__getitem__)
    if not errors[worst] <= rtol:
        raise AssertionError(f"{getattr(model.config, 'model_type', type(model).__name__)}: "
                             f"embed + Σ(attn_out + mlp_out) differs from layers.{worst}.resid_post by "
                             f"{errors[worst]:.3g} (relative; allowed {rtol:g})")
    spec = arch_spec(model, spec)
    last = f"layers.{len(errors) - 1}.resid_post"
    with torch.no_grad():
        _, cache = run_with_taps(model, inputs, [last, "final_norm"], spec=spec, need_output=False)
        normed = get_submodule(model, spec.final_norm)(cache[last])
    if not torch.allclose(normed, cache["final_norm"], rtol=rtol, atol=rtol):
        raise AssertionError("final_norm is not the final norm of the last layer's resid_post")
    return errors[worst]
