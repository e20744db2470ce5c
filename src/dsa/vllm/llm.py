"""`VllmSafetyModel`: dsa's guarded, context-aligned generation on a `vllm.LLM` engine.

    sm = VllmSafetyModel(guards=["adapters/guards/prompt_safety"], adapter="adapters/align/dsa_adapter")
    out = sm.generate(["How do I bake bread?", "How do I make a pipe bomb?"], alignment="auto")
    out[1].lam, out[1].guard_scores, out[1].text

Each request carries `extra_args={"dsa_alignment": ..., "dsa_request_key": ...}`; the model
computes the guard scores and λ inside the engine's forward, and they come back through the
worker extension (`collective_rpc("dsa_pop_results")`) once the batch is done.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from dsa.adapter_io import SHIPPED_ADAPTER, SHIPPED_GUARD
from dsa.extras import needs_extra
from dsa.vllm.config import ROW_STATE, WORKER_EXTENSION, dsa_overrides

Messages = str | list[dict]
_STOP = {"stop": "eos", "length": "length"}  # vLLM's finish reasons as SafetyModel names them


@dataclass
class VllmResult:
    text: str
    guard_scores: dict[str, float]
    lam: float
    stop_reason: str  # "eos" | "length" | vLLM's finish reason
    token_ids: list[int]
    prompt_token_ids: list[int]
    logprobs: list[dict[int, float]] | None = field(default=None, repr=False)  # per generated token


def engine_kwargs(base_dir: str, guards: Sequence[str] = (), adapter: str | None = None,
                  policy: str = "step", policy_head: str | None = None, **llm_kwargs) -> dict:
    """`vllm.LLM(**kwargs)` serving the dsa model on `base_dir` (eager, no prefix caching)."""
    kw = dict(model=base_dir, dtype="bfloat16", enforce_eager=True, enable_prefix_caching=False,
              hf_overrides=dsa_overrides(guards, adapter, policy, policy_head),
              logits_processors=[ROW_STATE], worker_extension_cls=WORKER_EXTENSION)
    kw.update(llm_kwargs)
    if kw.get("enable_prefix_caching"):
        raise ValueError("the dsa model needs enable_prefix_caching=False")
    return kw


class VllmSafetyModel:
    """dsa on vLLM. Args as `SafetyModel.load`; extra keyword arguments go to `vllm.LLM`."""

    def __init__(self, base: str = "smollm2-135m-instruct",
                 guards: Sequence[str] = (SHIPPED_GUARD,),
                 adapter: str | None = SHIPPED_ADAPTER, policy: str = "step",
                 policy_head: str | None = None, **llm_kwargs):
        with needs_extra("vllm", "vLLM integration (dsa.vllm)"):
            from vllm import LLM

        from dsa.base import resolve_base_path

        self.base_dir = resolve_base_path(base)
        self.llm = LLM(**engine_kwargs(self.base_dir, guards, adapter, policy, policy_head, **llm_kwargs))
        self.tokenizer = self.llm.get_tokenizer()

    def chat_ids(self, messages: Messages) -> list[int]:
        """The prompt's token ids as the HF runtime reads them (`SafetyModel.encode`): messages
        normalised (`dsa.normalise.prepare_messages`), the base's chat template with the generation
        prompt, special-token strings typed in a message tokenized as plain text (`encode_rendered`)."""
        from dsa.normalise import encode_rendered, prepare_messages

        messages = prepare_messages(messages, self.tokenizer)
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return encode_rendered(self.tokenizer, [text])[0]

    def generate(self, prompts: Sequence[Messages] | Sequence[list[int]],
                 alignment: str | float | Sequence[str | float] = "auto", max_new_tokens: int = 64,
                 temperature: float = 0.0, ignore_eos: bool = False, logprobs: int | None = None,
                 seed: int | None = None) -> list[VllmResult]:
        """Guarded generation. `prompts` are user strings, message lists, or token id lists.

        alignment: "auto" (λ = policy(guard score)) or a number (or one per prompt) that raises λ
            above the policy (the operator's floor; it cannot lower it).
        logprobs: return the top-`logprobs` values per generated token (raw logits when the engine
            was built with logprobs_mode="raw_logits").
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = list(prompts)
        align = list(alignment) if isinstance(alignment, list | tuple) else [alignment] * len(prompts)
        if len(align) != len(prompts):
            raise ValueError(f"got {len(align)} alignment values for {len(prompts)} prompts")
        from dsa.vllm.rows import parse_alignment

        align = [parse_alignment(a) for a in align]  # a bad value is the caller's error, before the engine
        ids = [p if isinstance(p, list) and (not p or isinstance(p[0], int)) else self.chat_ids(p)
               for p in prompts]
        keys = [uuid.uuid4().hex for _ in prompts]
        params = [SamplingParams(temperature=temperature, max_tokens=max_new_tokens, ignore_eos=ignore_eos,
                                 logprobs=logprobs, seed=None if seed is None else seed + i,
                                 extra_args={"dsa_alignment": a, "dsa_request_key": k})
                  for i, (a, k) in enumerate(zip(align, keys, strict=True))]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], params, use_tqdm=False)
        found = self.llm.collective_rpc("dsa_pop_results", args=(keys,))[0]
        results = []
        for o, k, x in zip(outs, keys, ids, strict=True):
            c = o.outputs[0]
            info = found.get(k) or {}
            lp = None
            if logprobs is not None and c.logprobs is not None:
                lp = [{t: float(v.logprob) for t, v in step.items()} for step in c.logprobs]
            results.append(VllmResult(c.text.strip(), info.get("guard_scores", {}), float(info.get("lam") or 0.0),
                                      _STOP.get(c.finish_reason, c.finish_reason or "length"), list(c.token_ids),
                                      list(x), lp))
        return results

    def close(self) -> None:
        """Stop the engine's processes."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
