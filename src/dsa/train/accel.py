"""The `Accelerator` a training job runs on: its device, its mixed precision and its processes.

One process per device: `accelerate launch` starts several and wraps the trained parameters in
DDP; run directly, it is one process on the GPU if there is one, else on the CPU.
"""

from __future__ import annotations

import torch

from dsa.extras import needs_extra

with needs_extra("train", "training (dsa.train)"):
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState, PartialState

PRECISIONS = ("auto", "no", "bf16", "fp16")


def resolve_precision(want: str, device_type: str) -> str:
    """Accelerate's `mixed_precision` for a job that asks for `want` on `device_type`.

    "auto" is bf16 on a GPU that has it (else fp16) and fp32 ("no") on the CPU: bf16 autocast over
    fp32 weights made full fine-tuning ~12x slower on this project's AVX-512-bf16 CPU (recipes/sft.py).
    "bf16" is bf16 autocast on either device (fp16 on a GPU without bf16); "fp16" needs a GPU."""
    if want not in PRECISIONS:
        raise ValueError(f"mixed precision {want!r}: expected one of {PRECISIONS}")
    if want == "no":
        return "no"
    if device_type == "cuda":
        if want == "fp16":
            return "fp16"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if want == "fp16":
        raise ValueError("fp16 mixed precision needs a GPU; use bf16 (or no) on the CPU")
    return "bf16" if want == "bf16" else "no"


def process_state() -> PartialState:
    """This process's place in a launch (index, count, `is_main_process`, `main_process_first()`),
    with the same CPU fallback as `make_accelerator`."""
    return PartialState(cpu=not torch.cuda.is_available())


def make_accelerator(mixed_precision: str = "auto") -> Accelerator:
    """An `Accelerator` on the GPU when one is visible, else on the CPU (gloo between processes).

    `cpu=True` without a GPU matters under `accelerate launch --multi_gpu`: Accelerate would
    otherwise see torchrun's ranks, no GPU, and fall back to unconnected single processes."""
    cpu = not torch.cuda.is_available()
    precision = resolve_precision(mixed_precision, "cpu" if cpu else "cuda")
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != precision:
        # Accelerate keeps one precision per process and raises on a second; one process here
        # trains several jobs (guard heads in fp32 after an alignment run in bf16), so start afresh
        # (the process group, if any, lives in PartialState and is kept).
        AcceleratorState._reset_state()
    # Heads and encoders may hold parameters a step does not use (the MiniLM pooler): let DDP look.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=cpu, mixed_precision=precision, kwargs_handlers=[ddp])
