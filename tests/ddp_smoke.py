"""A tiny guard-head training job, run alone or under `accelerate launch`, and `check_processes`,
which launches it on n processes and compares them (test support: it trains a guard head, so it
lives above dsa's trainer, not in `dsa.train`).

    python -m accelerate.commands.launch --multi_gpu --num_processes 2 -m tests.ddp_smoke --out DIR

Trains an RTB guard head (`dsa.guards.train.fit_torch`, no dropout) on seeded synthetic features,
every process on its share of each batch, and writes DIR/rank{i}.json with the trained
parameters, so that ranks can be compared with each other and with one process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from dsa.train import launch_command

ROOT = Path(__file__).resolve().parents[1]  # `-m tests.ddp_smoke` is found from here

N_ROWS, LAYERS, D_MODEL, WINDOW = 40, 2, 16, 4
CFG = {"ladder": [0, 1], "width": 8}


def features(n: int, seed: int):
    """Synthetic cached features and labels that depend on them (so the head learns something)."""
    from dsa.guards.featurize import TaskFeatures

    g = torch.Generator().manual_seed(seed)
    ntok = torch.randint(1, WINDOW + 1, (n,), generator=g)
    tokens = torch.randn(int(ntok.sum()), LAYERS, D_MODEL, generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), ntok.cumsum(0)])
    last = tokens[offsets[1:] - 1]  # [n, layers, d]
    y = torch.stack([(last[:, 0, 0] > 0), (last[:, 1, :2].sum(-1) > 0)], 1).float()
    feats = TaskFeatures(last, last, tokens.to(torch.bfloat16), ntok, offsets, tuple(range(LAYERS)))
    return feats, y


def run(epochs: int = 3, batch_size: int = 8) -> dict:
    """Train the head (one process, or this process's share under a launch); its parameters and ranks."""
    from dsa.guards.kinds import head_kind
    from dsa.guards.train import fit_torch
    from dsa.train.accel import make_accelerator

    tr, y_tr = features(N_ROWS, 0)
    va, y_va = features(16, 1)
    head = fit_torch(head_kind("rtb"), tr, y_tr, va, y_va, CFG, D_MODEL, seed=0, epochs=epochs, patience=epochs,
                     lr=1e-2, batch_size=batch_size)
    acc = make_accelerator("no")
    params = torch.cat([p.detach().flatten().float().cpu() for p in head.parameters()])
    return {"rank": acc.process_index, "world": acc.num_processes, "distributed_type": str(acc.distributed_type),
            "params": params.tolist()}


def check_processes(n: int = 2, timeout: float = 300.0) -> dict:
    """Launch the smoke job (`tests.ddp_smoke`) on n processes and compare them.

    Returns:
        {"accelerate_processes": ranks that reported, "params_equal_across_ranks": bool,
         "max_abs_diff_vs_one_process": float, "seconds": wall time of the launch,
         "cpu_seconds": CPU time of every launched process together, ...}
    Raises:
        RuntimeError: the launch failed (its output is in the message).
    """
    with tempfile.TemporaryDirectory(prefix="dsa-ddp-") as out:
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(launch_command(n, "tests.ddp_smoke", "--out", out), env=env, timeout=timeout,
                              capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"accelerate launch failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                               f"\n{proc.stderr[-3000:]}")
        ranks = [json.loads(p.read_text()) for p in sorted(Path(out).glob("rank*.json"))]
    if len(ranks) != n:
        raise RuntimeError(f"{len(ranks)} of {n} processes reported:\n{proc.stderr[-3000:]}")
    one = run()
    first = ranks[0]["params"]
    return {
        "accelerate_processes": len({r["rank"] for r in ranks}),
        "world_sizes": sorted({r["world"] for r in ranks}),
        "distributed_type": ranks[0]["distributed_type"],
        "params_equal_across_ranks": all(r["params"] == first for r in ranks),
        "max_abs_diff_vs_one_process": max(abs(a - b) for a, b in zip(first, one["params"], strict=True)),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for rank{i}.json")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    res = run(args.epochs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{res['rank']}.json").write_text(json.dumps(res))


if __name__ == "__main__":
    main()
