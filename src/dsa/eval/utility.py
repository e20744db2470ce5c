"""Judge-free utility of a `SafetyModel` configuration: IFEval and MMLU cloze.

    from dsa.eval.utility import ifeval, mmlu_cloze
    ifeval(sm, alignment="auto", n=40, config="context_dependent@step")
    # {"prompt_strict": …, "inst_strict": …, "prompt_loose": …, "inst_loose": …, "n_prompts": 40, …}
    mmlu_cloze(sm, alignment=0.5, n=1000, config="dsa_adapter@0.5")   # {"acc": …, "acc_norm": …, "n": 1000, …}

Both run through the lm-eval model class (`dsa.eval.lm_eval_model.DSALM`: same generation,
scoring, λ and cache as `dsa eval lm-eval --tasks dsa_ifeval,dsa_mmlu_cloze`) and the document and
scoring functions of `dsa.eval.benchmarks` (lm-eval's own IFEval checkers). Answers and scores are
cached under `cache_dir/<config>-<fingerprint>/`; pass a distinct `config` per configuration
whose weights the fingerprint cannot see (an in-place LoRA patch's strength).
"""

from __future__ import annotations

import time

from dsa.eval.benchmarks import (
    cloze_metrics,
    cloze_requests,
    ifeval_check,
    ifeval_docs,
    ifeval_metrics,
    mmlu_docs,
)

IFEVAL_MAX_NEW_TOKENS = 256


def _lm(sm, alignment, config, batch_size, max_new_tokens, cache_dir, progress):
    from dsa.eval.lm_eval_model import DSALM

    return DSALM(sm=sm, alignment=alignment, config=config, batch_size=batch_size, max_new_tokens=max_new_tokens,
                 cache_dir=cache_dir, progress=progress)


def _lambda_summary(lams: list[float]) -> dict:
    return {"mean_lambda": sum(lams) / len(lams), "share_aligned": sum(x > 0 for x in lams) / len(lams)}


def ifeval(sm, alignment: str | float = "auto", n: int | None = None,
           max_new_tokens: int = IFEVAL_MAX_NEW_TOKENS, batch_size: int = 8, config: str | None = None,
           cache_dir: str | None = "runs/utility", answers: bool = False, progress: bool = True) -> dict:
    """IFEval prompt- and instruction-level accuracy (strict and loose) of greedy answers.

    Args:
        sm: a `dsa.runtime.SafetyModel`.
        alignment: "auto" (λ per prompt from the guard policy) or a fixed λ.
        n: the first n prompts in sha256 order (None = all 541).
        max_new_tokens: decode budget per answer (answers cut there are scored as they are;
            `share_length_stopped` says how many were).
        config: cache name of this configuration (default: derived from alignment).
        answers: also return per-prompt answers and verdicts under "answers".
    Returns:
        prompt_strict, inst_strict, prompt_loose, inst_loose, n_prompts, n_instructions,
        max_new_tokens, share_length_stopped, mean_lambda, share_aligned, seconds (this call),
        seconds_per_prompt (generation time per prompt, cached answers included).
    """
    t0 = time.perf_counter()
    docs = ifeval_docs(n)
    lm = _lm(sm, alignment, config, batch_size, max_new_tokens, cache_dir, progress)
    gens = lm.generate([d["prompt"] for d in docs], max_new_tokens, desc="ifeval")
    checks = [ifeval_check(d, g["text"]) for d, g in zip(docs, gens, strict=True)]
    out = ifeval_metrics(checks)
    out.update(max_new_tokens=max_new_tokens, alignment=lm.alignment,
               share_length_stopped=sum(g["stop_reason"] == "length" for g in gens) / len(gens),
               mean_answer_tokens=sum(g["n_tokens"] for g in gens) / len(gens),
               **_lambda_summary([g["lam"] for g in gens]),
               seconds=time.perf_counter() - t0,
               seconds_per_prompt=sum(g["seconds"] for g in gens) / len(gens),
               cache=str(lm.cache_folder) if lm.cache_folder else None)
    if answers:
        out["answers"] = [{"key": d["key"], "prompt": d["prompt"], "response": g["text"], "lam": g["lam"],
                           "stop_reason": g["stop_reason"], **c} for d, g, c in zip(docs, gens, checks, strict=True)]
    return out


def mmlu_cloze(sm, alignment: str | float = "auto", n: int | None = 1000, batch_size: int = 8,
               config: str | None = None, cache_dir: str | None = "runs/utility", seed: int = 0,
               progress: bool = True) -> dict:
    """Zero-shot MMLU accuracy by choice-text log-likelihood ("Question: …\\nAnswer:" + " choice").

    Args:
        n: the first n test questions in sha256 order (seed 0: the `dsa align eval` MMLU subset).
        alignment: "auto" (λ per question from the guard policy on the chat-templated cloze
            context, as generation would pick it) or a fixed λ.
    Returns:
        acc (summed log-likelihood), acc_norm (per character of the choice), n, mean_lambda,
        share_aligned, seconds, seconds_per_question.
    """
    t0 = time.perf_counter()
    docs = mmlu_docs(n, seed)
    lm = _lm(sm, alignment, config, batch_size, IFEVAL_MAX_NEW_TOKENS, cache_dir, progress)
    pairs = [p for d in docs for p in cloze_requests(d)]
    lls = lm.score(pairs, desc="mmlu cloze")
    lams = lm.lambdas([d_pairs[0][0] for d_pairs in map(cloze_requests, docs)])
    per_doc, k = [], 0
    for d in docs:
        m = len(d["choices"])
        per_doc.append(cloze_metrics(d, [ll for ll, _ in lls[k:k + m]]))
        k += m
    dt = time.perf_counter() - t0
    return {"acc": sum(x["acc"] for x in per_doc) / len(docs),
            "acc_norm": sum(x["acc_norm"] for x in per_doc) / len(docs),
            "n": len(docs), "alignment": lm.alignment,
            "subset": f"first {len(docs)} of mmlu/test by sha256(id), seed {seed}",
            "format": "cloze: 'Question: {q}\\nAnswer:' + ' {choice}', zero-shot, no chat template",
            **_lambda_summary(lams), "seconds": dt, "seconds_per_question": dt / len(docs),
            "cache": str(lm.cache_folder) if lm.cache_folder else None}
