"""Decode-side costs through `SafetyModel`: the streaming response guard per decoded token, a benign
(λ = 0) and a flagged (λ = 1) request against plain greedy generation, the benign request on the
server's path (the worker's prefill and decode steps), and the runtime's decode loop against Hugging
Face `model.generate`.

End of sequence is masked out of the logits, so every arm decodes exactly the requested tokens.
"""

from __future__ import annotations

import torch

from dsa.bench.timing import column, interleave, now, ratios, spread, synchronize
from dsa.bench.workloads import BENIGN, HARMFUL
from dsa.runtime import SafetyModel


def _eos_ids(sm: SafetyModel) -> list[int]:
    """The ids the runtime stops on (masked out so every arm decodes the same number of tokens)."""
    return sm._eos_ids(sm.base.device).tolist()


def generate_exact(sm: SafetyModel, messages: list, n_tokens: int, **kw) -> object:
    """prefill + `n_tokens` decode steps with end of sequence masked (greedy); returns the batch."""
    return decode_exact(sm, sm.prefill(messages, max_new_tokens=n_tokens, **kw))


def decode_exact(sm: SafetyModel, batch) -> object:
    """Decode steps until every row has written its budget, end of sequence masked; returns the batch."""
    eos = _eos_ids(sm)
    while not batch.finished:
        batch.logits[:, eos] = float("-inf")
        sm.decode_step(batch)
    return batch


def served_exact(sm: SafetyModel, prompt: str, n_tokens: int, alignment: str | float) -> object:
    """One chat request on the server's path: the worker's prefill (`dsa.serve.worker.prefill_chats`,
    what `ModelWorker` runs for admitted requests) and its decode steps, end of sequence masked."""
    from dsa.serve.worker import ChatJob, prefill_chats

    job = ChatJob([{"role": "user", "content": prompt}], alignment, 0.0, n_tokens, 0.0, None, [], lambda _: None)
    return decode_exact(sm, prefill_chats(sm, [job]))


