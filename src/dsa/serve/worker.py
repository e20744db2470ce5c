"""The model worker: one thread owns the model and serves every request, decoding them together.

Requests reach it through a bounded queue (`JobQueue`; full → 429). Each loop iteration the
worker (1) reads at most `max_prefill_tokens` of prompts (tokens at an empty context: a token late
in a long prompt counts more, `dsa.chunked_prefill.read_cost`): new short prompts prefilled
together and merged into the running batch (dynamic batching: rows of several requests share each
decode step, each with its own λ, budget and sampler), then the next slice of the long prompts and
moderation requests being read in chunks (`dsa.chunked_prefill`; a long prompt joins the batch once
all of it is read), (2) drops rows whose client went away, (3) runs one decode step and hands each
row's new text to its request through a thread-safe sink. So no admitted request holds the running
rows for more than one slice. No lock is held across network I/O: handlers only ever wait on their
own event queue. The jobs and their queue are `dsa.serve.jobs`; a batch's rows as requests (their
prefill, the hand-off of new text) `dsa.serve.batch_rows`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import torch

from dsa.chunked_prefill import (
    ChunkedClassify,
    ChunkedPrefill,
    chunk_blocker,
    read_cost,
)
from dsa.decoding import DecodeBatch, IncrementalDetokenizer
from dsa.serve.batch_rows import deliver, prefill_chats
from dsa.serve.config import ServerConfig
from dsa.serve.jobs import (
    FINISH_REASON,
    ChatJob,
    JobQueue,
    ModerationJob,
    QueueFull,
    Sink,
    Unavailable,
    error_event,
)
from dsa.serve.stop_strings import StopMatcher
from dsa.taps import hook_count

__all__ = ["FINISH_REASON", "ChatJob", "JobQueue", "ModelWorker", "ModerationJob", "QueueFull", "Reading", "Sink",
           "StopMatcher", "Unavailable", "prefill_chats"]
log = logging.getLogger(__name__)


@dataclass(eq=False)
class Reading:
    """A request read in chunks across iterations: a long chat prompt (`ChunkedPrefill`) or a
    moderation request (`ChunkedClassify`)."""

    job: ChatJob | ModerationJob
    task: ChunkedPrefill | ChunkedClassify


# moderation requests being read at once (more wait in the queue, which stays bounded)
MAX_MODERATIONS_READING = 4


class ModelWorker:
    """Owns the `SafetyModel`; see the module docstring."""

    def __init__(self, sm, config: ServerConfig):
        self.sm, self.config = sm, config
        self.queue = JobQueue(config.max_queue)
        self.batches: list[DecodeBatch] = []
        self.reading: deque[Reading] = deque()  # oldest first
        self.chunked = chunk_blocker(sm) is None  # else long prompts are prefilled whole
        self.draining = False
        self.error: str | None = None
        self.steps = 0
        self.prefill_errors = 0  # batched prefills that failed and were retried one request at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._live: set = set()  # jobs submitted whose client still waits for their final event
        self._live_lock = threading.Lock()
        self._deadline: threading.Timer | None = None
        self.baseline_hooks = hook_count(sm.base.model)

    # ---- control (called from the event loop) -------------------------------------------------
    def start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="dsa-model-worker", daemon=True)
                self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    @property
    def ready(self) -> bool:
        return self.alive and not self.draining and not self._stop.is_set() and self.error is None

    def submit(self, job) -> None:
        if not self.ready:
            raise Unavailable("the server is shutting down" if self.draining or self._stop.is_set()
                              else f"the model worker stopped: {self.error}")
        self.start()
        self._track(job)
        try:
            self.queue.put(job)
        except QueueFull:
            self._forget(job)
            raise

    def drain(self, within: float | None = None) -> None:
        """Refuse new work; finish what is queued or running, or after `within` seconds end it
        with an error event (so streams still close cleanly before the server exits). The
        deadline is a timer of its own: a worker stuck in a long prefill cannot delay it."""
        self.draining = True
        if within is not None and self._deadline is None:
            self._deadline = threading.Timer(within, self._expire)
            self._deadline.daemon = True
            self._deadline.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Drain for up to `timeout` seconds, then fail whatever is left and end the thread (a
        step in progress finishes first; the thread is a daemon, so the process never waits on it
        for more than `timeout` + 1 s)."""
        self.drain()
        if self._deadline is not None:
            self._deadline.cancel()
        deadline = time.monotonic() + timeout
        while (self._thread is not None and (self.active_rows() or len(self.queue) or self.reading)
               and time.monotonic() < deadline):
            time.sleep(0.05)
        self._stop.set()
        self.queue.wake()
        if self._thread is not None:
            self._thread.join(1.0)

    def queued(self) -> int:
        return len(self.queue)

    def in_flight(self) -> int:
        """Requests whose client still waits for an answer (queued, being prefilled or decoding)."""
        with self._live_lock:
            self._live = {j for j in self._live if not j.cancelled.is_set()}
            return len(self._live)

    def active_rows(self) -> int:
        return sum(len(b) for b in self.batches)

    def extra_hooks(self) -> int:
        return hook_count(self.sm.base.model) - self.baseline_hooks

    def health(self) -> dict:
        """Engine-specific /health fields."""
        return {"prefill_errors": self.prefill_errors, "reading": len(self.reading)}

    # ---- every request's final event -----------------------------------------------------------
    def _track(self, job) -> None:
        """Route the job's events through `_live`: its first final event (done, error, moderation)
        is its last, whichever thread sends it (the worker, or the drain deadline's timer)."""
        sink = job.sink

        def put(event: dict) -> None:
            with self._live_lock:
                if job not in self._live:
                    return  # already answered, or its client left
                if event["type"] != "delta":
                    self._live.discard(job)
                sink(event)  # only schedules the event on the client's loop: never blocks

        job.sink = put
        with self._live_lock:
            self._live = {j for j in self._live if not j.cancelled.is_set()}
            self._live.add(job)

    def _forget(self, job) -> None:
        with self._live_lock:
            self._live.discard(job)

    def _expire(self) -> None:
        """The drain deadline: every request still waiting gets a 503 now (a stream: an error
        event and [DONE]); their rows leave the batch at the worker's next step."""
        with self._live_lock:
            jobs = list(self._live)
        for job in jobs:
            # before `cancelled`: a cancelled job is no longer live
            job.sink(error_event(503, "the server is shutting down"))
            job.cancelled.set()

    # ---- the loop (worker thread) -------------------------------------------------------------
    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while not self._stop.is_set():
                    self._iterate()
        except BaseException as err:  # the loop itself failed: say so on /health, fail the waiters
            log.exception("model worker crashed")
            self.error = f"{type(err).__name__}: {err}"
        finally:
            self._fail_all(503, "the server is shutting down" if self.error is None else "the model worker stopped")

    def _iterate(self) -> None:
        self.reading = deque(r for r in self.reading if not r.job.cancelled.is_set())  # their clients left
        idle = not self.batches and not self.reading
        capacity = self.config.max_batch - self.active_rows() - self._reading_rows()
        moderations = MAX_MODERATIONS_READING - sum(isinstance(r.job, ModerationJob) for r in self.reading)
        jobs = self.queue.take(capacity, timeout=0.5 if idle else 0.0, max_moderations=moderations)
        n_chats = sum(isinstance(j, ChatJob) for j in jobs)
        if idle and n_chats and self.config.batch_window_s > 0 and n_chats < capacity:
            time.sleep(self.config.batch_window_s)  # let a burst of requests share one prefill
            jobs += self.queue.take(capacity - n_chats, 0.0, max_moderations=0)
        budget = self.config.max_prefill_tokens
        short = []
        for job in jobs:
            if job.cancelled.is_set():
                continue
            if isinstance(job, ChatJob) and not (self.chunked and self._cost([job]) > budget // 2):
                short.append(job)
            else:
                self._start_reading(job)
        # short prompts are prefilled whole, together: within half the budget while long ones are
        # being read (so neither starves), else within all of it; the rest wait in the queue
        limit = budget // 2 if self.reading else budget
        admit = []
        while short and (not admit or self._cost([*admit, short[0]]) <= limit):
            admit.append(short.pop(0))
        if short:
            self.queue.put_front(short)
        if admit:
            self._admit(admit)
            budget -= self._cost(admit)
        # what is left of the budget reads the long prompts and moderations, oldest first
        first = True  # the first slice always reads something, so no long read waits for ever
        while budget > 0 and self.reading:
            used = self._read(self.reading[0], budget, first)
            budget, first = budget - used, False
            if not used:
                break
        for batch in self.batches:
            self._step(batch)
        self.batches = [b for b in self.batches if len(b)]

    def _cost(self, chats: list[ChatJob]) -> int:
        """The budget one prefill of these prompts takes: rows × the longest (they are padded to it)."""
        return len(chats) * read_cost(max(j.prompt_tokens for j in chats), 0, self.config.prefill_attention_span)

    def _reading_rows(self) -> int:
        return sum(isinstance(r.job, ChatJob) for r in self.reading)

    def _start_reading(self, job) -> None:
        """Queue a long chat prompt or a moderation request to be read in slices."""
        slice_tokens = max(1, self.config.max_prefill_tokens // 2)
        try:
            if isinstance(job, ModerationJob):
                task = ChunkedClassify(self.sm, job.inputs, slice_tokens, self.config.prefill_attention_span)
            else:
                task = ChunkedPrefill(self.sm, job.messages, alignment=job.alignment, max_new_tokens=job.max_tokens,
                                      temperature=job.temperature, seed=job.seed, min_alignment=job.min_alignment,
                                      tag=job, slice_tokens=slice_tokens, span=self.config.prefill_attention_span)
        except ValueError as err:
            job.sink(error_event(400, str(err)))
            return
        self.reading.append(Reading(job, task))

    def _read(self, reading: Reading, budget: int, at_least_one: bool) -> int:
        """The next slice of the oldest request being read; once all of it is read, a chat row
        joins the batch and a moderation is answered. Returns the tokens read."""
        job, task = reading.job, reading.task
        try:
            used = task.advance(budget, at_least_one)
            if task.done:
                self.reading.popleft()
                if isinstance(job, ModerationJob):
                    job.sink({"type": "moderation", "results": task.results})
                else:
                    self._join([job], task.finish())
            return used
        except Exception as err:
            self.reading.popleft()
            if not isinstance(err, ValueError):
                log.exception("reading a %s failed", type(job).__name__)
            job.sink(error_event(400, str(err)) if isinstance(err, ValueError)
                     else error_event(500, f"internal error: {type(err).__name__}"))
            return budget

    def _admit(self, chats: list[ChatJob]) -> None:
        try:
            batch = prefill_chats(self.sm, chats)
        except Exception as err:
            if len(chats) > 1:  # isolate the request that failed; the others still run (counted: not silent)
                self.prefill_errors += 1
                log.warning("a batched prefill of %d requests failed (%s: %s); admitting them one at a time",
                            len(chats), type(err).__name__, err)
                for job in chats:
                    self._admit([job])
                return
            if not isinstance(err, ValueError):
                log.exception("prefill failed")
            chats[0].sink(error_event(400, str(err)) if isinstance(err, ValueError)
                          else error_event(500, f"internal error: {type(err).__name__}"))
            return
        self._join(chats, batch)

    def _join(self, chats: list[ChatJob], batch: DecodeBatch) -> None:
        """Merge freshly prefilled rows into a running batch (or start one)."""
        for job in chats:
            job.detok = IncrementalDetokenizer(self.sm.base.tokenizer)
            job.stopper = StopMatcher(job.stop)
        target = next((b for b in self.batches if b.can_merge(batch)), None)
        if target is None:
            self.batches.append(batch)
        else:
            target.merge(batch)

    def _step(self, batch: DecodeBatch) -> None:
        keep = [i for i, row in enumerate(batch.rows) if not row.tag.cancelled.is_set()]
        if len(keep) < len(batch):
            batch.select(keep)  # a client went away: its row leaves the batch now
        if not len(batch):
            return
        try:
            self.sm.decode_step(batch)
            self.steps += 1
            deliver(batch)
        except Exception as err:  # fail this batch's requests, keep serving
            log.exception("decode step failed")
            for row in batch.rows:
                row.tag.sink(error_event(500, f"internal error: {type(err).__name__}"))
            batch.select([])

    def _fail_all(self, status: int, message: str) -> None:
        for batch in self.batches:
            for row in batch.rows:
                row.tag.sink(error_event(status, message))
        self.batches = []
        for reading in self.reading:
            reading.job.sink(error_event(status, message))
        self.reading.clear()
        for job in self.queue.take(10**9, 0.0):
            job.sink(error_event(status, message))
