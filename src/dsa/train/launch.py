"""Run a module under `accelerate launch` with n processes, and check that they trained as one.

On a machine without GPUs, `accelerate launch --cpu --num_processes N` starts a single process
(Accelerate 1.15 sends --cpu to its simple launcher, several processes only through MPI), so dsa
launches with `--multi_gpu` (torchrun underneath) and `make_accelerator` picks the CPU and gloo
when no GPU is visible: the same command runs on GPUs.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(n: int, module: str, *args: str) -> list[str]:
    """`accelerate launch` of `python -m module args` on n processes of this machine."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
            "-m", module, *args]


def check_processes(n: int = 2, timeout: float = 300.0) -> dict:
    """Launch the smoke job (`dsa.train.smoke`) on n processes and compare them.

    Returns:
        {"accelerate_processes": ranks that reported, "params_equal_across_ranks": bool,
         "max_abs_diff_vs_one_process": float, "seconds": wall time of the launch,
         "cpu_seconds": CPU time of every launched process together, ...}
    Raises:
        RuntimeError: the launch failed (its output is in the message).
    """
    from dsa.train import smoke

    with tempfile.TemporaryDirectory(prefix="dsa-ddp-") as out:
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(launch_command(n, "dsa.train.smoke", "--out", out), env=env, timeout=timeout,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"accelerate launch failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                               f"\n{proc.stderr[-3000:]}")
        ranks = [json.loads(p.read_text()) for p in sorted(Path(out).glob("rank*.json"))]
    if len(ranks) != n:
        raise RuntimeError(f"{len(ranks)} of {n} processes reported:\n{proc.stderr[-3000:]}")
    one = smoke.run()
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
