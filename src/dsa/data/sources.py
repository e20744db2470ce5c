"""Loaders for the datasets under `data_dir()` (the shared `data/` folder): one function per source.

`load_source(name)` returns that source's Records; label 1 always means the unsafe / positive
class of the source (harmful request, toxic text, consistent summary, refusal — see each loader).
Eval-only sets (strongreject, xstest, mmlu test, mt_bench, vicuna_bench, alpaca_eval, gsm8k, ifeval and
CoCoNot's two test files) get
split "eval"; alpaca_instructions keeps its official train/val/test files; the rest have split None.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from dsa.data import eval_sources, harm_sources, moderation_sources
from dsa.data.eval_sources import SAFETY_CONCERNS
from dsa.data.moderation_sources import OPENAI_MODERATION_HEADS
from dsa.data.records import DataError, Record, unique_ids
from dsa.data.source_rows import Loader

__all__ = ["OPENAI_MODERATION_HEADS", "SAFETY_CONCERNS", "data_dir", "list_sources", "load_source"]
# the catalogue, in order: harmful requests; moderation, toxicity and benign prompts; over-refusal,
# preference pairs and utility evals
_LOADERS: dict[str, Loader] = {**harm_sources.LOADERS, **moderation_sources.LOADERS, **eval_sources.LOADERS}


def data_dir() -> Path:
    """$DSA_DATA, else the first existing of <cwd>/../shared/data and <repo root>/../shared/data."""
    if env := os.environ.get("DSA_DATA"):
        if not Path(env).is_dir():
            raise DataError(f"DSA_DATA={env} is not a directory")
        return Path(env)
    repo_root = Path(__file__).resolve().parents[3]
    for cand in (Path.cwd() / ".." / "shared" / "data", repo_root / ".." / "shared" / "data"):
        if cand.is_dir():
            return cand.resolve()
    raise DataError("no dataset folder found: set DSA_DATA=/path/to/data, or place the shared data "
                    f"folder at ../shared/data (looked in {Path.cwd().parent} and {repo_root.parent})")


def list_sources() -> list[str]:
    """Names accepted by `load_source`, in catalogue order."""
    return list(_LOADERS)


def load_source(name: str, root: str | Path | None = None, **options: Any) -> list[Record]:
    """All Records of one source (cached per process; Records are frozen, the list is a copy)."""
    if name not in _LOADERS:
        raise DataError(f"unknown source {name!r}: expected one of {', '.join(_LOADERS)}")
    root = Path(root) if root is not None else data_dir()
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))
    return list(_cached(name, str(root), frozen))


@functools.lru_cache(maxsize=64)
def _cached(name: str, root: str, options: tuple) -> tuple[Record, ...]:
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist")
    records = _LOADERS[name](folder, **dict(options))
    ids = unique_ids(r.id for r in records)
    return tuple(r if r.id == i else r.model_copy(update={"id": i}) for r, i in zip(records, ids, strict=True))
