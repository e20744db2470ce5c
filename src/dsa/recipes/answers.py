"""Cached greedy answers: the base's own answers are training targets (self-distillation, DPO
"rejected" compliance) and the reference for benign identity, so they are generated once.

Cache: JSONL under `$DSA_CACHE/answers/<fingerprint>-<tag>-<max_new_tokens>.jsonl`, one
`{"prompt", "text", "stop_reason"}` per line, appended batch by batch (resumable).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from dsa.base import cache_dir

log = logging.getLogger(__name__)


def generate_batched(generate: Callable[[list[str]], list], prompts: Sequence[str], batch_size: int = 32,
                     desc: str = "generate", cache_file: Path | None = None) -> list[dict]:
    """Run `generate(prompts) -> results` over `prompts` in length-sorted batches.

    Returns one dict per prompt (input order) with text, stop_reason, lam and guard_scores.
    With `cache_file`, answers already there are reused and new ones appended.
    """
    done: dict[str, dict] = {}
    if cache_file is not None and cache_file.exists():
        for line in cache_file.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["prompt"]] = row
    todo = sorted({p for p in prompts if p not in done}, key=len)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(0, len(todo), batch_size), desc=desc, disable=not todo):
        chunk = todo[i:i + batch_size]
        rows = [{"prompt": p, "text": r.text, "stop_reason": r.stop_reason, "lam": r.lam,
                 "guard_scores": r.guard_scores} for p, r in zip(chunk, generate(chunk), strict=True)]
        for row in rows:
            done[row["prompt"]] = row
        if cache_file is not None:
            with cache_file.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
    return [done[p] for p in prompts]


def base_answer_file(fingerprint: str, tag: str, max_new_tokens: int) -> Path:
    return cache_dir() / "answers" / f"{fingerprint}-{tag}-{max_new_tokens}.jsonl"


def base_answers(base, prompts: Sequence[str], tag: str, max_new_tokens: int = 32,
                 batch_size: int = 32) -> list[str]:
    """The base's greedy answers (cached per base fingerprint, tag and length)."""
    from dsa.runtime import SafetyModel

    sm = SafetyModel(base)
    rows = generate_batched(lambda ps: sm.generate(ps, alignment=0.0, max_new_tokens=max_new_tokens),
                            prompts, batch_size, f"base answers ({tag})",
                            base_answer_file(base.fingerprint, tag, max_new_tokens))
    return [r["text"] for r in rows]
