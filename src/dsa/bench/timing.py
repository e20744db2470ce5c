"""Interleaved timing: every arm runs once per repetition, in an order rotated each repetition, so
slow drifts of a shared machine hit every arm alike; ratios are taken within a repetition."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

# What the arms are timed with. On a CPU shared with other jobs, wall-clock time counts the slices
# the scheduler gives to others (a hook descheduled mid-call looks slow); the process's CPU time
# counts only the work done, so ratios stay comparable under load. GPUs run asynchronously: wall clock.
CLOCKS = {"process": time.process_time, "wall": time.perf_counter}
_clock = {"name": "process"}


def use_clock(device: torch.device | str, name: str | None = None) -> str:
    """Pick the clock: `name`, else process CPU time on CPU and wall clock on a GPU. Returns it."""
    _clock["name"] = name or ("wall" if torch.device(device).type == "cuda" else "process")
    return _clock["name"]


def now() -> float:
    """Seconds on the chosen clock."""
    return CLOCKS[_clock["name"]]()


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work, so wall-clock times cover it (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], dict | None], device: torch.device | str = "cpu") -> dict[str, float]:
    """Seconds of `fn()` as {"total": s}, plus the named seconds `fn` returns (e.g. its guard work)."""
    synchronize(device)
    t0 = now()
    extra = fn() or {}
    synchronize(device)
    return {"total": now() - t0, **extra}


def interleave(arms: dict[str, Callable[[], dict | None]], reps: int, warmup: int = 1,
               device: torch.device | str = "cpu", budget_s: float | None = None,
               min_reps: int = 2) -> dict[str, list[dict[str, float]]]:
    """Run every arm `warmup` times untimed, then `reps` timed rounds with a rotated arm order.

    With `budget_s`, stop after the round that passes it once `min_reps` rounds are done (a long
    cell on a slow machine gets fewer repetitions rather than an unbounded run).
    Returns {arm: [{"total": s, ...} per repetition]}.
    """
    names = list(arms)
    for _ in range(warmup):
        for name in names:
            arms[name]()
    out: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    t0 = time.perf_counter()
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(timed(arms[name], device))
        if budget_s is not None and r + 1 >= min_reps and time.perf_counter() - t0 > budget_s:
            break
    return out


def spread(values: list[float], digits: int = 4) -> dict:
    """Median, min, max and count of a list of numbers."""
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "n": len(values)}


def ratios(num: list[float], den: list[float]) -> list[float]:
    """Per-repetition ratios num[i] / den[i] (both measured in repetition i)."""
    return [a / b for a, b in zip(num, den, strict=True)]


def column(runs: list[dict[str, float]], key: str = "total") -> list[float]:
    return [r.get(key, 0.0) for r in runs]
