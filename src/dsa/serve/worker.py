"""The model worker: one thread owns the model and serves every request, decoding them together.

Requests reach it through a bounded queue (`JobQueue`; full → 429). Each loop iteration the
worker (1) takes new requests up to `max_batch` rows, prefills them together and merges them into
the running batch (dynamic batching: rows of several requests share each decode step, each with
its own λ, budget and sampler), (2) drops rows whose client went away, (3) runs one decode step
and hands each row's new text to its request through a thread-safe sink. No lock is held across
network I/O: handlers only ever wait on their own event queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dsa.decoding import DecodeBatch, IncrementalDetokenizer
from dsa.serve.config import ServerConfig
from dsa.taps import hook_count

log = logging.getLogger(__name__)
FINISH_REASON = {"eos": "stop", "stop_sequence": "stop", "length": "length", "guard": "content_filter",
                 "unvalidated_language": "content_filter"}
Sink = Callable[[dict], None]


@dataclass(eq=False)
class ChatJob:
    """One chat completion request as the worker sees it (the policy already applied)."""

    messages: list[dict]
    alignment: str | float  # "auto" (the guard policy) or a fixed λ
    min_alignment: float  # floor on λ
    max_tokens: int
    temperature: float
    seed: int | None
    stop: list[str]
    sink: Sink
    prompt_tokens: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)
    detok: IncrementalDetokenizer | None = None
    stopper: StopMatcher | None = None


@dataclass(eq=False)
class ModerationJob:
    inputs: list[str]
    sink: Sink
    cancelled: threading.Event = field(default_factory=threading.Event)


class QueueFull(Exception):
    pass


class Unavailable(Exception):
    pass


class StopMatcher:
    """Cuts streamed text at the first stop string, holding back a tail that may start one."""

    def __init__(self, stops: list[str]):
        self.stops, self.buf = stops, ""
        self.keep = max((len(s) for s in stops), default=1) - 1

    def push(self, text: str) -> tuple[str, bool]:
        """(text safe to show, whether a stop string was hit)."""
        self.buf += text
        hits = [self.buf.find(s) for s in self.stops if s in self.buf]
        if hits:
            out, self.buf = self.buf[:min(hits)], ""
            return out, True
        safe = len(self.buf) - self.keep
        if safe <= 0:
            return "", False
        out, self.buf = self.buf[:safe], self.buf[safe:]
        return out, False

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out


class JobQueue:
    """A bounded FIFO the worker can take chat jobs from up to a row budget (moderations always)."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._items: deque = deque()
        self._cv = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, job) -> None:
        with self._cv:
            if len(self._items) >= self.maxsize:
                raise QueueFull
            self._items.append(job)
            self._cv.notify()

    def take(self, max_chats: int, timeout: float) -> list:
        with self._cv:
            if not self._items and timeout > 0:
                self._cv.wait(timeout)
            out, rest, n = [], deque(), 0
            while self._items:
                job = self._items.popleft()
                if isinstance(job, ChatJob) and n >= max_chats:
                    rest.append(job)
                    continue
                n += isinstance(job, ChatJob)
                out.append(job)
            self._items = rest
            return out

    def put_front(self, jobs: list) -> None:
        """Return jobs taken but not admitted yet, ahead of everything else."""
        with self._cv:
            self._items.extendleft(reversed(jobs))

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()


class ModelWorker:
    """Owns the `SafetyModel`; see the module docstring."""

    def __init__(self, sm, config: ServerConfig):
        self.sm, self.config = sm, config
        self.queue = JobQueue(config.max_queue)
        self.batches: list[DecodeBatch] = []
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
        while self._thread is not None and (self.active_rows() or len(self.queue)) and time.monotonic() < deadline:
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
        return {"prefill_errors": self.prefill_errors}

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
            job.sink(_error(503, "the server is shutting down"))  # before `cancelled`: a cancelled job is no longer live
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
        idle = not self.batches
        capacity = self.config.max_batch - self.active_rows()
        jobs = self.queue.take(capacity, timeout=0.5 if idle else 0.0)
        n_chats = sum(isinstance(j, ChatJob) for j in jobs)
        if idle and n_chats and self.config.batch_window_s > 0 and n_chats < capacity:
            time.sleep(self.config.batch_window_s)  # let a burst of requests share one prefill
            jobs += self.queue.take(capacity - n_chats, 0.0)
        for job in jobs:
            if isinstance(job, ModerationJob) and not job.cancelled.is_set():
                self._moderate(job)
        chats = [j for j in jobs if isinstance(j, ChatJob) and not j.cancelled.is_set()]
        # bound one iteration's prefill so long prompts cannot stall the running streams for long
        budget, admit = self.config.max_prefill_tokens, []
        while chats and (not admit or budget >= chats[0].prompt_tokens):
            budget -= chats[0].prompt_tokens
            admit.append(chats.pop(0))
        if chats:
            self.queue.put_front(chats)
        chats = admit
        if chats:
            self._admit(chats)
        for batch in self.batches:
            self._step(batch)
        self.batches = [b for b in self.batches if len(b)]

    def _moderate(self, job: ModerationJob) -> None:
        try:
            job.sink({"type": "moderation", "results": self.sm.classify(job.inputs)})
        except ValueError as err:
            job.sink(_error(400, str(err)))
        except Exception as err:
            log.exception("moderation failed")
            job.sink(_error(500, f"internal error: {type(err).__name__}"))

    def _admit(self, chats: list[ChatJob]) -> None:
        try:
            batch = self.sm.prefill(
                [j.messages for j in chats], alignment=[j.alignment for j in chats],
                max_new_tokens=[j.max_tokens for j in chats], temperature=[j.temperature for j in chats],
                seed=[j.seed for j in chats], min_alignment=[j.min_alignment for j in chats],
                keep_adapter=True, tags=chats)
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
            chats[0].sink(_error(400, str(err)) if isinstance(err, ValueError)
                          else _error(500, f"internal error: {type(err).__name__}"))
            return
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
            self._dispatch(batch)
        except Exception as err:  # fail this batch's requests, keep serving
            log.exception("decode step failed")
            for row in batch.rows:
                row.tag.sink(_error(500, f"internal error: {type(err).__name__}"))
            batch.select([])

    def _dispatch(self, batch: DecodeBatch) -> None:
        """Hand each row's new text to its request; finished rows leave the batch."""
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

    def _fail_all(self, status: int, message: str) -> None:
        for batch in self.batches:
            for row in batch.rows:
                row.tag.sink(_error(status, message))
        self.batches = []
        for job in self.queue.take(10**9, 0.0):
            job.sink(_error(status, message))


def _error(status: int, message: str, code: str | None = None) -> dict:
    return {"type": "error", "status": status, "message": message, "code": code}
