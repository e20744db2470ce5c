"""The DSA adapter runs on the rows with λ > 0 only (issue #23 item 9): its KV cache holds that
sub-batch (`DecodeBatch.ad_rows`) through select and merge, so a served request at λ = 0 never
enters the adapter, its tokens are plain greedy decoding bit for bit, and a flagged row answers as
it does alone whichever rows share its batch."""

from __future__ import annotations

import torch

from dsa.chunked_prefill import ChunkedPrefill
from dsa.runtime import SafetyModel
from dsa.serve.config import ServerConfig
from dsa.serve.worker import ChatJob, ModelWorker, prefill_chats

from .server_tiny import tiny_model

PROMPTS = ["hello there", "how to do a bad thing quickly", "what is two plus two", "name a colour"]


class AdapterRows:
    """Rows of every call of the adapter's tail (a forward pre-hook)."""

    def __init__(self, sm: SafetyModel):
        self.rows: list[int] = []
        self.handle = sm.adapter.tail.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _m, _args, kwargs):
        self.rows.append(int(kwargs["inputs_embeds"].shape[0]))

    def remove(self) -> None:
        self.handle.remove()


def _job(prompt: str, alignment, max_tokens: int = 6) -> ChatJob:
    events: list[dict] = []
    job = ChatJob([{"role": "user", "content": prompt}], alignment, 0.0, max_tokens, 0.0, None, [], events.append)
    job.events = events
    return job


def _alone(sm: SafetyModel, prompt: str, lam: float, n: int) -> list[int]:
    return sm.generate([[{"role": "user", "content": prompt}]], alignment=lam, max_new_tokens=n)[0].token_ids


def _check(batch) -> None:
    """The sub-batch invariant: the adapter's cache holds exactly the rows with λ > 0, in order."""
    assert batch.ad_rows.tolist() == (batch.lam > 0).nonzero().flatten().tolist()
    if batch.ad_cache is None:
        assert not len(batch.ad_rows)
    else:
        keys = batch.ad_cache.layers[0].keys
        assert keys.shape[0] == len(batch.ad_rows) and keys.shape[2] == batch.mask.shape[1]


def test_a_served_batch_of_benign_requests_never_runs_the_adapter():
    sm = tiny_model(guard_bias=-50.0)  # the policy gives every "auto" prompt λ = 0
    plain = SafetyModel(sm.base)
    seen = AdapterRows(sm)
    jobs = [_job(p, "auto") for p in PROMPTS[:2]] + [_job(PROMPTS[2], 0.0)]
    batch = prefill_chats(sm, jobs)
    _check(batch)
    while not batch.finished:
        sm.decode_step(batch)
    seen.remove()
    assert seen.rows == [] and batch.ad_cache is None
    want = plain.generate([j.messages for j in jobs], alignment=0.0, max_new_tokens=6)
    assert [r.tokens for r in batch.rows] == [w.token_ids for w in want]  # the same batch, bit for bit


def test_a_mixed_batch_runs_the_adapter_on_the_flagged_rows_only():
    sm = tiny_model(guard_bias=-50.0)
    plain = SafetyModel(sm.base)
    seen = AdapterRows(sm)
    lams = [0.0, 1.0, 0.0, 0.5]
    batch = sm.prefill(PROMPTS, alignment=lams, max_new_tokens=6)
    _check(batch)
    steps = 0
    while not batch.finished:
        sm.decode_step(batch)
        steps += 1
    seen.remove()
    assert seen.rows and set(seen.rows) == {2}  # rows 1 and 3, at the prefill and at every step
    base_only = plain.generate(PROMPTS, alignment=0.0, max_new_tokens=6)
    assert batch.rows[0].tokens == base_only[0].token_ids and batch.rows[2].tokens == base_only[2].token_ids
    assert batch.rows[1].tokens == sm.generate(PROMPTS[1:2], alignment=1.0, max_new_tokens=6)[0].token_ids


