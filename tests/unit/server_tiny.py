"""Tiny guarded models and a real uvicorn server on 127.0.0.1 for the server tests."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import torch

from dsa.align.logit_adapter import LogitAdapter, LogitAdapterSpec
from dsa.align.policy import make_policy
from dsa.guards import GuardBank
from dsa.guards.bank import GuardAdapter
from dsa.guards.kinds import build_head
from dsa.runtime import SafetyModel

from .align_tiny import ProbeBank, tiny_base

PROMPT = "how to do a bad thing quickly"


def plr_bank(base, bias: float, task: str = "prompt_safety", max_length: int = 256) -> GuardBank:
    cfg = {"layers": [1, 2], "poolings": ["mean", "last"]}
    torch.manual_seed(0)
    head = build_head("plr", base.d_model, 1, cfg)
    with torch.no_grad():
        head.net.bias.fill_(bias)
    return GuardBank([GuardAdapter("plr", task, "prompt", ["unsafe"], cfg, head, [1.0], [0.5],
                                   max_length=max_length)])


def tiny_model(response_bias: float | None = None, adapter: bool = True, guard_bias: float = 0.0,
               guard: bool = True, layers: int = 4) -> SafetyModel:
    base = tiny_base("llama", layers=layers)
    lad = None
    if adapter:
        lad = LogitAdapter(base, LogitAdapterSpec(k=2))
        for p in lad.trainable_parameters():
            p.data.add_(torch.randn_like(p) * 0.2)
    rbank = None if response_bias is None else ProbeBank("layers.2.resid_post", base.d_model, bias=response_bias)
    bank = plr_bank(base, guard_bias) if guard else None
    return SafetyModel(base, bank, lad, make_policy("step") if guard else "step", response_guards=rbank)


def chat_body(content: str = PROMPT, **kw) -> dict:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 6, **kw}


@contextmanager
def live_server(app):
    """Run `app` under uvicorn on a free 127.0.0.1 port in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@contextmanager
def served_process(tmp_path, setup: str = ""):
    """`dsa.serve.serve` on a tiny model in a subprocess (so it can get SIGTERM); yields (process,
    base URL) once /health answers. `setup` is Python run on `sm` before serving (slow steps)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "serve_tiny.py"
    script.write_text("import time\n"
                      "from tests.unit.server_tiny import tiny_model\n"
                      "from dsa.serve import ServerConfig, serve\n"
                      "sm = tiny_model()\n"
                      f"{setup}\n"
                      f"serve(sm, ServerConfig(model_name='tiny'), port={port}, log_level='warning')\n")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def fast_tiny_model() -> SafetyModel:
    """`tiny_model` over a real HF fast tokenizer (word level, `<|im_start|>`/`<|im_end|>` special
    tokens, `tests.tiny.tiny_tokenizer`): what shares state between threads in a real server."""
    from dsa.base import from_model
    from tests.tiny import tiny_model as tiny_lm
    from tests.tiny import tiny_tokenizer

    base = from_model(tiny_lm("llama"), tiny_tokenizer(), name="tiny-fast")
    torch.manual_seed(0)
    lad = LogitAdapter(base, LogitAdapterSpec(k=2))
    return SafetyModel(base, plr_bank(base, 0.0), lad, make_policy("step"))
