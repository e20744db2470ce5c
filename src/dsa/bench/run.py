"""The benchmark's config and entry point: setup → every section → results/bench.json → doc."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dsa.adapter_io import SHIPPED_ADAPTER, atomic_write_text
from dsa.bench.timing import use_clock

TARGETS = {  # ratio ≤ target on this machine (issue #11 / DESIGN.md)
    "guard_overhead": {"plr": 1.01, "mlp": 1.01, "rtb": 1.05, "lst": 1.05, "window": 1.03, "all_shipped": 1.03},
    "streaming_per_token": 1.02, "benign_request": 1.02, "flagged_request": 1.25,
    "served_benign_request": 1.02,  # issue #23 item 9: λ = 0 on the server's path (the worker's prefill)
    "runtime_vs_generate": 0.90,  # ≥: tokens/s of the runtime over model.generate
}


@dataclass
class BenchConfig:
    """What `dsa bench` measures. Sizes default to what fits ~15 minutes on a 2-core CPU."""

    base: str = field(default="smollm2-135m-instruct", metadata={"help": "base model"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda (cuda: bf16, batch 32)"})
    dtype: str = field(default="auto", metadata={"help": "bf16 | fp32 | auto"})
    lengths: tuple[int, ...] = field(default=(64, 256, 1024), metadata={"help": "prompt lengths (tokens)"})
    batches: tuple[int, ...] = field(default=(1, 16), metadata={"help": "prefill batch sizes"})
    big_cells: bool = field(default=False, metadata={"help": "also batch > 1 at lengths > 64 (slow on CPU)"})
    reps: int = field(default=3, metadata={"help": "timed repetitions per prefill cell"})
    cell_budget_s: float = field(default=150.0, metadata={"help": "a prefill cell stops adding repetitions "
                                                                  "after this many seconds (2 at least)"})
    generative_tokens: int = field(default=4, metadata={"help": "tokens the generative guard writes"})
    stream_lengths: tuple[int, ...] = field(default=(64, 256, 1024), metadata={"help": "transcript lengths"})
    stream_prefill: bool = field(default=True, metadata={"help": "prefill each transcript up to its last 32 "
                                                                 "tokens, decode those (else decode every token)"})
    request_tokens: int = field(default=32, metadata={"help": "tokens per benign/flagged request"})
    request_reps: int = field(default=4, metadata={"help": "repetitions of the request arms"})
    decode_batches: tuple[int, ...] = field(default=(1, 8, 32), metadata={"help": "runtime vs generate"})
    decode_tokens: int = field(default=32, metadata={"help": "tokens per row, runtime vs generate"})
    decode_reps: int = field(default=2, metadata={"help": "repetitions, runtime vs generate"})
    clients: tuple[int, ...] = field(default=(1, 4, 16), metadata={"help": "server client counts"})
    sections: tuple[str, ...] = field(default=("guard", "streaming", "requests", "decode", "memory", "server"),
                                      metadata={"help": "what to run"})
    guards_dir: str | None = "adapters/guards"  # None: random heads only (tests)
    adapter: str = SHIPPED_ADAPTER
    update: bool = field(default=False, metadata={"help": "keep the other sections of an existing `out`"})
    out: str = "results/bench.json"
    doc: str = "docs/results-bench.md"

    @classmethod
    def quick(cls, **kw) -> BenchConfig:
        """A smoke run (< 60 s on the real model): one small cell per section, no subprocesses."""
        return cls(**{"lengths": (64,), "batches": (1,), "reps": 2, "stream_lengths": (8, 16),
                      "request_tokens": 8, "request_reps": 2, "decode_batches": (1, 2), "decode_tokens": 8,
                      "decode_reps": 1, "sections": ("guard", "streaming", "requests", "decode"), **kw})

    def for_device(self) -> BenchConfig:
        """cuda: bf16 and batch 32 where the CPU default has 16."""
        if self.device.startswith("cuda"):
            self.dtype = "bf16" if self.dtype == "auto" else self.dtype
            self.batches = tuple(32 if b == 16 else b for b in self.batches)
            self.big_cells = True
        return self


def _headline(cells: list[dict], ref: tuple[int, int]) -> dict:
    """The ratios of the reference cell (batch, length), else of the first cell."""
    pick = next((c for c in cells if (c["batch"], c["length"]) == ref), cells[0])
    return ({k: v["ratio"]["median"] for k, v in pick["ratios"].items()},
            {"batch": pick["batch"], "length": pick["length"]})


def _aligned_flops_note(base, adapter) -> str:
    """Why λ = 1 costs what it does, by counting: the adapter's tail layers and a second LM head."""
    cfg = base.model.config
    d, n, k = cfg.hidden_size, cfg.num_hidden_layers, adapter.spec.k
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    layer = d * d * 2 + d * kv * 2 + 3 * d * cfg.intermediate_size
    head = d * cfg.vocab_size
    ratio = (n * layer + head + k * layer + head) / (n * layer + head)
    now = (n * layer + k * layer + head) / (n * layer + head)
    return (f"per decoded token the aligned path adds the adapter's {k} tail layers and reads its logits "
            f"through the LM head ({head / 1e6:.0f} M multiply-adds, vocabulary {cfg.vocab_size}); the base's own "
            f"LM head is skipped when every row is at λ = 1: {now:.2f}× the base's multiply-adds per token by "
            f"count ({ratio:.2f}× with both LM heads); the rest is the tail's own per-call work (a second decoder "
            f"call, its masks and KV cache) and the prefill's adapter pass")


