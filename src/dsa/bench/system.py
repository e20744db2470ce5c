"""The machine a run measured, peak memory of a `SafetyModel` against the base alone (each in a
fresh process), bytes per guard head, and server throughput (through scripts/server_load.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]


def machine(device: str, dtype: torch.dtype) -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch": torch.__version__,
            "python": platform.python_version(), "device": device, "dtype": str(dtype).replace("torch.", ""),
            "load_average": [round(x, 2) for x in os.getloadavg()], "commit": commit}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


_MEMORY_SCRIPT = """
import json, resource, sys, torch
from dsa.base import load_base
from dsa.runtime import SafetyModel
from dsa.adapter_io import SHIPPED_ADAPTER, SHIPPED_GUARD
what, device, dtype = sys.argv[1], sys.argv[2], sys.argv[3]
base = load_base(dtype=dtype, device=device)
text = " ".join(["The river turned twice before it reached the sea."] * 24)
with torch.inference_mode():
    if what == "base":
        enc = base.tokenizer(base.chat_text(text), return_tensors="pt").to(device)
        base.model.generate(**enc, max_new_tokens=16, min_new_tokens=16, do_sample=False)
    else:
        g = ["adapters/guards/" + n for n in ("prompt_safety", "toxigen", "openai_moderation", "summedits")]
        sm = SafetyModel.load(base, guards=g, adapter=SHIPPED_ADAPTER,
                              response_guards=["adapters/guards/response_harm"])
        sm.generate([text], alignment=1.0, max_new_tokens=16)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
gpu = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
print(json.dumps({"peak_rss_bytes": peak, "peak_gpu_bytes": gpu}))
"""


def peak_memory(device: str, dtype: str) -> dict:
    """Peak RSS of a process that loads the base and generates 16 tokens for a ~300-token prompt,
    against one that does the same through a `SafetyModel` with every shipped guard, the response
    guard and the alignment adapter at λ = 1."""
    out = {}
    for what in ("base", "safety_model"):
        p = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, what, device, dtype], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            return {"error": p.stderr.strip()[-500:]}
        out[what] = json.loads(p.stdout.strip().splitlines()[-1])
    out["ratio"] = round(out["safety_model"]["peak_rss_bytes"] / out["base"]["peak_rss_bytes"], 4)
    return out


def server_throughput(clients=(1, 4, 16), requests_per_client: int = 2, max_tokens: int = 16,
                      device: str = "cpu") -> dict:
    """Requests/s of `dsa serve` (shipped guard and adapter, dynamic batching) at each client count,
    driven by scripts/server_load.py."""
    path = ROOT / "scripts" / "server_load.py"
    if not path.exists():
        return {"error": f"{path} not found (run from a checkout of the repository)"}
    spec = importlib.util.spec_from_file_location("server_load", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = {}
    with mod.server("--device", device) as url:
        mod.load_phase(url, 1, 1, max_tokens)  # warm-up
        for c in clients:
            out[str(c)] = mod.load_phase(url, c, requests_per_client, max_tokens)
    return out
