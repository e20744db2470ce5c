"""One trainer on Accelerate for everything dsa trains (alignment SFT / distillation / DPO, guard
heads, the MiniLM baseline, the subspace-analysis updates), and the `accelerate launch` command
that runs a module on several processes (`tests/ddp_smoke.py` checks that they train as one). See
docs/training.md."""

from dsa.train.accel import make_accelerator, process_state, resolve_precision
from dsa.train.launch import launch_command
from dsa.train.loop import TrainSpec, fit, seeded_order, split

__all__ = ["TrainSpec", "fit", "launch_command", "make_accelerator",
           "process_state", "resolve_precision", "seeded_order", "split"]