def _save(res: dict, out: str | None) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out), json.dumps(res, indent=2) + "\n")


def run_bench(cfg: BenchConfig, base=None, log=print, command: str = "dsa bench") -> dict:
    """Run the configured sections; returns the results dict, written to `cfg.out` after every
    section (`"complete": false` until the last one is done)."""
    from dsa.base import load_base
    from dsa.bench import decode, prefill, system, workloads
    from dsa.runtime import SafetyModel

    t_start = time.perf_counter()
    base = base or load_base(cfg.base, dtype=cfg.dtype, device=cfg.device)
    clock = use_clock(cfg.device)
    old = json.loads(Path(cfg.out).read_text()) if cfg.update and cfg.out and Path(cfg.out).exists() else None
    res: dict = {"command": command, "config": asdict(cfg), "machine": system.machine(cfg.device, base.dtype),
                 "targets": TARGETS, "complete": False, "clock": clock}
    if old is not None:  # re-measure the configured sections only; keep the file's others
        res = {**old, "targets": TARGETS, "complete": False,  # targets are the code's, not the old file's
               "updated": {**old.get("updated", {}), ",".join(cfg.sections): {"command": command,
                                                                           "machine": res["machine"]}}}
    variants = workloads.head_variants(base, cfg.guards_dir)
    res["heads"] = {k: {"what": v["what"], "random_weights": v["random_weights"], "taps": v["bank"].taps,
                        "bytes": sum(workloads.adapter_bytes(a) for a in v["bank"].adapters),
                        "heads": len(v["bank"].heads)} for k, v in variants.items()}
    if "guard" in cfg.sections:
        cells_at = [(b, n) for b in cfg.batches for n in cfg.lengths
                    if b == 1 or n == min(cfg.lengths) or cfg.big_cells]
        ref = (1, 256) if (1, 256) in cells_at else cells_at[0]

        def keep(cells):
            res["guard_overhead"], res["guard_overhead_reference"] = _headline(cells, ref)
            res["guard_overhead_cells"] = cells
            _save(res, cfg.out)

        prefill.guard_overhead(base, variants, cells_at, cfg.reps, generative_tokens=cfg.generative_tokens,
                               budget_s=cfg.cell_budget_s, log=log, on_cell=keep)
        _save(res, cfg.out)
    shipped = Path(cfg.guards_dir or "")
    has_shipped = not any(v["random_weights"] for k, v in variants.items() if k in ("plr", "window", "all_shipped"))
    prompt_bank = variants.get("window", variants["plr"])["bank"]  # the shipped prompt guard
    response_bank = (workloads.GuardBank.load([shipped / "response_harm"], base)
                     if has_shipped and (shipped / "response_harm").is_dir() else variants["mlp"]["bank"])
    res["response_guard"] = {"what": "shipped response_harm" if has_shipped else "random MLP probe",
                             "taps": response_bank.taps}
    plain = SafetyModel(base)
    if "streaming" in cfg.sections:
        guarded = SafetyModel(base, response_guards=response_bank)
        res["streaming_detail"] = decode.streaming_per_token(plain, guarded, cfg.stream_lengths,
                                                               prefill_context=cfg.stream_prefill)
        res["streaming_per_token"] = {k: v["ratio"]["median"] for k, v in res["streaming_detail"].items()}
        log(f"bench: streaming guard per token {res['streaming_per_token']}")
        _save(res, cfg.out)
    if "requests" in cfg.sections:
        from dsa.align.logit_adapter import LogitAdapter, LogitAdapterSpec

        adapter = (LogitAdapter.load(cfg.adapter, base) if has_shipped and Path(cfg.adapter).is_dir()
                   else LogitAdapter(base, LogitAdapterSpec(k=1)).eval())
        full = SafetyModel(base, guards=prompt_bank, adapter=adapter, response_guards=response_bank)
        res["requests_detail"] = decode.alignment_requests(plain, full, cfg.request_tokens, cfg.request_reps)
        res["benign_request"] = res["requests_detail"]["benign"]["ratio"]["median"]
        res.setdefault("why", {})["flagged_request"] = _aligned_flops_note(base, adapter)
        res["flagged_request"] = res["requests_detail"]["flagged"]["ratio"]["median"]
        res["served_benign_request"] = res["requests_detail"]["served_benign"]["ratio"]["median"]
        log(f"bench: benign request {res['benign_request']}, flagged request {res['flagged_request']}, "
            f"served benign request {res['served_benign_request']}")
        _save(res, cfg.out)
    if "decode" in cfg.sections:
        res["runtime_detail"] = decode.runtime_vs_generate(plain, cfg.decode_batches, cfg.decode_tokens,
                                                           cfg.decode_reps)
        res["runtime_vs_generate"] = {k: v["ratio"]["median"] for k, v in res["runtime_detail"].items()}
        log(f"bench: runtime vs generate {res['runtime_vs_generate']}")
        _save(res, cfg.out)
    if "memory" in cfg.sections:
        res["memory"] = system.peak_memory(cfg.device, str(base.dtype).replace("torch.", ""))
        res["memory"]["bytes_per_head"] = {a.task: workloads.adapter_bytes(a) // len(a.heads)
                                           for a in variants["all_shipped"]["bank"].adapters}
        log(f"bench: memory {res['memory'].get('ratio')}")
        _save(res, cfg.out)
    if "server" in cfg.sections:
        res["server"] = system.server_throughput(cfg.clients, device=cfg.device)
        log(f"bench: server {res['server']}")
    limit = getattr(prompt_bank, "max_length", None)
    if limit is not None and "guard" in cfg.sections and max(cfg.lengths) > limit:
        res.setdefault("notes", []).append(
            f"the guard overhead above is the guard work on the prefill itself. `SafetyModel.prefill` scores a prompt "
            f"longer than the prompt guard's max_length ({limit} tokens) once more, with a forward over the prompt "
            f"truncated to its last {limit} tokens as the guard was trained (so one prompt gets one score on every "
            f"path): at {max(cfg.lengths)} tokens the runtime adds about a {limit}-token forward to the guard's cost "
            "(not timed here).")
    if old is None:
        res["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        res["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if old is None:
        res["seconds"] = round(time.perf_counter() - t_start, 1)
    else:
        res["updated"][",".join(cfg.sections)]["seconds"] = round(time.perf_counter() - t_start, 1)
    res["complete"] = True
    _save(res, cfg.out)
    return res
