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

The parts: `names` (tap names, shorthand), `architectures` (the table, `ArchSpec`), `hooks`
(scoped capture) and `identity` (the check that the taps add up); every name is importable from here.
"""

from dsa.taps.architectures import (
    ARCH_FIELDS,
    ARCHITECTURES,
    ArchSpec,
    arch_spec,
    arch_spec_from_mapping,
    decoder_layers,
    get_submodule,
    load_arch_spec,
    num_layers,
    residual_scale_value,
    validate_arch_spec,
)
from dsa.taps.hooks import StopForward, hook_count, record_taps, run_with_taps
from dsa.taps.identity import check_identity, identity_errors
from dsa.taps.names import (
    GLOBAL_TAPS,
    TAP_KINDS,
    LayerRangeError,
    all_tap_names,
    resolve_layer,
    resolve_layers,
    resolve_taps,
    tap_layer,
)

__all__ = [
    "ARCHITECTURES", "ARCH_FIELDS", "GLOBAL_TAPS", "TAP_KINDS", "ArchSpec", "LayerRangeError", "StopForward",
    "all_tap_names", "arch_spec", "arch_spec_from_mapping", "check_identity", "decoder_layers", "get_submodule",
    "hook_count", "identity_errors", "load_arch_spec", "num_layers", "record_taps", "resolve_layer",
    "resolve_layers", "resolve_taps", "residual_scale_value", "run_with_taps", "tap_layer", "validate_arch_spec",
]
