"""Run a module under `accelerate launch` with n processes (`tests/ddp_smoke.py` checks that they
train as one).

On a machine without GPUs, `accelerate launch --cpu --num_processes N` starts a single process
(Accelerate 1.15 sends --cpu to its simple launcher, several processes only through MPI), so dsa
launches with `--multi_gpu` (torchrun underneath) and `make_accelerator` picks the CPU and gloo
when no GPU is visible: the same command runs on GPUs.
"""

from __future__ import annotations

import socket
import sys


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
