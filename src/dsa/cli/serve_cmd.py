"""`dsa serve`: the OpenAI-compatible HTTP server (see `dsa.serve`).

Fails closed: without a prompt guard and an alignment adapter it refuses to start unless
`--allow-unguarded`; adapters (weights and calibration) are checksum-verified at load; a client's
λ only raises alignment above the guard policy unless its API key (`--api-keys`) has the override
permission.

`--engine hf` (default) runs dsa's own batching decode loop on transformers; `--engine vllm` runs
the dsa model inside vLLM (`dsa.vllm`; the vLLM venv, scripts/setup-vllm.sh) behind the same HTTP
API, policy and limits. Options one engine cannot honour are refused with the other, never ignored.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from dsa.adapter_io import SHIPPED_ADAPTER, SHIPPED_GUARD
from dsa.cli.common import add_base_args

DEFAULT_GUARD, DEFAULT_ADAPTER = SHIPPED_GUARD, SHIPPED_ADAPTER
log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from dsa.serve import ServerConfig

    d = ServerConfig()
    p = sub.add_parser("serve", help="serve /v1/chat/completions and /v1/moderations over HTTP")
    add_base_args(p)
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf",
                   help="hf: dsa's batching decode loop on transformers; vllm: the dsa model inside vLLM "
                        "(run from .venv-vllm; PLR guard heads and a DSA logit adapter only)")
    p.add_argument("--guard", action="append", help=f"guard adapter dir (repeatable; default {DEFAULT_GUARD})")
    p.add_argument("--adapter", default=None, help=f"alignment adapter dir (default {DEFAULT_ADAPTER})")
    p.add_argument("--response-guard", action="append", default=[],
                   help="guard adapter read on every decoded token before it is shown; a flag stops the "
                        "answer with finish_reason content_filter (repeatable)")
    p.add_argument("--response-debounce", type=int, default=None,
                   help="consecutive response-guard flags that stop an answer (flagged tokens are held back); "
                        "default: each response guard's stored stop rule (`dsa guard calibrate-stream`)")
    p.add_argument("--policy", default="step", help="guard score -> λ: step | linear | sigmoid")
    p.add_argument("--policy-head", default=None, help="guard head driving the policy (default prompt_safety/unsafe)")
    p.add_argument("--unvalidated-language", choices=("flag", "refuse", "allow"), default="flag",
                   help="a prompt in a language the guard was not validated on (its adapter's languages, "
                        "default en): flag = the λ of a flagged prompt, refuse = a refusal without "
                        "generating, allow = the guard policy as for any prompt")
    p.add_argument("--allow-unguarded", action="store_true",
                   help="start even without a prompt guard and an alignment adapter (/health says so)")
    p.add_argument("--api-keys", type=Path, default=None,
                   help='JSON list of {"key", "name", "permissions": ["override", "scores"]}; when set, '
                        "every /v1 request needs a bearer key")
    p.add_argument("--expose-scores", action="store_true",
                   help="return raw guard scores to every client (default: only to keys with 'scores')")
    p.add_argument("--max-prompt-tokens", type=int, default=d.max_prompt_tokens)
    p.add_argument("--default-max-tokens", type=int, default=d.default_max_tokens,
                   help="answer budget when a request sets none")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    p.add_argument("--max-moderation-inputs", type=int, default=d.max_moderation_inputs)
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="waiting requests; more get 429")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="rows decoded together (1 = serial)")
    p.add_argument("--max-prefill-tokens", type=int, default=None,
                   help=f"prompt tokens read between two decode steps: longer prompts and moderation inputs are "
                        f"read in slices, so running streams wait at most one slice (default {d.max_prefill_tokens}; "
                        f"vLLM: its max_num_batched_tokens, default 8192)")
    p.add_argument("--batch-window-ms", type=float, default=None,
                   help=f"an idle worker waits this long for more requests to share a prefill "
                        f"(default {d.batch_window_s * 1000:g}; hf engine only: vLLM batches continuously)")
    v = p.add_argument_group("vLLM engine (--engine vllm only)")
    v.add_argument("--tensor-parallel-size", type=int, default=None, help="vLLM tensor parallelism (GPUs)")
    v.add_argument("--enforce-eager", action="store_true", default=None,
                   help="no torch.compile / CUDA graphs (faster start; what the CPU tests use)")
    v.add_argument("--max-model-len", type=int, default=None,
                   help="context (prompt + answer) in tokens; default the model's")
    v.add_argument("--vllm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="another vllm EngineArgs field, VALUE parsed as JSON when it parses "
                        "(e.g. kv_cache_memory_bytes=1073741824, gpu_memory_utilization=0.8); repeatable")
    p.add_argument("--model-name", default=None, help="model id clients send (default: the base's name)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=run)


def resolve_adapters(args: argparse.Namespace) -> tuple[list[str], str | None]:
    """The guard and adapter dirs to load; ValueError (before any model is loaded) when the server
    would run unguarded without --allow-unguarded."""
    guards = args.guard or ([DEFAULT_GUARD] if Path(DEFAULT_GUARD).exists() else [])
    adapter = args.adapter or (DEFAULT_ADAPTER if Path(DEFAULT_ADAPTER).exists() else None)
    missing = [what for what, have in (("a prompt guard (--guard, default " + DEFAULT_GUARD + ")", guards),
                                       ("an alignment adapter (--adapter, default " + DEFAULT_ADAPTER + ")",
                                        adapter)) if not have]
    if missing and not args.allow_unguarded:
        raise ValueError(f"refusing to start without {' and '.join(missing)}; pass --allow-unguarded to "
                         "serve unaligned answers")
    return guards, adapter


VLLM_ONLY = ("tensor_parallel_size", "enforce_eager", "max_model_len", "vllm_arg")


def check_engine_options(args: argparse.Namespace) -> None:
    """ValueError for an option the chosen engine cannot honour (before anything is loaded)."""
    if args.engine == "hf":
        given = [f"--{o.replace('_', '-')}" for o in VLLM_ONLY if getattr(args, o) not in (None, [])]
        if given:
            raise ValueError(f"{', '.join(given)}: only with --engine vllm")
        return
    refused = []
    if args.response_guard:
        refused.append("--response-guard (streaming response guards do not run inside vLLM yet)")
    if args.response_debounce is not None:
        refused.append("--response-debounce (it only applies to response guards)")
    if args.batch_window_ms is not None:
        refused.append("--batch-window-ms (vLLM batches continuously)")
    if args.device != "cpu":
        refused.append("--device (vLLM picks its platform: CUDA where the vLLM build has it)")
    if refused:
        raise ValueError("--engine vllm does not support " + "; ".join(refused))


def vllm_args(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--vllm-arg expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def run(args: argparse.Namespace) -> int:
    from dsa.serve import ServerConfig, load_api_keys, serve

    check_engine_options(args)
    if args.engine == "vllm":
        from dsa.vllm.serve import require_vllm

        require_vllm()
    guards, adapter = resolve_adapters(args)
    window_ms = args.batch_window_ms if args.batch_window_ms is not None else ServerConfig.batch_window_s * 1000
    config = ServerConfig(
        model_name=args.model_name, api_keys=load_api_keys(args.api_keys) if args.api_keys else [],
        allow_unguarded=args.allow_unguarded, expose_scores=args.expose_scores,
        max_prompt_tokens=args.max_prompt_tokens, default_max_tokens=args.default_max_tokens,
        max_body_bytes=args.max_body_bytes, max_moderation_inputs=args.max_moderation_inputs,
        max_queue=args.max_queue, max_batch=args.max_batch,
        max_prefill_tokens=args.max_prefill_tokens or ServerConfig.max_prefill_tokens,
        batch_window_s=window_ms / 1000, unvalidated_language=args.unvalidated_language)
    keys = f"{len(config.api_keys)} API keys" if config.api_keys else "no API keys (no client may lower λ)"
    if not (guards and adapter):
        log.warning("serving WITHOUT %s (--allow-unguarded)",
                    "a prompt guard" if not guards else "an alignment adapter")
    if args.engine == "vllm":
        from dsa.vllm.serve import VllmServedModel

        served = VllmServedModel.load(
            args.base, guards, adapter, args.policy, args.policy_head, dtype=args.dtype,
            tensor_parallel_size=args.tensor_parallel_size or 1, enforce_eager=bool(args.enforce_eager),
            max_model_len=args.max_model_len, max_batch=args.max_batch,
            max_prefill_tokens=args.max_prefill_tokens or 8192, extra=vllm_args(args.vllm_arg))
        print(f"serving {args.base} on vLLM with guards {guards or 'none'}, adapter {adapter or 'none'} and {keys} "
              f"on http://{args.host}:{args.port} once the engine has started", flush=True)
        serve(served, config, args.host, args.port)
        return 0
    from dsa.base import load_base
    from dsa.runtime import SafetyModel

    base = load_base(args.base, dtype=args.dtype, device=args.device)
    sm = SafetyModel.load(base, guards=guards, adapter=adapter, policy=args.policy, policy_head=args.policy_head,
                          response_guards=args.response_guard, unvalidated_language=args.unvalidated_language)
    sm.response_debounce = args.response_debounce
    print(f"serving {base.name} with guards {guards or 'none'}, adapter {adapter or 'none'}, "
          f"response guards {args.response_guard or 'none'} and {keys} on http://{args.host}:{args.port}")
    serve(sm, config, args.host, args.port)
    return 0
