"""Scoped forward hooks that record named taps: `record_taps` (a context manager that removes
every handle in `finally`) and `run_with_taps` (returns `(output, cache)`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from dsa.taps.architectures import ArchSpec, arch_spec, get_submodule, residual_scale_value
from dsa.taps.names import CANONICAL_TAP, all_tap_names, resolve_taps


def _tap_module(model: nn.Module, spec: ArchSpec, name: str) -> nn.Module:
    if name == "embed":
        return get_submodule(model, f"{spec.layers}.0")  # read as layer 0's input (pre-hook)
    if name == "final_norm":
        return get_submodule(model, spec.final_norm)
    m = CANONICAL_TAP.match(name)
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
        m = CANONICAL_TAP.match(name)
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
    scale = residual_scale_value(model, spec)
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
