"""Training objectives for alignment: refusal-SFT, self-distillation (KL to the base) and DPO.

Every objective is computed on answer tokens only: a batch is a chat transcript per row plus a
mask of the positions whose next token belongs to the answer, and the LM head runs on those
positions only (much cheaper than full-vocab logits on every position).

A `Student` is whatever is trained: it maps (ids, mask, selected positions) to the trained
model's logits there and, when it has one for free, the frozen reference's (the base) logits.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dsa.base import Base
from dsa.taps import get_submodule, record_taps
from dsa.train import TrainSpec, fit


@dataclass
class Example:
    """One training row: `kind` is "sft" (cross-entropy on `response`), "distill" (KL to the base
    on `response`'s positions) or "dpo" (`response` preferred over `rejected`). `wrapper` names the
    augmentation when `prompt` is a wrapped copy of `plain` (`dsa.data.wrappers.augment`)."""

    prompt: str
    response: str
    kind: str = "sft"
    rejected: str | None = None
    wrapper: str | None = None
    plain: str | None = None


@dataclass
class Batch:
    ids: torch.Tensor  # [batch, seq]
    mask: torch.Tensor  # [batch, seq]
    sel: torch.Tensor  # [batch, seq] bool: position predicts an answer token
    labels: torch.Tensor  # [batch, seq] next token

    def to(self, device: torch.device) -> Batch:
        return Batch(self.ids.to(device), self.mask.to(device), self.sel.to(device), self.labels.to(device))


def encode_pairs(base: Base, prompts: Sequence[str], responses: Sequence[str], max_len: int = 160) -> Batch:
    """Right-padded transcripts with a mask over the answer's next-token positions.

    The prompt keeps its end (truncated from the left) so the answer always fits."""
    tok = base.tokenizer
    rows, starts = [], []
    for p, r in zip(prompts, responses, strict=True):
        head = tok(base.chat_text(p), add_special_tokens=False)["input_ids"]
        full = tok(base.prompt_response_text(p, r), add_special_tokens=False)["input_ids"]
        ans = full[len(head):]
        keep = max(max_len - len(ans), 8)
        head = head[-keep:]
        row = (head + ans)[:max_len]
        rows.append(row)
        starts.append(len(head))
    n = max(map(len, rows))
    ids = torch.full((len(rows), n), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    sel = torch.zeros_like(ids, dtype=torch.bool)
    for i, (row, s) in enumerate(zip(rows, starts, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        sel[i, s - 1: len(row) - 1] = True  # position t predicts token t+1
    labels = torch.roll(ids, -1, dims=1)
    return Batch(ids, mask, sel, labels)


class Student:
    """What a trainer optimises; `logits` returns (trained logits, reference logits or None) at `sel`."""

    def parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def modules(self) -> list[nn.Module]:
        """The models `logits` runs (a trainer puts them on its device)."""
        return []

    def logits(self, b: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


def _head_logits(model: nn.Module, base: Base, b: Batch) -> torch.Tensor:
    """Logits at the selected positions only: decoder stack, then the LM head on [n_sel, d]."""
    inner = get_submodule(model, base.spec.final_norm.rsplit(".", 1)[0])
    hidden = inner(input_ids=b.ids, attention_mask=b.mask).last_hidden_state  # [batch, seq, d]
    return get_submodule(model, base.spec.lm_head)(hidden[b.sel])  # [n_sel, vocab]


class ModelStudent(Student):
    """A model trained in place: the base with a LoRA patch, or a full fine-tuning copy."""

    def __init__(self, model: nn.Module, base: Base, params: list[nn.Parameter]):
        self.model, self.base, self._params = model, base, params

    def parameters(self) -> list[nn.Parameter]:
        return self._params

    def modules(self) -> list[nn.Module]:
        return [self.model]

    def logits(self, b: Batch) -> tuple[torch.Tensor, None]:
        return _head_logits(self.model, self.base, b), None


class AdapterStudent(Student):
    """The DSA logit adapter: the frozen base runs without gradients; its logits are the reference."""

    def __init__(self, adapter, base: Base):
        self.adapter, self.base = adapter, base

    def parameters(self) -> list[nn.Parameter]:
        return self.adapter.trainable_parameters()

    def modules(self) -> list[nn.Module]:
        return [self.base.model, self.adapter]

    def logits(self, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), record_taps(self.base.model, [self.adapter.input_tap], spec=self.base.spec) as cache:
            ref = _head_logits(self.base.model, self.base, b)
        hidden = cache[self.adapter.input_tap]  # [batch, seq, d] entering layer L-k
        out = self.adapter.tail(inputs_embeds=hidden.to(next(self.adapter.tail.parameters()).dtype),
                                attention_mask=b.mask).last_hidden_state
        return self.adapter.lm_head(out[b.sel].to(self.base.dtype)), ref


def _seq_logp(logits: torch.Tensor, b: Batch) -> torch.Tensor:
    """Sum of answer-token log-probs per row from logits at the selected positions."""
    lp = torch.log_softmax(logits.float(), -1).gather(-1, b.labels[b.sel][:, None]).squeeze(-1)
    rows = b.sel.nonzero()[:, 0]
    return torch.zeros(b.ids.shape[0], device=lp.device).index_add(0, rows, lp)


def batch_loss(student: Student, base: Base, examples: Sequence[Example], beta: float = 0.1,
               kl_weight: float = 1.0, max_len: int = 160) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean loss over the objectives present in `examples` (each weighted by its rows)."""
    parts, stats = [], {}
    params = student.parameters()
    device = params[0].device if params else torch.device("cpu")
    groups = {k: [e for e in examples if e.kind == k] for k in ("sft", "distill", "dpo")}
    n = len(examples)
    for kind in ("sft", "distill"):
        ex = groups[kind]
        if not ex:
            continue
        b = encode_pairs(base, [e.prompt for e in ex], [e.response for e in ex], max_len).to(device)
        logits, ref = student.logits(b)
        if kind == "sft":
            loss = F.cross_entropy(logits.float(), b.labels[b.sel])
        else:
            if ref is None:  # a model student distils against targets only
                loss = F.cross_entropy(logits.float(), b.labels[b.sel])
            else:
                loss = F.kl_div(torch.log_softmax(logits.float(), -1), torch.log_softmax(ref.float(), -1),
                                log_target=True, reduction="batchmean") * kl_weight
        parts.append(loss * len(ex) / n)
        stats[kind] = loss.item()
    if groups["dpo"]:
        ex = groups["dpo"]
        bc = encode_pairs(base, [e.prompt for e in ex], [e.response for e in ex], max_len).to(device)
        br = encode_pairs(base, [e.prompt for e in ex], [e.rejected or "" for e in ex], max_len).to(device)
        (pc, rc), (pr, rr) = student.logits(bc), student.logits(br)
        if rc is None or rr is None:
            raise ValueError("DPO needs a student with reference logits (the DSA adapter)")
        margin = (_seq_logp(pc, bc) - _seq_logp(rc, bc)) - (_seq_logp(pr, br) - _seq_logp(rr, br))
        loss = -F.logsigmoid(beta * margin).mean()
        parts.append(loss * len(ex) / n)
        stats["dpo"] = loss.item()
        stats["dpo_acc"] = float((margin > 0).float().mean())
    return sum(parts), stats


def train(student: Student, base: Base, examples: Sequence[Example], *, epochs: int = 1, batch_size: int = 8,
          lr: float = 2e-4, weight_decay: float = 0.0, warmup: float = 0.1, seed: int = 0, beta: float = 0.1,
          kl_weight: float = 1.0, max_len: int = 160, log_every: int = 2, bf16_autocast: bool = False,
          mixed_precision: str | None = None, grad_accum: int = 1,
          on_step: Callable[[int, dict], None] | None = None) -> list[dict]:
    """AdamW with linear warmup + cosine decay on `dsa.train.fit`; returns the per-step log.

    fp32 on the CPU by default: on the project's AVX-512-bf16 CPU, bf16 autocast over fp32 weights
    made a full fine-tuning step 12x slower (forward 17 s vs 2.7 s, backward 95 s vs 5 s;
    SmolLM2-135M, 8 x 71 tokens, one thread), although bf16 inference is 2x faster there.
    `mixed_precision` ("auto", "no", "bf16", "fp16") overrides `bf16_autocast`; its default, "auto"
    unless `bf16_autocast`, is fp32 on the CPU and bf16 (or fp16) on a GPU. Under `accelerate
    launch` every process takes its share of each batch of `batch_size` rows."""
    rng = random.Random(seed)
    order = list(range(len(examples)))

    def shuffled(_epoch: int) -> list[int]:
        rng.shuffle(order)  # the permutation depends only on the length: same as shuffling rows
        return order

    def cosine(s: int, steps: int) -> float:
        return min(1.0, (s + 1) / max(1, warmup * steps)) * 0.5 * (1 + math.cos(math.pi * s / steps))

    spec = TrainSpec(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, clip_norm=1.0,
                     grad_accum=grad_accum, mixed_precision=mixed_precision or ("bf16" if bf16_autocast else "auto"),
                     seed=seed, log_every=log_every, desc="align")
    return fit(lambda rows: batch_loss(student, base, rows, beta, kl_weight, max_len), examples,
               student.parameters(), spec, modules=student.modules(), order=shuffled, schedule=cosine,
               on_step=on_step)
