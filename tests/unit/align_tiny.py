"""Tiny random bases (Llama, Qwen2) and a stand-in guard bank for alignment/runtime tests."""

from __future__ import annotations

import torch
from torch import nn

from dsa.base import Base, from_model


class TinyTokenizer:
    """Character-level tokenizer with a chat template; enough for the runtime and trainers."""

    pad_token_id, eos_token_id, unk_token_id = 0, 1, 2
    pad_token, eos_token = "<pad>", "<eos>"
    padding_side = "left"

    def convert_tokens_to_ids(self, t: str) -> int | None:
        return None

    def _ids(self, s: str) -> list[int]:
        return [3 + (ord(c) % 90) for c in s]

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        text = "".join(f"[{m['role']}]{m['content']}|" for m in messages)
        return text + ("[assistant]" if add_generation_prompt else "")

    def __call__(self, texts, return_tensors=None, padding=False, add_special_tokens=False, **_):
        if isinstance(texts, str):
            return {"input_ids": self._ids(texts)}
        rows = [self._ids(t) for t in texts]
        if not padding and return_tensors is None:  # as HF tokenizers: ragged lists
            return {"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]}
        n = max(map(len, rows))
        ids = torch.zeros(len(rows), n, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, n - len(r):] = torch.tensor(r)
            mask[i, n - len(r):] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(97 + (i % 26)) for i in ids if i > 2)


def tiny_base(kind: str = "llama", layers: int = 3, seed: int = 0) -> Base:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  pad_token_id=0, eos_token_id=1, bos_token_id=1)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    model.config._attn_implementation = "sdpa"
    return from_model(model.float(), TinyTokenizer(), name=f"tiny-{kind}")


class ProbeBank:
    """Stand-in for `dsa.guards.GuardBank`: a mean-pooled linear probe on one tap."""

    def __init__(self, tap: str, d_model: int, seed: int = 0, bias: float = 0.0):
        g = torch.Generator().manual_seed(seed)
        self.taps = [tap]
        self.heads = ["unsafe"]
        self.thresholds = {"unsafe": 0.5}
        self.w = torch.randn(d_model, generator=g)
        self.b = bias

    def score(self, cache: dict[str, torch.Tensor], attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        h = cache[self.taps[0]].float()  # [batch, seq, d]
        m = attention_mask[..., None].float()
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
        return {"unsafe": torch.sigmoid(pooled @ self.w + self.b)}

    def flags(self, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v >= 0.5 for k, v in scores.items()}


class ForwardCounter:
    """Counts calls of the decoder stack (and their sequence lengths) with a forward pre-hook."""

    def __init__(self, module: nn.Module):
        self.seq_lens: list[int] = []
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _m, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"]
        self.seq_lens.append(int(ids.shape[1]))

    def remove(self) -> None:
        self.handle.remove()


def random_response_guard(base: Base, layers: list[int], seed: int = 0):
    """A PLR prompt_response guard ("resp/unsafe") with seeded random weights, threshold 0.5."""
    from dsa.guards.bank import GuardAdapter
    from dsa.guards.kinds import build_head

    torch.manual_seed(seed)
    cfg = {"layers": layers, "poolings": ["mean", "last"]}
    head = build_head("plr", base.d_model, 1, cfg)
    for p in head.parameters():
        p.data.normal_(0, 0.3)
    return GuardAdapter("plr", "resp", "prompt_response", ["unsafe"], cfg, head, [1.0], [0.5])
