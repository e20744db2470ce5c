"""The check that the taps add up: embed + Σ(attn_out + mlp_out) = resid_post at every layer, and
`final_norm` is the final norm of the last layer (`check_identity`)."""

from __future__ import annotations

import torch
from torch import nn

from dsa.taps.architectures import ArchSpec, arch_spec, get_submodule, num_layers
from dsa.taps.hooks import run_with_taps


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
