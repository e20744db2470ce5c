"""One spelling of the KV-cache argument across transformers versions: 5.24 names it `cache` (and
warns on `past_key_values`, to be removed in 5.40), 5.19 (the vLLM venv) knows only
`past_key_values`. Every base or adapter forward that carries a cache goes through `kv`, every
returned cache through `returned`."""

from __future__ import annotations

import functools
import inspect

from torch import nn


@functools.cache
def _argument(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def kv(module: nn.Module, cache) -> dict:
    """`{name: cache}` under the name `module`'s forward takes."""
    return {_argument(type(module)): cache}


def returned(out):
    """The cache a forward returned (`out.cache` or, on older transformers, `out.past_key_values`)."""
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else getattr(out, "past_key_values", None)
