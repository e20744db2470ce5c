"""What the base reads: one render-and-truncate path shared by feature extraction, guard training
and guard serving, so a guard scores at inference the tokens it was trained on.

    ids = encode_inputs(base, ["How do I bake bread?", [{"role": "user", "content": "hi"}]], 256)

`render_input` chat-renders a raw input after the one normalisation step (`dsa.normalise`:
NFKC, invisible characters out, special tokens typed in a message marked as text), `tokenize`
turns rendered texts into ids (marked special tokens as plain text) and keeps the last
`max_length` tokens, `encode_inputs` is both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from dsa.base import Base
from dsa.normalise import encode_rendered, prepare_messages


def text_hash(text: str) -> str:
    """The key of a rendered text in every feature store (changing it orphans the stores)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def render_input(base: Base, item: str | list[dict], add_generation_prompt: bool | None = None) -> str:
    """A raw input as the chat text the base reads: a string is one user message, a list is chat
    messages. The generation prompt is added unless the last message is the assistant's (a
    transcript to judge), or as `add_generation_prompt` says. Every message's content is
    normalised first (`dsa.normalise.prepare_messages`)."""
    if isinstance(item, str):
        return base.chat_text(prepare_messages(item, base.tokenizer))
    item = prepare_messages(item, base.tokenizer)
    if add_generation_prompt is None:
        add_generation_prompt = not item or item[-1].get("role") != "assistant"
    return base.chat_text(item, add_generation_prompt=add_generation_prompt)


def template_tail_tokens(base: Base) -> int:
    """How many tokens the chat template adds after a user's text (on ChatML: `<|im_end|>`, a newline,
    `<|im_start|>assistant`, a newline): the end of every rendered prompt that is not the request."""
    marker = "\u2603"
    text = render_input(base, marker)
    return len(base.tokenizer(text[text.rindex(marker) + 1:], add_special_tokens=False)["input_ids"])


def tokenize(base: Base, texts: Sequence[str], max_length: int | None) -> list[list[int]]:
    """Token ids of each rendered text, truncated from the left to its last `max_length` tokens
    (None: whole) so the end of a chat (the part a guard must read) is always kept."""
    ids = encode_rendered(base.tokenizer, texts)
    if max_length is None:
        return ids
    return [x[-max_length:] if len(x) > max_length else x for x in ids]


def encode_inputs(base: Base, items: Sequence[str | list[dict]], max_length: int | None,
                  add_generation_prompt: bool | None = None) -> list[list[int]]:
    """`render_input` then `tokenize`: the token ids a guard reads for raw inputs."""
    return tokenize(base, [render_input(base, x, add_generation_prompt) for x in items], max_length)


def pad_right(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, width] input ids and attention mask, right-padded."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, x in enumerate(ids):
        input_ids[r, : len(x)] = torch.as_tensor(x)
        mask[r, : len(x)] = 1
    return input_ids, mask


def pad_left(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, width] input ids and attention mask, left-padded (generation appends on the right)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, x in enumerate(ids):
        if x:
            input_ids[r, width - len(x):] = torch.as_tensor(x)
            mask[r, width - len(x):] = 1
    return input_ids, mask


def length_buckets(lengths: Sequence[int], batch_tokens: int, max_batch: int) -> list[list[int]]:
    """Group indices into batches of similar length so padding stays small.

    Sorts by length and cuts a batch when (rows × longest row) would pass `batch_tokens`.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > batch_tokens or len(cur) >= max_batch:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches
