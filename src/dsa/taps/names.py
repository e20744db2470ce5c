"""Tap names and their shorthand: `resolve_taps` expands "18", "-1", "12:18", "all",
"resid_post:18", "layers.*.mlp_out" into canonical dotted names; `resolve_layer(s)` for layer specs."""

from __future__ import annotations

import re
from collections.abc import Sequence

TAP_KINDS = ("resid_post", "attn_out", "mlp_out")
GLOBAL_TAPS = ("embed", "final_norm")


def all_tap_names(n_layers: int) -> list[str]:
    """Every tap name of a model with `n_layers` decoder layers, in forward order."""
    names = ["embed"]
    for i in range(n_layers):
        names += [f"layers.{i}.attn_out", f"layers.{i}.mlp_out", f"layers.{i}.resid_post"]
    return names + ["final_norm"]


CANONICAL_TAP = re.compile(r"^layers\.(\d+)\.(resid_post|attn_out|mlp_out)$")


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
        elif m := CANONICAL_TAP.match(item):
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
            m = CANONICAL_TAP.match(name)
            if m and (int(m.group(1)) >= n_layers or m.group(2) not in TAP_KINDS):
                raise ValueError(f"tap {name!r} does not exist: the model has {n_layers} layers")
            if name not in out:
                out.append(name)
    if not out:
        raise ValueError("no taps requested")
    return out


def tap_layer(name: str) -> int | None:
    """The decoder layer index a tap belongs to (None for embed/final_norm)."""
    m = CANONICAL_TAP.match(name)
    return int(m.group(1)) if m else None
