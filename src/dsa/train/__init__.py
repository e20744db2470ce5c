"""One trainer on Accelerate for everything dsa trains (alignment SFT / distillation / DPO, guard
heads, the MiniLM baseline, the subspace-analysis updates), and a check that it really runs in
several processes. See docs/training.md."""

from dsa.train.accel import make_accelerator, process_state, resolve_precision
from dsa.train.launch import check_processes, launch_command
from dsa.train.loop import TrainSpec, fit, seeded_order, split

__all__ = ["TrainSpec", "check_processes", "fit", "launch_command", "make_accelerator",
           "process_state", "resolve_precision", "seeded_order", "split"]
