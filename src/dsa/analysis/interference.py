"""Interference on real inputs: how loud an update ΔW is next to W0 on the base's own hidden states.

For the inputs X of one Linear module (every prompt token, chat template applied), the update's
relative output energy is ‖ΔW X‖²_F / ‖W0 X‖²_F = tr(ΔW C ΔWᵀ) / tr(W0 C W0ᵀ) with C = X Xᵀ.
So one forward pass per prompt set gives C for every module (forward pre-hooks), and each update is
then scored matrix by matrix while streaming — no second model, no adapter merged into the base.
A safety patch that is quiet on benign prompts and loud on harmful ones interferes little with
the task.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm


@torch.no_grad()
def input_second_moments(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    module_names: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int = 256,
    desc: str = "inputs",
) -> tuple[dict[str, torch.Tensor], int]:
    """C = Σ_tokens x xᵀ of the inputs of each named Linear module over `texts` (padding excluded).

    Modules fed the same tensor (q/k/v, gate/up) share one accumulator. Every hook is removed on
    exit. Returns ({module name: C [d_in, d_in] float32}, number of tokens).
    """
    mods = {name: model.get_submodule(name) for name in module_names}
    acc: dict[str, torch.Tensor] = {}
    alias: dict[str, str] = {}
    state: dict = {"mask": None, "seen": {}}

    def make_hook(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            x = args[0]
            # The same tensor object feeding several modules (q/k/v, gate/up) is accumulated once;
            # `seen` holds the tensors until the forward ends, so their ids cannot be reused.
            first = state["seen"].setdefault(id(x), (x, name))[1]
            if first != name:
                alias.setdefault(name, first)
                return
            xf = x.detach().float()[state["mask"]]  # [tokens, d_in]
            c = (xf.T @ xf).double()  # fp32 products, fp64 running sum
            acc[name] = acc[name] + c if name in acc else c

        return hook

    handles = [m.register_forward_pre_hook(make_hook(n)) for n, m in mods.items()]
    n_tokens = 0
    device = next(model.parameters()).device
    try:
        for i in tqdm(range(0, len(texts), batch_size), desc=desc, leave=False):
            enc = tokenizer(list(texts[i:i + batch_size]), return_tensors="pt", padding=True,
                            truncation=True, max_length=max_length, add_special_tokens=False).to(device)
            state["mask"], state["seen"] = enc["attention_mask"].bool(), {}
            model(**enc)
            n_tokens += int(enc["attention_mask"].sum())
    finally:
        for h in handles:
            h.remove()
    acc = {k: v.float() for k, v in acc.items()}
    for name, first in alias.items():
        acc[name] = acc[first]
    return acc, n_tokens


def output_energy(W: torch.Tensor, C: torch.Tensor) -> float:
    """tr(W C Wᵀ) = Σ over the recorded inputs x of ‖W x‖²."""
    W = W.to(C.dtype)
    return float(((W @ C) * W).sum())


def lowrank_output_energy(B: torch.Tensor, A: torch.Tensor, scale: float, C: torch.Tensor) -> float:
    """tr(ΔW C ΔWᵀ) for ΔW = scale·B@A, via the r×r matrix A C Aᵀ (never forms ΔW)."""
    A, B = A.to(C.dtype), B.to(C.dtype)
    return float(scale ** 2 * ((B.T @ B) * (A @ C @ A.T)).sum())


def relative_output_energy(W0: torch.Tensor, dW: torch.Tensor, C: torch.Tensor) -> float:
    """‖ΔW X‖²_F / ‖W0 X‖²_F for the inputs summarised by C."""
    base = output_energy(W0, C)
    return output_energy(dW, C) / base if base > 0 else float("nan")
