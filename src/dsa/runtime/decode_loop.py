"""One decode step of a `DecodeBatch`: pick a token per live row, apply the response guard's stop
rules, then one single-token forward of the base (and of the DSA adapter on the rows with λ > 0)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from dsa.align.logit_adapter import mix_rows
from dsa.base import Base
from dsa.decoding import DecodeBatch, pick_tokens
from dsa.kvcache import kv
from dsa.runtime.scopes import patch_strength, scoped_taps

if TYPE_CHECKING:
    from dsa.runtime.safety_model import SafetyModel


def decode_step(sm: SafetyModel, batch: DecodeBatch) -> None:
    """Pick one token per live row; then, if some row goes on (or the response guard must read
    the token before it is shown), one single-token forward with scoped hooks. Sets each row's
    `new` tokens (what to show now) and `stop` when it finishes."""
    rows = batch.rows
    for row in rows:
        row.new = []
    live = ~batch.done
    nxt = torch.where(live, pick_tokens(batch.logits, rows),
                      torch.full_like(live, sm.base.tokenizer.pad_token_id, dtype=torch.long))
    is_eos = torch.isin(nxt, torch.tensor(end_of_turn_ids(sm.base), device=nxt.device)) & live
    cont = live & ~is_eos
    for i in live.nonzero().flatten().tolist():
        rows[i].picked += 1
    for i in is_eos.nonzero().flatten().tolist():
        batch.finish(i, "eos")
    goes_on = any(bool(cont[i]) and rows[i].picked < rows[i].max_new_tokens for i in range(len(rows)))
    flags: dict[str, torch.Tensor] = {}
    if goes_on or (sm.response_guards is not None and bool(cont.any())):
        flags = forward_token(sm, batch, nxt)
    rules = sm.response_rules if flags else {}
    for i in cont.nonzero().flatten().tolist():
        row, t = rows[i], int(nxt[i])
        hit = [h for h, f in flags.items() if bool(f[i])]
        if hit:
            row.held.append(t)
            # a head's run counts consecutive tokens it flags; one it did not flag starts over
            row.streaks = {h: row.streaks.get(h, 0) + 1 for h in hit}
            if any(n >= rules[h].debounce for h, n in row.streaks.items()):
                batch.finish(i, "guard")  # the held (flagged) tokens are dropped unseen
                continue
        else:
            row.new = row.held + [t]
            row.tokens += row.new
            row.held, row.streaks = [], {}
        if row.picked >= row.max_new_tokens:
            batch.finish(i, "length")


def forward_token(sm: SafetyModel, batch: DecodeBatch, nxt: torch.Tensor) -> dict[str, torch.Tensor]:
    """Feed the picked tokens [b]; update the pending logits and the response guard. Returns
    {response head: bool [b]}: whether its stop rule counts this token (score at or above its
    threshold, at least its `min_tokens` into the answer); {} without a response guard."""
    batch.mask = torch.cat([batch.mask, torch.ones_like(batch.mask[:, :1])], dim=1)
    batch.last_pos = batch.last_pos + 1
    rguard = sm.response_guards
    rows = batch.ad_rows  # the adapter's sub-batch: the rows with λ > 0
    taps = [sm.adapter.input_tap] if batch.ad_cache is not None else []
    taps += [t for t in (rguard.taps if rguard is not None else []) if t not in taps]
    # An LM head is a big part of a decode step (vocabulary × d_model): skip the base's when every
    # row is at λ = 1 (its logits would be multiplied by 0); the adapter runs only on rows with λ > 0.
    aligned_only = batch.ad_cache is not None and bool((batch.lam == 1).all())
    inputs = dict(input_ids=nxt[:, None], attention_mask=batch.mask, position_ids=batch.last_pos,
                  **kv(sm.base.model, batch.base_cache), use_cache=True)
    with scoped_taps(sm.base, taps) as cache, patch_strength(sm.patch, batch.lam):
        if aligned_only:
            decoder_stack(sm.base)(**inputs)  # the base's layers and KV cache, no LM head
            base_logits = None
        else:
            base_logits = sm.base.model(**inputs).logits[:, -1]
    flags = {}
    if rguard is not None:
        scores = batch.response_state.update(cache, batch.mask)
        n = torch.tensor([row.picked for row in batch.rows])  # response tokens read, this one included
        flags = {h: (scores[h].float().cpu() >= rule.threshold) & (n >= rule.min_tokens)
                 for h, rule in sm.response_rules.items()}
        for i in (~batch.done).nonzero().flatten().tolist():
            batch.rows[i].response = {h: float(v[i]) for h, v in scores.items()}
    aligned = None
    if batch.ad_cache is not None:
        aligned, batch.ad_cache = sm.adapter(cache[sm.adapter.input_tap][rows], batch.mask[rows],
                                             batch.last_pos[rows], batch.ad_cache, use_cache=True)
        aligned = aligned[:, -1]
    if aligned_only:
        batch.logits = aligned.float()  # = mix_logits at λ = 1 (0 · finite base logits + aligned)
    else:
        batch.logits = mix_rows(base_logits, aligned, batch.lam, rows)
    return flags


def decoder_stack(base: Base):
    """The base's decoder stack without its LM head (the module that owns the final norm)."""
    from dsa.taps import get_submodule

    return get_submodule(base.model, base.spec.final_norm.rsplit(".", 1)[0])


def end_of_turn_ids(base: Base) -> list[int]:
    """Token ids that end an answer: the tokenizer's eos, every id of the model's generation config
    `eos_token_id` (an int or a list: Llama 3's <|eot_id|>, Gemma's <end_of_turn>, …) and ChatML's
    <|im_end|> where the vocabulary has it."""
    tok = base.tokenizer
    ids = {tok.eos_token_id}
    gen = getattr(base.model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None)
    ids |= set(extra) if isinstance(extra, list | tuple) else {extra}
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    if im_end != tok.unk_token_id:
        ids.add(im_end)
    return sorted(int(i) for i in ids if i is not None and i >= 0)

