"""The dsa model as an lm-eval `LM`, registered as `dsa`.

    dsa eval lm-eval --model dsa --tasks dsa_ifeval,dsa_mmlu_cloze \\
        --model_args alignment=auto,guards=adapters/guards/prompt_safety,adapter=adapters/align/dsa_adapter
    dsa eval lm-eval --model dsa --model_args alignment=auto --tasks dsa_refusal --limit 8

(`dsa eval lm-eval ARGS` is lm-eval's own command line with this model registered and the
package's task folder on `--include_path`: lm-eval 0.4 has no plugin hook through which a plain
`lm_eval` could find a model defined outside it.) In Python, `DSALM(sm=safety_model, alignment=…)`
wraps a loaded `SafetyModel`; `dsa.eval.utility` runs its benchmarks through this class.

Requests:
  generate_until        `sm.generate` on the context as one chat-templated user message (greedy
                        unless the task samples), cut at the task's stop strings; λ per prompt as
                        `alignment` says ("auto": the guard policy of that prompt).
  loglikelihood         raw text, no chat template (lm-eval's default for scoring tasks); summed
                        log-probs of the continuation under `(1 − λ)·base + λ·aligned`, with the
                        λ that generation would pick for the context.
  loglikelihood_rolling whole-document log-likelihood in disjoint windows of `max_length`.

Every answer, score and λ is cached under `cache_dir/<config>-<fingerprint>/` (see
`dsa.eval.answer_cache`), so a rerun only computes what is missing.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from dsa.extras import needs_extra

with needs_extra("eval", "lm-eval integration (dsa.eval.lm_eval_model)"):
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from dsa.adapter_io import SHIPPED_ADAPTER, SHIPPED_GUARD
from dsa.eval.answer_cache import JsonCache, folder, key
from dsa.eval.scoring import check_alignment, prompt_lambdas, score_continuations

log = logging.getLogger(__name__)
TASKS_DIR = Path(__file__).parent / "tasks"
CHUNK = 64  # rows scored (or prompts answered) between cache flushes


@register_model("dsa")
class DSALM(LM):
    """lm-eval model over a `SafetyModel`.

    Args:
        sm: a loaded `SafetyModel`; if None, one is loaded from base/guards/adapter/policy.
        alignment: "auto" (λ from the guard policy per prompt) or a fixed λ in [0, 1].
        base, guards, adapter, policy: what to load when `sm` is None; several guard dirs are
            joined with '+' (model_args are comma-separated). Not given (None), they default to
            what the alignment needs of the shipped ones, where this checkout has them ("auto":
            `SHIPPED_GUARD` and `SHIPPED_ADAPTER`; λ > 0: the adapter), as `dsa eval utility`
            does; `guards=` / `adapter=` (empty) load none.
        config: a readable name for the cache folder (the fingerprint is appended).
        batch_size: prompts per generation batch / sequences per scoring batch.
        max_new_tokens: decode budget when a task gives no `max_gen_toks`.
        max_length: longest sequence scored (contexts are cut from the left).
        cache_dir: cache root; None or "" disables the cache.
        threads: torch CPU threads (default: leave as is).
    """

    def __init__(self, sm=None, alignment: str | float = "auto", base: str = "smollm2-135m-instruct",
                 guards: str | Sequence[str] | None = None, adapter: str | None = None, policy: str = "step",
                 config: str | None = None, batch_size: int | str | None = 8, max_new_tokens: int = 256,
                 max_length: int | None = None, cache_dir: str | None = "runs/utility",
                 threads: int | None = None, dtype: str = "auto", device: str | None = None,
                 progress: bool = True, **unused):
        super().__init__()
        if unused:
            log.info("dsa model ignores %s", sorted(unused))
        if threads:
            torch.set_num_threads(int(threads))
        if sm is None:
            from dsa.base import load_base
            from dsa.runtime import SafetyModel

            guards, adapter = _shipped_defaults(alignment, guards, adapter)
            guard_dirs = [g for g in (guards.split("+") if isinstance(guards, str) else guards or []) if g]
            if device and device.startswith("cuda") and not torch.cuda.is_available():
                device = None  # lm-eval's --device defaults to cuda
            b = load_base(base, dtype=dtype, device=device or "cpu")
            sm = SafetyModel.load(b, guards=guard_dirs, adapter=adapter or None, policy=policy)
            config = config or _default_config(alignment, guard_dirs, adapter, policy)
        self.sm = sm
        self.alignment = check_alignment(sm, alignment)
        self.config = config or f"custom_{self.alignment}"
        self.batch_size = int(batch_size) if str(batch_size).isdigit() and int(batch_size) > 0 else 8
        self.max_new_tokens = int(max_new_tokens)
        self.max_length = int(max_length or min(getattr(sm.base.model.config, "max_position_embeddings", 2048), 2048))
        self.progress = progress
        self._folder = folder(cache_dir, self.config, sm) if cache_dir else None
        self._caches: dict[str, JsonCache] = {}
        tok = sm.base.tokenizer
        prefix = getattr(tok, "bos_token_id", None)
        self.prefix_token_id = prefix if prefix is not None else tok.eos_token_id

    # ---- caches -------------------------------------------------------------------------------
    def cache(self, kind: str) -> JsonCache:
        """The cache file `<folder>/<kind>-<alignment>.json` (in memory when caching is off)."""
        name = f"{kind}-{self.alignment}"
        if name not in self._caches:
            self._caches[name] = JsonCache(self._folder / f"{name}.json" if self._folder else None)
        return self._caches[name]

    @property
    def cache_folder(self) -> Path | None:
        return self._folder

    # ---- λ --------------------------------------------------------------------------------------
    def lambdas(self, prompts: Sequence[str]) -> list[float]:
        """λ per prompt: the fixed alignment, or what the guard policy picks for it ("auto")."""
        if self.alignment != "auto":
            return [float(self.alignment)] * len(prompts)
        cache = self.cache("lambda")
        todo = sorted({p for p in prompts if key(p) not in cache}, key=len)
        for i in range(0, len(todo), CHUNK):
            chunk = todo[i:i + CHUNK]
            for p, lam in zip(chunk, prompt_lambdas(self.sm, chunk, "auto", self.batch_size), strict=True):
                cache.put(key(p), lam)
            cache.flush()
        return [float(cache.get(key(p))) for p in prompts]

    # ---- generation -----------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], max_new_tokens: int | None = None, temperature: float = 0.0,
                 desc: str = "generate") -> list[dict]:
        """Answers (cached): one dict per prompt with text, lam, stop_reason, n_tokens, seconds
        (generation time of its batch divided by the batch size; 0 when read from the cache)."""
        n_new = int(max_new_tokens or self.max_new_tokens)
        cache = self.cache(f"generate-{n_new}-t{temperature:g}")
        todo = sorted({p for p in prompts if key(p) not in cache}, key=len)
        bar = tqdm(total=len(todo), desc=desc, disable=not (self.progress and todo))
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            t0 = time.perf_counter()
            rows = f"rows {i + 1}-{i + len(chunk)}"

            def step_shown(step: int, rows: str = rows) -> None:  # a batch of long prompts can take minutes
                bar.set_postfix_str(f"{rows}, token {step}/{n_new}")

            res = self.sm.generate(chunk, alignment=self.alignment, max_new_tokens=n_new, temperature=temperature,
                                   seed=0 if temperature > 0 else None, on_step=step_shown)
            dt = (time.perf_counter() - t0) / len(chunk)
            for p, r in zip(chunk, res, strict=True):
                cache.put(key(p), {"text": r.text, "lam": r.lam, "stop_reason": r.stop_reason,
                                   "n_tokens": r.n_tokens, "seconds": dt})
            cache.flush()
            bar.update(len(chunk))
        bar.close()
        return [dict(cache.get(key(p))) for p in prompts]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            _, kw = req.args
            kw = dict(kw or {})
            until = kw.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            temp = float(kw.get("temperature", 0.0) or 0.0) if kw.get("do_sample") else 0.0
            n_new = int(kw.get("max_gen_toks") or self.max_new_tokens)
            groups.setdefault((tuple(until), n_new, temp), []).append(i)
        out: list[str] = [""] * len(requests)
        for (until, n_new, temp), idx in groups.items():
            answers = self.generate([requests[i].args[0] for i in idx], n_new, temp)
            for i, a in zip(idx, answers, strict=True):
                out[i] = _cut(a["text"], until)
        return out

    # ---- log-likelihood -------------------------------------------------------------------------
    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of context and continuation as lm-eval's HF model splits them: trailing
        spaces of the context move to the continuation, the pair is tokenized whole, and an empty
        context becomes the BOS/EOS prefix token."""
        tok = self.sm.base.tokenizer

        def ids(s: str) -> list[int]:
            return list(tok(s, add_special_tokens=False)["input_ids"])

        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        if not context:
            ctx, cont = [self.prefix_token_id], ids(continuation)
        else:
            whole, ctx = ids(context + continuation), ids(context)
            cont = whole[len(ctx):] if whole[:len(ctx)] == ctx else ids(continuation)
        if not cont:
            raise ValueError(f"empty continuation after tokenization: {continuation!r}")
        cont = cont[-self.max_length:]
        return ctx[-max(1, self.max_length - len(cont)):], cont

    def score(self, pairs: Sequence[tuple[str, str]], desc: str = "loglik") -> list[tuple[float, bool]]:
        """(sum log p(continuation | context), is greedy) per pair, cached."""
        cache = self.cache("loglik")
        keys = [key(c, x) for c, x in pairs]
        todo = list({k: i for i, k in enumerate(keys) if k not in cache}.values())
        lams = self.lambdas([pairs[i][0] for i in todo]) if todo else []
        bar = tqdm(total=len(todo), desc=desc, disable=not (self.progress and todo))
        for s in range(0, len(todo), CHUNK):
            idx = todo[s:s + CHUNK]
            rows = [self.encode_pair(*pairs[i]) for i in idx]
            for i, lam, r in zip(idx, lams[s:s + CHUNK],
                                 score_continuations(self.sm, rows, lams[s:s + CHUNK], self.batch_size), strict=True):
                cache.put(keys[i], [r[0], r[1], lam])
            cache.flush()
            bar.update(len(idx))
        bar.close()
        return [(float(cache.get(k)[0]), bool(cache.get(k)[1])) for k in keys]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self.score([tuple(req.args) for req in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        tok = self.sm.base.tokenizer
        out = []
        for req in tqdm(requests, desc="rolling loglik", disable=disable_tqdm or not self.progress):
            (text,) = req.args[:1]
            ids = list(tok(text, add_special_tokens=False)["input_ids"])
            windows = [make_disjoint_window(w) for w in
                       get_rolling_token_windows(ids, self.prefix_token_id, self.max_length, 1)]
            lam = self.lambdas([text]) * len(windows)
            out.append(sum(r[0] for r in score_continuations(self.sm, windows, lam, self.batch_size)))
        return out

    def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
        raise NotImplementedError("the dsa model chat-templates generation prompts itself (as a chat "
                                  "model serves them); run without --apply_chat_template")


def _cut(text: str, until: Sequence[str]) -> str:
    """Text up to the first stop string (lm-eval's `until`)."""
    cuts = [text.find(s) for s in until if s and s in text]
    return text[:min(cuts)] if cuts else text


def _shipped_defaults(alignment, guards, adapter) -> tuple:
    """(guards, adapter) with the shipped guard and adapter filled in where not given (None) and
    the alignment needs them: "auto" reads a guard and an adapter, a λ > 0 an adapter."""
    auto = alignment == "auto"
    try:
        aligned = auto or float(alignment) > 0
    except (TypeError, ValueError):
        aligned = False  # check_alignment reports the bad value
    if guards is None and auto and Path(SHIPPED_GUARD).is_dir():
        guards = SHIPPED_GUARD
        log.info("dsa model: guards=%s (the shipped prompt guard; guards= for none)", guards)
    if adapter is None and aligned and Path(SHIPPED_ADAPTER).is_dir():
        adapter = SHIPPED_ADAPTER
        log.info("dsa model: adapter=%s (the shipped alignment adapter; adapter= for none)", adapter)
    return guards, adapter


def _default_config(alignment, guards: list[str], adapter: str | None, policy: str) -> str:
    parts = [f"a{alignment}"]
    if adapter:
        parts.append(Path(adapter).name)
    if guards:
        parts += ["+".join(Path(g).name for g in guards), policy]
    return "_".join(parts)


def run_cli(argv: Sequence[str]) -> None:
    """lm-eval's command line with the `dsa` model registered and this package's task folder
    added to `--include_path`."""
    from lm_eval.__main__ import cli_evaluate

    argv = list(argv)
    if "--include_path" not in argv and not any(a.startswith("--include_path=") for a in argv):
        argv += ["--include_path", str(TASKS_DIR)]
    if not argv or argv[0] not in ("run", "ls", "validate"):
        argv = ["run", *argv]
    old = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = old


if __name__ == "__main__":
    run_cli(sys.argv[1:])
