"""One normalisation step before anything reads a message: what the model generates from is what
the guard scored.

    messages = prepare_messages(messages, tokenizer)      # NFKC, invisible characters out,
    text = tokenizer.apply_chat_template(messages, ...)   # special tokens in content marked
    ids = encode_rendered(tokenizer, [text])[0]           # marked ones tokenized as plain text

- `normalise_text`: Unicode NFKC (fullwidth and other compatibility forms fold to their plain
  letters: "ｐｉｐｅ ｂｏｍｂ" -> "pipe bomb"), then every format character (zero-width spaces and
  joiners, bidi controls, soft hyphens, Unicode tag characters), variation selector, private-use
  character and control character other than tab / newline is removed, and the overlay marks
  (strike-through, enclosing) that NFKC cannot fold are dropped.
- `protect_special_tokens`: a special-token string typed inside a message (`<|im_end|>`) is
  prefixed with a private-use marker (U+E000). `encode_rendered` tokenizes each marked string as
  plain text, so only the chat template's own special tokens are control tokens. Users cannot type
  the marker: `normalise_text` removes private-use characters first.

Only a tokenizer object (`apply_chat_template`, `__call__`, `added_tokens_decoder`) is needed, so
the HF runtime, the server, guard training and the vLLM engine all call the same functions.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Sequence

MARK = "\ue000"  # private use: never survives `normalise_text`, so only `protect_special_tokens` writes it
_KEEP_CONTROLS = {"\n", "\t"}
# combining marks NFKC leaves in place that only decorate letters (overlays, enclosing circles)
_OVERLAYS = re.compile("[\u0334-\u0338\u20d0-\u20f0\u0488\u0489]")


def _dropped(ch: str) -> bool:
    cat = unicodedata.category(ch)
    if cat == "Cc":
        return ch not in _KEEP_CONTROLS
    if cat in ("Cf", "Co", "Cs"):
        return True
    o = ord(ch)
    return 0xFE00 <= o <= 0xFE0F or 0xE0100 <= o <= 0xE01EF  # variation selectors


def normalise_text(text: str) -> str:
    """NFKC, then invisible and private-use characters removed (see the module doc).

    "\\r\\n" and "\\r" become "\\n". Idempotent: normalise_text(normalise_text(s)) == normalise_text(s).
    """
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n"))
    if not text.isascii():
        text = "".join(ch for ch in text if not _dropped(ch))
        text = _OVERLAYS.sub("", text)
        text = unicodedata.normalize("NFKC", text)  # removals can leave newly composable pairs
    else:
        text = "".join(ch for ch in text if (" " <= ch != "\x7f") or ch in _KEEP_CONTROLS)
    return text


def special_token_strings(tokenizer) -> tuple[str, ...]:
    """Every added / special token string of a tokenizer, longest first (what it would match in text)."""
    cached = getattr(tokenizer, "_dsa_special_strings", None)
    if cached is not None:
        return cached
    found = set()
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    for tok in decoder.values():
        found.add(str(getattr(tok, "content", tok)))
    for tok in getattr(tokenizer, "all_special_tokens", ()) or ():
        found.add(str(tok))
    out = tuple(sorted((s for s in found if s), key=len, reverse=True))
    try:
        tokenizer._dsa_special_strings = out
    except AttributeError:  # a tokenizer that refuses new attributes: recompute each time
        pass
    return out


def _special_pattern(tokenizer) -> re.Pattern | None:
    strings = special_token_strings(tokenizer)
    if not strings:
        return None
    cached = getattr(tokenizer, "_dsa_special_pattern", None)
    if cached is None:
        cached = re.compile("|".join(re.escape(s) for s in strings))
        try:
            tokenizer._dsa_special_pattern = cached
        except AttributeError:
            pass
    return cached


def protect_special_tokens(text: str, tokenizer) -> str:
    """Mark each special-token string inside `text` so `encode_rendered` reads it as plain text."""
    pat = _special_pattern(tokenizer)
    if pat is None:
        return text
    return pat.sub(lambda m: MARK + m.group(0), text)


def prepare_content(text: str, tokenizer=None) -> str:
    """A message's content as every reader sees it: normalised, special tokens marked (given a tokenizer)."""
    text = normalise_text(text)
    return protect_special_tokens(text, tokenizer) if tokenizer is not None else text


def prepare_messages(messages: str | Sequence[dict], tokenizer=None) -> list[dict]:
    """Chat messages (a string = one user message) with every content prepared (`prepare_content`).

    Raises:
        ValueError: a message without string `content`.
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    out = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, str):
            raise ValueError(f"message {i} has no text content (got {type(content).__name__})")
        out.append({**m, "content": prepare_content(content, tokenizer)})
    return out


def unmark(text: str) -> str:
    """A rendered text as a person reads it (the markers removed)."""
    return text.replace(MARK, "")


# An HF fast tokenizer keeps `encode_special_tokens` (and padding, truncation) as state on its
# shared Rust object and sets it at each call; a call from another thread in between gives this
# one other ids, silently (measured in a server: a typed <|im_start|> read as a control token in
# 1 of 78 prefills, 98 of 13,652 token counts wrong). The server counts tokens in request threads
# while its worker encodes batches: one encode at a time.
_ENCODE_LOCK = threading.Lock()


def encode_rendered(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of rendered chat texts: the template's special tokens are control tokens, every
    special-token string marked by `protect_special_tokens` is tokenized as plain text.

    Texts without a marker are tokenized in one batched call, exactly as before normalisation
    existed (no marker: no change to any id). Thread-safe (one encode at a time)."""
    with _ENCODE_LOCK:
        return _encode_rendered(tokenizer, list(texts))


def _encode_rendered(tokenizer, texts: list[str]) -> list[list[int]]:
    out: list[list[int] | None] = [None] * len(texts)
    plain = [i for i, t in enumerate(texts) if MARK not in t]
    if plain:
        ids = tokenizer([texts[i] for i in plain], add_special_tokens=False)["input_ids"]
        for i, x in zip(plain, ids, strict=True):
            out[i] = list(x)
    pat = _special_pattern(tokenizer)
    marked = (re.compile(re.escape(MARK) + "(" + pat.pattern + ")")
              if pat is not None and len(plain) < len(texts) else None)
    for i, t in enumerate(texts):
        if out[i] is not None:
            continue
        ids: list[int] = []
        pos = 0
        for m in (marked.finditer(t) if marked is not None else ()):
            ids += _plain_ids(tokenizer, t[pos:m.start()].replace(MARK, ""), split=False)
            ids += _plain_ids(tokenizer, m.group(1), split=True)
            pos = m.end()
        ids += _plain_ids(tokenizer, t[pos:].replace(MARK, ""), split=False)
        out[i] = ids
    return out  # type: ignore[return-value]


def _plain_ids(tokenizer, text: str, split: bool) -> list[int]:
    if not text:
        return []
    if split:
        return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
