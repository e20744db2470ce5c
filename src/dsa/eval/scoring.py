"""Log-likelihood scoring of continuations through a `SafetyModel`, and the λ each prompt gets.

    lam = prompt_lambdas(sm, ["Question: ...\\nAnswer:"], "auto")    # what generation would pick
    rows = [(context_ids, continuation_ids), ...]
    out = score_continuations(sm, rows, lam_per_row)                # [(sum log p, is_greedy)]

Scoring runs `sm.forward_logits` (mixed logits `(1 − λ)·base + λ·aligned` per row) on right-padded
`context + continuation`, and sums the log-probabilities of the continuation tokens only. Under
`alignment="auto"` a prompt's λ is read from `sm.generate(..., max_new_tokens=1)`: the same
prefill, guard scores and policy that generation uses, so a cloze score and an answer to the same
prompt see the same λ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm

Alignment = str | float


def check_alignment(sm, alignment: Alignment) -> Alignment:
    """'auto' or a number in [0, 1] (a numeric string becomes a number); a number > 0 needs an
    alignment adapter. The runtime's own check, where it has one, has the last word."""
    if isinstance(alignment, str):
        if alignment == "auto":
            _runtime_check(sm, alignment)
            return alignment
        try:
            alignment = float(alignment)
        except ValueError:
            raise ValueError(f"alignment must be 'auto' or a number, got {alignment!r}") from None
    alignment = float(alignment)
    if not 0.0 <= alignment <= 1.0:
        raise ValueError(f"alignment must be in [0, 1], got {alignment}")
    if alignment > 0 and sm.adapter is None:
        raise ValueError("alignment > 0 needs a DSA alignment adapter (none loaded)")
    return alignment


def _runtime_check(sm, alignment: Alignment) -> None:
    check = getattr(sm, "check_alignment", None)
    if check is not None:
        check(alignment)


def prompt_lambdas(sm, prompts: Sequence[str], alignment: Alignment, batch_size: int = 16,
                   progress: bool = False) -> list[float]:
    """λ per prompt (each a user message, chat-templated as generation does).

    A number gives that λ everywhere; "auto" asks the runtime itself (guard scores of the
    chat-templated prompt → policy), one prefill per prompt and one decoded token.
    """
    alignment = check_alignment(sm, alignment)
    if alignment != "auto":
        return [float(alignment)] * len(prompts)
    out: list[float] = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="guard λ", disable=not progress):
        out += [r.lam for r in sm.generate(list(prompts[i:i + batch_size]), alignment="auto", max_new_tokens=1)]
    return out


@torch.inference_mode()
def score_continuations(sm, rows: Sequence[tuple[list[int], list[int]]], lams: Sequence[float],
                        batch_size: int = 8, progress: bool = False, desc: str = "loglik") -> list[tuple[float, bool]]:
    """(sum of continuation token log-probs, continuation is the greedy decoding) per row.

    Args:
        rows: (context token ids, continuation token ids); the context must not be empty (give a
            BOS/EOS prefix for unconditional scoring) and the continuation must not be empty.
        lams: λ per row (0 = the base model exactly).
    """
    if len(rows) != len(lams):
        raise ValueError(f"{len(rows)} rows but {len(lams)} λ values")
    for ctx, cont in rows:
        if not ctx or not cont:
            raise ValueError("context and continuation must each have at least one token")
    pad = sm.base.tokenizer.pad_token_id or 0
    device = sm.base.device
    order = sorted(range(len(rows)), key=lambda i: -(len(rows[i][0]) + len(rows[i][1])))
    out: list[tuple[float, bool] | None] = [None] * len(rows)
    for k in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress):
        idx = order[k:k + batch_size]
        seqs = [rows[i][0] + rows[i][1] for i in idx]
        width = max(map(len, seqs))
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(seqs):  # right padding: real tokens never see the pads
            ids[r, :len(s)] = torch.tensor(s)
            mask[r, :len(s)] = 1
        lam = torch.tensor([float(lams[i]) for i in idx])
        logits, _ = sm.forward_logits(ids.to(device), mask.to(device), lam)  # [b, seq, vocab]
        for r, i in enumerate(idx):
            n_ctx, n_cont = len(rows[i][0]), len(rows[i][1])
            pred = logits[r, n_ctx - 1:n_ctx - 1 + n_cont].float()  # positions predicting the continuation
            target = ids[r, n_ctx:n_ctx + n_cont].to(pred.device)
            logp = torch.log_softmax(pred, -1).gather(-1, target[:, None]).squeeze(-1)
            out[i] = (float(logp.sum()), bool((pred.argmax(-1) == target).all()))
    return out  # type: ignore[return-value]
