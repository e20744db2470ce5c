"""DSA alignment adapter (Krishna et al., arXiv 2506.00166): aligned logits from the base's hidden states.

The adapter is a trainable copy of the base's last k decoder layers (plus final norm), fed
with the base's hidden state entering layer L−k (`layers.{L-k-1}.resid_post`) and read out by
the base's own (frozen, shared) LM head. The base path is never touched; generation mixes

    logits = (1 − λ) · base + λ · aligned

and at λ = 0 the adapter is not run at all. At initialisation the copy equals the base's tail,
so aligned logits start equal to the base logits and training moves away from there.
The tail is a small `AutoModel` built from the base config with k layers, so masks, rotary
positions and its own KV cache come from transformers exactly as in the base.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from dsa.adapter_io import load_adapter, save_adapter
from dsa.base import Base
from dsa.kvcache import kv, returned
from dsa.taps import decoder_layers, get_submodule

log = logging.getLogger(__name__)
KIND = "dsa_logit_adapter"


@dataclass
class LogitAdapterSpec:
    """k = how many of the base's last decoder layers the adapter copies and retrains."""

    k: int = 2


class LogitAdapter(nn.Module):
    """Tail copy of the base: hidden state at layer L−k → k decoder layers → norm → base LM head."""

    def __init__(self, base: Base, spec: LogitAdapterSpec | None = None):
        super().__init__()
        from transformers import AutoModel

        spec = spec or LogitAdapterSpec()
        n = base.n_layers
        if not 1 <= spec.k < n:
            raise ValueError(f"k must be in [1, {n - 1}] for a base with {n} layers, got {spec.k}")
        self.spec = spec
        cfg = copy.deepcopy(base.model.config)
        cfg.num_hidden_layers = spec.k
        if getattr(cfg, "layer_types", None):
            cfg.layer_types = list(cfg.layer_types)[n - spec.k:]
        if hasattr(cfg, "max_window_layers"):
            cfg.max_window_layers = 0
        tail = AutoModel.from_config(cfg, dtype=base.dtype)
        # never used (inputs_embeds are fed); zero, not random, so that equal adapters hash equal
        # (dsa.eval.answer_cache fingerprints every tensor of the module)
        tail.embed_tokens = nn.Embedding(1, cfg.hidden_size, _weight=torch.zeros(1, cfg.hidden_size), _freeze=True)
        src = decoder_layers(base.model, base.spec)
        for i in range(spec.k):
            tail.layers[i].load_state_dict(src[n - spec.k + i].state_dict())
        tail.norm.load_state_dict(get_submodule(base.model, base.spec.final_norm).state_dict())
        self.tail = tail.to(base.device)
        # shared with the base and frozen: kept out of this module's parameters and state dict
        object.__setattr__(self, "lm_head", get_submodule(base.model, base.spec.lm_head))
        self.input_tap = f"layers.{n - spec.k - 1}.resid_post"

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.tail.named_parameters() if not n.startswith("embed_tokens")]

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values=None,
                use_cache: bool = False, logits_to_keep: int = 0,
                logits: bool = True) -> tuple[torch.Tensor | None, object]:
        """Aligned logits [batch, seq, vocab] from the base hidden state [batch, seq, d_model].

        In decoding, `hidden` holds only the new position(s) and `past_key_values` the adapter's own cache.
        With `logits=False` only the cache advances (no LM head) and the logits are None.
        """
        out = self.tail(inputs_embeds=hidden, attention_mask=attention_mask, position_ids=position_ids,
                        **kv(self.tail, past_key_values), use_cache=use_cache)
        if not logits:
            return None, returned(out)
        last = out.last_hidden_state  # [batch, seq, d_model]
        if logits_to_keep:
            last = last[:, -logits_to_keep:]
        return self.lm_head(last), returned(out)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.tail.state_dict().items() if not k.startswith("embed_tokens")}

    def save(self, path: str | Path, base: Base, extra: dict | None = None) -> Path:
        return save_adapter(path, KIND, self.state_tensors(), asdict(self.spec), base.fingerprint,
                            base.name, extra)

    @classmethod
    def load(cls, path: str | Path, base: Base) -> LogitAdapter:
        """Load an adapter saved for `base`; raises `FingerprintMismatch` for another base."""
        meta, tensors = load_adapter(path, base.fingerprint, kind=KIND)
        adapter = cls(base, LogitAdapterSpec(**meta["config"]))
        missing, unexpected = adapter.tail.load_state_dict(
            {k: v.to(base.dtype) for k, v in tensors.items()}, strict=False)
        if unexpected or [m for m in missing if not m.startswith("embed_tokens")]:
            raise ValueError(f"{path}: adapter weights do not fit (missing {missing}, unexpected {unexpected})")
        adapter.requires_grad_(False).eval()
        return adapter


def mix_logits(base_logits: torch.Tensor, aligned: torch.Tensor | None, lam: torch.Tensor) -> torch.Tensor:
    """(1 − λ)·base + λ·aligned per row (λ [batch]); rows with λ = 0 are the base logits exactly."""
    if aligned is None:
        return base_logits
    shape = (-1,) + (1,) * (base_logits.dim() - 1)
    lam_f = lam.to(base_logits.device, torch.float32).view(shape)
    mixed = (1 - lam_f) * base_logits.float() + lam_f * aligned.float()
    return torch.where(lam_f == 0, base_logits.float(), mixed)


def mix_rows(base_logits: torch.Tensor, aligned: torch.Tensor | None, lam: torch.Tensor,
             rows: torch.Tensor) -> torch.Tensor:
    """`mix_logits` of a batch whose aligned logits [a, ...] cover only rows `rows` [a] (the adapter's
    sub-batch, `DecodeBatch.ad_rows`); every other row keeps its base logits exactly."""
    if aligned is None:
        return base_logits
    rows = rows.to(base_logits.device)
    mixed = mix_logits(base_logits[rows], aligned, lam.to(base_logits.device)[rows])
    return base_logits.float().index_copy(0, rows, mixed)
