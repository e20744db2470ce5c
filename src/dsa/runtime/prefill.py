"""The prefill of a batch of prompts: one base forward with the guard taps pooled in their hooks,
the prompt guard's scores, λ per row, the adapter's prefill of the rows with λ > 0 and the
response guard's state, gathered into a `DecodeBatch` ready for `dsa.runtime.decode_loop`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from dsa.align.logit_adapter import mix_rows
from dsa.align.policy import may_align
from dsa.decoding import DecodeBatch, Row, make_generator, response_state
from dsa.guards.bank import tap_reducers
from dsa.kvcache import kv
from dsa.runtime.per_row import is_mixed, row_seed, row_value
from dsa.runtime.scopes import dynamic_cache, patch_strength, scoped_taps

if TYPE_CHECKING:
    from dsa.runtime.safety_model import Messages, SafetyModel


def prefill(sm: SafetyModel, messages: Sequence[Messages], alignment="auto",
            max_new_tokens: int | Sequence[int] = 64, temperature: float | Sequence[float] = 0.0,
            seed: int | Sequence[int | None] | None = None, min_alignment=None,
            tags: Sequence | None = None) -> DecodeBatch:
    """`SafetyModel.prefill` (the arguments as there): one base forward over a batch of prompts,
    the taps' hooks alive only inside it. Returns the batch, ready for `decode_loop.decode_step`."""
    messages = [messages] if isinstance(messages, str) else list(messages)
    enc = sm.encode(messages)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    sm.check_context(mask.sum(1).tolist(), max_new_tokens)
    mixed = is_mixed(alignment)
    if not mixed:
        sm.check_alignment(alignment, min_alignment)
    need_adapter = sm.adapter is not None and (mixed or may_align(alignment, min_alignment))
    taps = sm._taps(need_adapter)
    if sm.response_guards is not None:
        taps += [t for t in sm.response_guards.taps if t not in taps]
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    base_cache = dynamic_cache(sm.base.model.config)
    # guard taps are pooled inside their hooks (the adapter's input tap is kept whole)
    banks = [b for b in (sm.guards, sm.response_guards) if b is not None]
    reduce = tap_reducers(banks, mask, keep_full=[sm.adapter.input_tap] if need_adapter else [])
    with scoped_taps(sm.base, taps, reduce) as cache:
        out = sm.base.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                            **kv(sm.base.model, base_cache), use_cache=True, logits_to_keep=1)
    scores = prompt_scores(sm, messages, cache, mask)
    lam, languages = sm._row_lambdas(messages, alignment, min_alignment, scores, ids.device)
    if sm.patch is not None and bool((lam > 0).any()):
        # the guard read the unpatched states; the rows to align are prefilled again at α = λ
        # (rows at λ = 0 get the base's states and KV bit for bit)
        base_cache = dynamic_cache(sm.base.model.config)
        with patch_strength(sm.patch, lam):
            out = sm.base.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                **kv(sm.base.model, base_cache), use_cache=True, logits_to_keep=1)
    ad_cache = aligned = None
    rows = (lam > 0).nonzero().flatten()
    if sm.adapter is not None and len(rows):  # the adapter reads the rows with λ > 0 only
        ad_cache = dynamic_cache(sm.adapter.tail.config)
        aligned, ad_cache = sm.adapter(cache[sm.adapter.input_tap][rows], mask[rows], pos[rows], ad_cache,
                                       use_cache=True, logits_to_keep=1)
        aligned = aligned[:, -1]
    logits = mix_rows(out.logits[:, -1], aligned, lam, rows)
    rstate = (response_state(sm.response_guards, cache, mask)
              if sm.response_guards is not None else None)
    return new_batch(sm, max_new_tokens, temperature, seed, tags, languages, mask, pos[:, -1:], base_cache,
                     ad_cache, lam, scores, logits, rstate)


def new_batch(sm: SafetyModel, max_new_tokens, temperature, seed, tags, languages: list[dict], mask, last_pos,
              base_cache, ad_cache, lam, scores, logits, rstate) -> DecodeBatch:
    """The `DecodeBatch` of prefilled prompts: one `Row` each (a refused language is finished
    unanswered). `ad_cache` holds the adapter's state of the rows with λ > 0, in batch order."""
    n = len(languages)
    rows = [Row(int(row_value(max_new_tokens, i)), float(row_value(temperature, i)),
                make_generator(row_seed(seed, i)), tag=None if tags is None else tags[i]) for i in range(n)]
    batch = DecodeBatch(rows, mask, last_pos, base_cache, ad_cache, lam, scores, logits, rstate,
                        ad_rows=None if ad_cache is None else (lam > 0).nonzero().flatten())
    for i, (row, found) in enumerate(zip(rows, languages, strict=True)):
        row.language = found
        if found.get("applied") and sm.unvalidated_language == "refuse":
            batch.finish(i, "unvalidated_language")  # unanswered: no token is picked for it
    return batch


def prompt_scores(sm: SafetyModel, messages: list[Messages], cache: dict[str, torch.Tensor],
                  mask: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """Guard scores from the prefill's taps. A prompt longer than some head's `max_length` is
    scored like `classify` scores it (each head reads its own render-and-left-truncate of
    training), so one prompt gets one score on every path."""
    if sm.guards is None:
        return None
    scores = {h: v.float().clone() for h, v in sm.guards.score(cache, mask).items()}
    limit = getattr(sm.guards, "shortest_max_length", None)
    long = [i for i, n in enumerate(mask.sum(1).tolist()) if limit is not None and n > limit]
    if long:
        redo = sm.classify([messages[i] for i in long])
        for j, i in enumerate(long):
            for h in scores:
                scores[h][i] = redo[j]["scores"][h]
    return scores
