"""A window guard head's running state over one prompt read in chunks (vLLM's chunked prefill,
`dsa.chunked_prefill`), so the prompt's score equals `GuardBank.score` on the whole prompt.

    state = PromptWindow(window=16)
    for z in chunks:                   # [q, heads] per-token logits (`WindowHead.token_logits`, no bias)
        state.extend(z)
    logits = state.best + head.net.bias   # then `GuardAdapter.probs`, as every head

The score of `dsa.guards.heads.rolling_max` is the highest mean of `window` consecutive token
logits (only full windows count, except a prompt shorter than `window`, whose one window is all
of it). A full window ending in a new chunk reaches back at most `window - 1` tokens, so the last
`window` logits, the token count and the best full-window mean so far are all the state needed.
This is `dsa.guards.kinds.window.RollingMax` (the response guard's one-token-at-a-time state) for a
chunk of any length at once, computed by `rolling_max` itself on the kept tail plus the chunk.
"""

from __future__ import annotations

import torch

from dsa.guards.heads import rolling_max


class PromptWindow:
    """One request's state for one window head: the last `window` token logits [m, heads]
    (m = min(count, window)), how many tokens were read, and `best` [heads]: the best full-window
    mean, or while fewer than `window` tokens were read, the mean of all of them (None before any)."""

    def __init__(self, window: int):
        self.window = int(window)
        self.tail: torch.Tensor | None = None
        self.count = 0
        self.best: torch.Tensor | None = None

    def extend(self, z: torch.Tensor) -> None:
        """Read the next tokens' logits [q, heads] (q >= 1)."""
        z = z.float()
        seq = z if self.tail is None else torch.cat([self.tail, z])  # [m + q, heads]
        # every full window of `seq` ends in the new chunk, except (when m == window) the one
        # ending at the tail's last token, which `best` already holds
        r = rolling_max(seq[None], torch.ones(1, seq.shape[0], dtype=seq.dtype, device=seq.device),
                        self.window)[0]
        # before the first full window `best` is a short prompt's mean: replaced, never kept
        self.best = torch.maximum(self.best, r) if self.count >= self.window else r
        self.count += z.shape[0]
        self.tail = seq[-self.window:]