def streaming_per_token(plain: SafetyModel, guarded: SafetyModel, lengths, window: int = 32,
                        prefill_context: bool = True) -> dict:
    """Per-token cost of the streaming response guard at transcripts of each length.

    The same conversation is decoded with and without the response guard in lockstep, alternating
    single steps (the order flips every step). With `prefill_context`, the transcript up to L − w
    tokens is a prefilled prompt and the last w = min(window, L/2) tokens are decoded (the guard's
    state is O(1) per token, so what changes with L is the KV length of the step); otherwise every
    token up to max(lengths) is decoded. Returns {str(L): ratio median [min, max] over those steps,
    ms per step of each arm, the context length reached}.
    """
    from dsa.bench.workloads import prompt_batch

    guarded.response_debounce = 10**9  # measure, never stop
    device = plain.base.device

    def lockstep(message, n):
        steps: dict[str, list[float]] = {"plain": [], "guarded": []}
        eos = _eos_ids(plain)
        batches = {"plain": plain.prefill([message], alignment=0, max_new_tokens=n),
                   "guarded": guarded.prefill([message], alignment=0, max_new_tokens=n)}
        models = {"plain": plain, "guarded": guarded}
        for i in range(n):
            for name in (("plain", "guarded") if i % 2 == 0 else ("guarded", "plain")):
                b = batches[name]
                b.logits[:, eos] = float("-inf")
                synchronize(device)
                t0 = now()
                models[name].decode_step(b)
                synchronize(device)
                steps[name].append(now() - t0)
        return steps, batches["plain"].mask.shape[1]

    out = {}
    with torch.inference_mode():
        if not prefill_context:
            steps, width = lockstep(BENIGN[0], max(lengths))
        for length in lengths:
            w = max(1, min(window, length // 2))
            if prefill_context:
                text = prompt_batch(plain.base, max(8, length - w), 1)[1][0]
                steps, width = lockstep(text, w + 1)
                sl = slice(0, w)  # the final step only picks a token
            else:
                sl = slice(length - w - 1, length - 1)
            p, g = steps["plain"][sl], steps["guarded"][sl]
            out[str(length)] = {"ratio": spread(ratios(g, p)), "plain_ms": spread([1000 * x for x in p], 3),
                                "guarded_ms": spread([1000 * x for x in g], 3), "steps": w,
                                "context_tokens": int(width) if prefill_context else None,
                                "prefilled": prefill_context}
    return out


def alignment_requests(plain: SafetyModel, full: SafetyModel, n_tokens: int, reps: int) -> dict:
    """Benign request (guards on, policy λ = 0) and flagged request (λ = 1) vs plain greedy generation
    through `SafetyModel.prefill`, and the benign request on the server's path (`served_exact`) vs
    plain decoding on that path; every arm interleaved in one run."""
    lam = {}
    full.response_debounce = 10**9  # the response guard scores every token but never stops a row: equal lengths
    benign = next((p for p in BENIGN if float(full.prefill([p], alignment="auto").lam[0]) == 0), BENIGN[0])
    prompts = {"benign": benign, "flagged": HARMFUL, "served_benign": benign}

    def guarded(name, run, **kw):
        def arm():
            lam[name] = float(run(full, **kw).lam[0])
        return arm

    arms = {"plain_benign": lambda: generate_exact(plain, [benign], n_tokens, alignment=0) and None,
            "benign": guarded("benign", generate_exact, messages=[benign], n_tokens=n_tokens, alignment="auto"),
            "plain_flagged": lambda: generate_exact(plain, [HARMFUL], n_tokens, alignment=0) and None,
            "flagged": guarded("flagged", generate_exact, messages=[HARMFUL], n_tokens=n_tokens, alignment="auto",
                               min_alignment=1.0),
            "plain_served_benign": lambda: served_exact(plain, benign, n_tokens, 0.0) and None,
            "served_benign": guarded("served_benign", served_exact, prompt=benign, n_tokens=n_tokens,
                                     alignment="auto")}
    with torch.inference_mode():
        runs = interleave(arms, reps, device=plain.base.device)
    out = {"skipped_benign": BENIGN[:BENIGN.index(benign)]}  # prompts the guard flagged (λ > 0)
    for name, prompt in prompts.items():
        r = spread(ratios(column(runs[name]), column(runs[f"plain_{name}"])))
        out[name] = {"ratio": r, "lambda": lam.get(name), "prompt": prompt, "tokens": n_tokens,
                     "seconds": spread(column(runs[name])), "plain_seconds": spread(column(runs[f"plain_{name}"]))}
    return out


def runtime_vs_generate(plain: SafetyModel, batches, n_tokens: int, reps: int) -> dict:
    """Tokens/s of the runtime's prefill + decode loop over `model.generate` on the same prompts."""
    tok, model = plain.base.tokenizer, plain.base.model
    out = {}
    for k, b in enumerate(batches):  # one untimed warm-up round, for the first batch size only
        msgs = [BENIGN[i % len(BENIGN)] for i in range(b)]
        enc = plain.encode(msgs)

        def hf(enc=enc):
            model.generate(**enc, max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False,
                           pad_token_id=tok.pad_token_id)

        arms = {"runtime": lambda msgs=msgs: generate_exact(plain, msgs, n_tokens, alignment=0) and None,
                "generate": hf}
        with torch.inference_mode():
            runs = interleave(arms, reps, warmup=int(k == 0), device=plain.base.device)
        rt, hf_t = column(runs["runtime"]), column(runs["generate"])
        out[str(b)] = {"ratio": spread(ratios(hf_t, rt)),  # tokens/s runtime ÷ tokens/s generate
                       "runtime_tok_s": spread([b * n_tokens / t for t in rt], 2),
                       "generate_tok_s": spread([b * n_tokens / t for t in hf_t], 2), "tokens": n_tokens}
    return out
