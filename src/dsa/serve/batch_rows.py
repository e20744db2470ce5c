"""A decode batch's rows as requests: the one prefill of admitted chat jobs (`prefill_chats`) and,
after every decode step, each row's new text handed to its job's sink (`deliver`)."""

from __future__ import annotations

from dsa.decoding import DecodeBatch
from dsa.serve.jobs import FINISH_REASON, ChatJob


def prefill_chats(sm, chats: list[ChatJob]) -> DecodeBatch:
    """The one prefill of newly admitted requests, as the worker runs it: each row its own λ rule,
    budget and sampler, ready to merge into a running batch (the DSA adapter runs on the rows with
    λ > 0 only, here and at every decode step). `dsa bench` times this path."""
    return sm.prefill([j.messages for j in chats], alignment=[j.alignment for j in chats],
                      max_new_tokens=[j.max_tokens for j in chats], temperature=[j.temperature for j in chats],
                      seed=[j.seed for j in chats], min_alignment=[j.min_alignment for j in chats], tags=chats)


def deliver(batch: DecodeBatch) -> None:
    """Hand each row's new text to its request (cut at its stop strings); finished rows get their
    final event and leave the batch."""
    done = []
    for i, row in enumerate(batch.rows):
        job: ChatJob = row.tag
        if row.new:
            text, hit = job.stopper.push(job.detok.push(row.new))
            if text:
                job.sink({"type": "delta", "text": text})
            if hit:
                batch.finish(i, "stop_sequence")
        if row.stop is not None:
            if row.stop != "stop_sequence" and (tail := job.stopper.flush()):
                job.sink({"type": "delta", "text": tail})
            job.sink({"type": "done", "finish_reason": FINISH_REASON.get(row.stop, "stop"),
                      "stop_reason": row.stop, "completion_tokens": len(row.tokens),
                      "lam": float(batch.lam[i]), "guard_scores": batch.guard_scores(i),
                      "response_scores": dict(row.response)})
            done.append(i)
    if done:
        batch.select([i for i in range(len(batch)) if i not in done])
