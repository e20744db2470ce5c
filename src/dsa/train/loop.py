"""One training loop for every trained piece of dsa: AdamW on a loss function over rows of data.

The caller owns the data and the loss: `loss_fn(rows) -> (loss, stats)` turns a list of rows into a
scalar loss (a mean over the rows) and a dict of floats to log. The loop owns the rest: seeded data
order, global batches split over processes and micro-batches, mixed precision and device (through
`accelerate.Accelerator`), gradient sync (DDP), clipping, the learning-rate schedule, logging.

A batch is `batch_size` rows over all processes together: with n processes each one takes its share
of every batch, and its loss is weighted by that share so that DDP's gradient average is the
gradient of the batch's mean loss. The same seed gives the same batches whatever the process
count, so n processes train like one on the same global batches (within float rounding; losses
that average over tokens rather than rows are averaged per process first).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from dsa.train.accel import make_accelerator

log = logging.getLogger(__name__)

LossFn = Callable[[list], tuple[torch.Tensor, dict]]


@dataclass
class TrainSpec:
    """How to train; the what (data, loss, parameters) goes to `fit`."""

    epochs: int = 1
    batch_size: int = 8  # rows per optimiser step, all processes together
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip_norm: float | None = None  # max gradient norm; None: no clipping
    grad_accum: int = 1  # micro-batches per step on each process (memory only: same gradient)
    mixed_precision: str = "auto"  # auto | no | bf16 | fp16, resolved per device (dsa.train.accel)
    seed: int = 0  # data order (the default order; callers may pass their own)
    log_every: int = 0  # log a step line every n steps (and the last one); 0: never
    progress: bool = False  # a progress bar on the main process
    desc: str = "train"


class _Objective(nn.Module):
    """The trained parameters as one module whose forward is the loss.

    DDP wraps a module and synchronises the gradients of the parameters it holds; wrapping this
    one lets DDP serve any loss function, however the caller's models are called inside it."""

    def __init__(self, loss_fn: LossFn, params: Sequence[nn.Parameter]):
        super().__init__()
        self.loss_fn = loss_fn
        self.params = nn.ParameterList(params)

    def forward(self, rows: list) -> tuple[torch.Tensor, dict]:
        return self.loss_fn(rows)


def split(items: Sequence, n: int) -> list[Sequence]:
    """`items` in n contiguous parts whose sizes differ by at most one (the first ones larger)."""
    size, extra = divmod(len(items), n)
    bounds = [0]
    for k in range(n):
        bounds.append(bounds[-1] + size + (k < extra))
    return [items[bounds[k]:bounds[k + 1]] for k in range(n)]


def seeded_order(n: int, seed: int) -> Callable[[int], Sequence[int]]:
    """The default data order: a fresh permutation per epoch from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return lambda _epoch: torch.randperm(n, generator=g).tolist()


def fit(loss_fn: LossFn, data: Sequence, params: Sequence[nn.Parameter], spec: TrainSpec, *,
        modules: Sequence[nn.Module] = (), order: Callable[[int], Sequence[int]] | None = None,
        schedule: Callable[[int, int], float] | None = None,
        on_step: Callable[[int, dict], None] | None = None,
        on_epoch: Callable[[int], bool | None] | None = None) -> list[dict]:
    """Train `params` on `loss_fn` over `data`; returns one dict per optimiser step.

    Args:
        loss_fn: rows -> (mean loss over them, stats). It runs under the job's autocast and puts its
            inputs on the parameters' device.
        data: the rows; `loss_fn` receives lists of them.
        params: what AdamW updates (requires_grad is switched on).
        modules: the models `loss_fn` runs, moved to the job's device first.
        order: epoch -> the order of `data` (indices) for that epoch; default `seeded_order`.
        schedule: (step, total steps) -> learning-rate factor (LambdaLR); default constant.
        on_step: called after every step with (step, its log entry), on every process.
        on_epoch: called after every epoch with its index, on every process; True stops training.

    Returns:
        [{"step", "loss", "seconds", **stats}]; the loss is the batch's mean over all processes,
        the stats are the main process's (averaged over its micro-batches).
    """
    params = list(params)
    for p in params:
        p.requires_grad_(True)
    acc = make_accelerator(spec.mixed_precision)
    for m in modules:
        m.to(acc.device)
    objective = _Objective(loss_fn, params)
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    model, opt = acc.prepare(objective, opt)
    steps_per_epoch = math.ceil(len(data) / spec.batch_size)
    total = spec.epochs * steps_per_epoch
    # stepped once per optimiser step (not prepared: Accelerate would step it once per process)
    sched = torch.optim.lr_scheduler.LambdaLR(opt.optimizer, lambda s: schedule(s, total)) if schedule else None
    order = order or seeded_order(len(data), spec.seed)
    world, rank = acc.num_processes, acc.process_index
    bar = tqdm(total=total, desc=spec.desc, disable=not (spec.progress and acc.is_main_process))
    history, step, t0 = [], 0, time.perf_counter()
    for epoch in range(spec.epochs):
        idx = list(order(epoch))
        for i in range(0, len(idx), spec.batch_size):
            batch = idx[i:i + spec.batch_size]
            loss, stats = _step(acc, model, opt, data, batch, world, rank, spec, params)
            if sched and not opt.step_was_skipped:  # fp16: a step with inf gradients is skipped
                sched.step()
            step += 1
            entry = {"step": step, "loss": loss, "seconds": round(time.perf_counter() - t0, 1), **stats}
            history.append(entry)
            bar.update(1)
            if acc.is_main_process and spec.log_every and (step % spec.log_every == 0 or step == total):
                log.warning("step %d/%d %s", step, total, {k: round(v, 4) for k, v in entry.items()})
            if on_step:
                on_step(step, entry)
        if on_epoch and on_epoch(epoch):
            break
    bar.close()
    return history


def _step(acc, model, opt, data, batch, world, rank, spec, params) -> tuple[float, dict]:
    """One optimiser step on this process's share of `batch`; returns (batch loss, stats)."""
    share = split(batch, world)[rank]
    weight_of_share = len(share) * world / len(batch)  # DDP averages over processes: undo it
    if not share:  # fewer rows than processes: run a row at weight 0 so every process syncs
        share, weight_of_share = batch[:1], 0.0
    micro = [m for m in split(share, spec.grad_accum) if m]
    opt.zero_grad(set_to_none=True)
    total, stats, seen = 0.0, {}, {}
    for k, rows in enumerate(micro):
        weight = weight_of_share * len(rows) / len(share)
        last = k == len(micro) - 1
        with nullcontext() if last else acc.no_sync(model):
            loss, part = model([data[j] for j in rows])
            acc.backward(loss * weight if weight != 1.0 else loss)
        total += loss.item() * weight if weight != 1.0 else loss.item()
        for key, v in part.items():
            stats[key] = stats.get(key, 0.0) + v
            seen[key] = seen.get(key, 0) + 1
    if spec.clip_norm is not None:
        acc.clip_grad_norm_(params, spec.clip_norm)
    opt.step()
    if world > 1:
        total = float(acc.reduce(torch.tensor(total, device=acc.device), "sum")) / world
    if len(micro) == 1:
        return total, part
    return total, {key: v / seen[key] for key, v in stats.items()}