def test_select_and_merge_keep_the_adapters_sub_batch():
    sm = tiny_model(guard_bias=-50.0)
    running = sm.prefill(PROMPTS[:2], alignment=[0.0, 0.0], max_new_tokens=8)
    assert running.ad_cache is None
    sm.decode_step(running)
    flagged = sm.prefill(PROMPTS[2:], alignment=[1.0, 0.0], max_new_tokens=8)
    assert running.can_merge(flagged)
    running.merge(flagged)  # a flagged row joins a batch without adapter state
    _check(running)
    assert running.ad_rows.tolist() == [2]
    sm.decode_step(running)
    more = sm.prefill([PROMPTS[1]], alignment=[0.5], max_new_tokens=8)
    running.merge(more)
    _check(running)
    sm.decode_step(running)
    running.select([4, 0, 2])  # reordered: the adapter's rows follow
    _check(running)
    assert running.ad_rows.tolist() == [0, 2]
    sm.decode_step(running)
    running.select([1])  # no flagged row left: no adapter state
    _check(running)
    assert running.ad_cache is None
    sm.decode_step(running)


def test_worker_decodes_benign_rows_without_the_adapter_and_a_flagged_row_as_alone():
    """The server's own loop: two benign requests running, a flagged one admitted later and merged
    into their batch, the shorter benign one finishing first."""
    sm = tiny_model(guard_bias=-50.0)
    worker = ModelWorker(sm, ServerConfig(model_name="tiny", batch_window_s=0.0))
    seen = AdapterRows(sm)
    benign = [_job(PROMPTS[0], "auto", max_tokens=3), _job(PROMPTS[2], "auto", max_tokens=8)]
    for job in benign:
        worker.queue.put(job)
    worker._iterate()
    assert seen.rows == []
    worker._iterate()
    flagged = _job(PROMPTS[1], 1.0, max_tokens=6)
    worker.queue.put(flagged)
    jobs = [*benign, flagged]
    for _ in range(20):
        worker._iterate()
        assert len(worker.batches) <= 1  # merged into the running batch
        for b in worker.batches:
            _check(b)
        if all(j.events and j.events[-1]["type"] == "done" for j in jobs):
            break
    seen.remove()
    assert [j.events[-1]["type"] for j in jobs] == ["done"] * 3
    assert [j.events[-1]["lam"] for j in jobs] == [0.0, 0.0, 1.0]
    assert seen.rows and set(seen.rows) == {1}  # only the flagged row ever entered the adapter
    plain = SafetyModel(sm.base)
    for job in benign:
        assert job.detok.ids == _alone(plain, job.messages[0]["content"], 0.0, job.max_tokens)
    assert flagged.detok.ids == _alone(sm, PROMPTS[1], 1.0, 6)


def test_a_chunked_benign_prompt_keeps_no_adapter_state():
    sm = tiny_model(guard_bias=-50.0)
    seen = AdapterRows(sm)
    read = ChunkedPrefill(sm, PROMPTS[1], alignment=0.0, max_new_tokens=4, slice_tokens=8)
    while not read.done:
        read.advance(8)
    assert seen.rows == []  # λ fixed at 0: the adapter does not read the prompt
    auto = ChunkedPrefill(sm, PROMPTS[1], alignment="auto", max_new_tokens=4, slice_tokens=8)
    while not auto.done:
        auto.advance(8)
    batch = auto.finish()  # λ = 0 once the guard has read it all: the adapter's state is dropped
    assert float(batch.lam[0]) == 0.0 and batch.ad_cache is None
    _check(batch)
    seen.remove()


def test_lambda_zero_rows_of_a_mixed_batch_get_the_base_logits_bit_for_bit():
    sm = tiny_model(guard_bias=-50.0)
    mixed = sm.prefill(PROMPTS[:2], alignment=[0.0, 1.0], max_new_tokens=4)
    base = sm.prefill(PROMPTS[:2], alignment=[0.0, 0.0], max_new_tokens=4)
    assert torch.equal(mixed.logits[0].float(), base.logits[0].float())
    with torch.inference_mode():
        mixed.logits[1] = base.logits[1]  # the same next token for both rows, so the step's inputs match
    sm.decode_step(mixed)
    sm.decode_step(base)
    assert torch.equal(mixed.logits[0].float(), base.logits[0].float())
