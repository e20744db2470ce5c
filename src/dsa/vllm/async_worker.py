"""`VllmWorker`: the HTTP app's worker when vLLM runs the model (`dsa serve --engine vllm`).

It takes the same jobs as the HF engine's `ModelWorker` (`ChatJob`, `ModerationJob`, the policy
already applied by the app) and answers through the same event sinks (`delta`, `done`, `error`,
`moderation`), so routes, limits and response fields are the app's, whichever engine runs.

Each job is an asyncio task on the server's event loop around `AsyncLLM.generate`: vLLM's engine
core batches all running requests continuously (`--max-batch` = `max_num_seqs`). The model
computes each request's guard scores and λ inside the forward (`dsa.vllm.model`); the task fetches
them when its request finishes with one `collective_rpc("dsa_pop_results")` (the worker
extension), a round trip to the engine core that waits for the step in progress. A client that
leaves (its job's `cancelled` event, set by the app) has its task cancelled within
`REAP_INTERVAL_S`, which aborts the request in vLLM (`AsyncLLM.generate` aborts on cancellation).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
import uuid
from collections import deque

from dsa.serve.config import ServerConfig
from dsa.serve.jobs import FINISH_REASON, ChatJob, ModerationJob, QueueFull, Unavailable
from dsa.serve.jobs import error_event as _error

log = logging.getLogger(__name__)
REAP_INTERVAL_S = 0.1  # how often cancelled jobs and the drain deadline are checked
GREEDY_BELOW = 1e-5  # vLLM's own greedy cut-off (sampling_params._SAMPLING_EPS)


class VllmWorker:
    """Runs the app's jobs on an `AsyncLLM` (built by `start` inside the server's event loop)."""

    def __init__(self, served, config: ServerConfig):
        self.served, self.config = served, config
        self.engine = None
        self.jobs: dict[object, asyncio.Task] = {}
        self.draining = False
        self.error: str | None = None
        self._stopped = False
        self._drain_deadline: float | None = None
        self._reaper: asyncio.Task | None = None
        self.fetch_s: deque[float] = deque(maxlen=256)  # seconds of the last guard-result fetches
        self.aborted = 0  # requests aborted in vLLM because their client left or the drain deadline passed

    # ---- control ------------------------------------------------------------------------------
    async def astart(self) -> None:
        """Build the engine (minutes on a CPU; the port opens afterwards)."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        if self.engine is not None:
            return
        t0 = time.monotonic()
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self.served.engine_kwargs))
        self.served.context_length = int(self.engine.model_config.max_model_len)
        self._reaper = asyncio.get_running_loop().create_task(self._reap())
        log.warning("vLLM engine ready after %.1f s (max_model_len %d)", time.monotonic() - t0,
                    self.served.context_length)

    async def astop(self, timeout: float = 1.0) -> None:
        """Drain for up to `timeout` seconds, fail what is left (503) and shut the engine down."""
        self.drain()
        deadline = time.monotonic() + timeout
        while self.jobs and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._fail_all(503, "the server is shutting down")
        self._stopped = True
        if self._reaper is not None:
            self._reaper.cancel()
        if self.engine is not None:
            self.engine.shutdown()

    @property
    def alive(self) -> bool:
        return self.engine is None or not self.engine.errored

    @property
    def ready(self) -> bool:
        return (self.engine is not None and self.alive and not self.draining and not self._stopped
                and self.error is None)

    def submit(self, job) -> None:
        """Start the job as a task on the running loop; QueueFull beyond `max_batch` running plus
        `max_queue` waiting requests (the HF worker's limits), Unavailable when not ready."""
        if not self.ready:
            raise Unavailable("the server is shutting down" if self.draining or self._stopped
                              else f"the model engine is not available: {self.error or 'not started or dead'}")
        if len(self.jobs) >= self.config.max_batch + self.config.max_queue:
            raise QueueFull
        run = self._chat(job) if isinstance(job, ChatJob) else self._moderate(job)
        task = asyncio.get_running_loop().create_task(run)
        self.jobs[job] = task
        task.add_done_callback(lambda _t, job=job: self.jobs.pop(job, None))

    def drain(self, within: float | None = None) -> None:
        self.draining = True
        if within is not None:
            self._drain_deadline = time.monotonic() + within

    def in_flight(self) -> int:
        """Requests still running (`dsa.serve.run` exits its drain when none are left)."""
        return len(self.jobs)

    def queued(self) -> int:
        """Requests beyond the ones decoding together (approximately vLLM's waiting queue)."""
        return max(0, len(self.jobs) - self.config.max_batch)

    def active_rows(self) -> int:
        return min(len(self.jobs), self.config.max_batch)

    def extra_hooks(self) -> int:
        return 0  # no hooks: the taps are aux hidden states of vLLM's forward

    def health(self) -> dict:
        """Engine-specific /health fields: chat requests aborted in vLLM so far, and the guard-result
        fetch's latency (the cost of the per-request `collective_rpc`), median and max over the last
        fetches."""
        f = list(self.fetch_s)
        return {"aborted": self.aborted,
                "guard_fetch_ms": {"n": len(f), "median": round(1000 * statistics.median(f), 2) if f else None,
                                   "max": round(1000 * max(f), 2) if f else None}}

    # ---- jobs ---------------------------------------------------------------------------------
    async def _chat(self, job: ChatJob) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        key = uuid.uuid4().hex
        # vLLM raises temperatures in (0, 0.01) to 0.01 and samples; the HF engine's tiny temperatures are greedy
        temperature = job.temperature if job.temperature >= GREEDY_BELOW else 0.0
        params = SamplingParams(max_tokens=job.max_tokens, temperature=temperature, seed=job.seed,
                                stop=job.stop or None, stop_token_ids=self.served.stop_token_ids,
                                output_kind=RequestOutputKind.DELTA, extra_args=_extra_args(job, key))
        prompt = TokensPrompt(prompt_token_ids=self.served.prompt_ids(job.messages))
        n_tokens, finish, why = 0, None, None
        try:
            async for out in self.engine.generate(prompt, params, request_id=key):
                c = out.outputs[0]
                n_tokens += len(c.token_ids)
                if c.text:
                    job.sink({"type": "delta", "text": c.text})
                if out.finished:
                    finish, why = c.finish_reason, c.stop_reason
            info = await self._pop([key])
        except asyncio.CancelledError:  # the client left or the drain deadline passed: vLLM aborted it
            self.aborted += 1
            self._forget([key])
            raise
        except Exception as err:
            job.sink(self._failure(err))
            self._forget([key])
            return
        stop = _stop_reason(finish, why)
        if stop is None or info.get(key) is None:  # aborted by the engine, or no guard result: fail closed
            log.error("request %s ended with %s and guard result %s", key, finish, info.get(key))
            job.sink(_error(500, "the model engine did not finish the request", "internal_error"))
            return
        res = info[key]
        job.sink({"type": "done", "finish_reason": FINISH_REASON.get(stop, "stop"), "stop_reason": stop,
                  "completion_tokens": n_tokens, "lam": float(res["lam"] or 0.0),
                  "guard_scores": dict(res["guard_scores"]), "response_scores": {}})

    async def _moderate(self, job: ModerationJob) -> None:
        """Each input is a one-token request (its prefill runs the guard heads); the scores come
        back through the worker extension as for chat."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        keys = [uuid.uuid4().hex for _ in job.inputs]

        async def one(text: str, key: str) -> None:
            params = SamplingParams(max_tokens=1, temperature=0.0,
                                    extra_args={"dsa_alignment": "auto", "dsa_request_key": key})
            async for _ in self.engine.generate(TokensPrompt(prompt_token_ids=self.served.moderation_ids(text)),
                                                params, request_id=key):
                pass

        try:
            await asyncio.gather(*(one(t, k) for t, k in zip(job.inputs, keys, strict=True)))
            found = await self._pop(keys)
        except asyncio.CancelledError:
            self._forget(keys)
            raise
        except Exception as err:
            job.sink(self._failure(err))
            self._forget(keys)
            return
        if any(found.get(k) is None for k in keys):
            job.sink(_error(500, "the model engine returned no guard scores", "internal_error"))
            return
        results = []
        for k in keys:
            scores = dict(found[k]["guard_scores"])
            results.append({"scores": scores, "flags": self.served.guards.flags(scores)})
        job.sink({"type": "moderation", "results": results})

    # ---- helpers ------------------------------------------------------------------------------
    async def _pop(self, keys: list[str]) -> dict:
        """The model's guard scores and λ for these requests (rank 0's worker answers)."""
        t0 = time.monotonic()
        out = (await self.engine.collective_rpc("dsa_pop_results", args=(keys,)))[0]
        self.fetch_s.append(time.monotonic() - t0)
        return out

    def _forget(self, keys: list[str]) -> None:
        """Drop the results of requests that will never be read (best effort, in the background)."""
        if self.engine is None or self.engine.errored or self._stopped:
            return

        async def pop() -> None:
            try:
                await self.engine.collective_rpc("dsa_pop_results", args=(keys,))
            except Exception:
                pass

        asyncio.get_running_loop().create_task(pop())

    def _failure(self, err: Exception) -> dict:
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        if isinstance(err, VLLMClientError | ValueError):
            return _error(400, str(err))
        if isinstance(err, EngineDeadError):
            self.error = "the vLLM engine died"
            log.error("vLLM engine died: %s", err)
            return _error(503, "the model engine stopped", "unavailable")
        log.exception("request failed", exc_info=err)
        return _error(500, f"internal error: {type(err).__name__}", "internal_error")

    async def _reap(self) -> None:
        """Cancel the tasks of jobs whose client went away; after the drain deadline, end every job
        with an error event so streams close cleanly before the server exits."""
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            if self._drain_deadline is not None and time.monotonic() > self._drain_deadline:
                self._fail_all(503, "the server is shutting down")
            for job, task in list(self.jobs.items()):
                if job.cancelled.is_set() and not task.done():
                    task.cancel()

    def _fail_all(self, status: int, message: str) -> None:
        for job, task in list(self.jobs.items()):
            self.jobs.pop(job, None)
            if not task.done():
                job.sink(_error(status, message))
                task.cancel()


def _extra_args(job: ChatJob, key: str) -> dict:
    """The app's policy decision as the dsa model's per-request arguments: "auto" plus a floor,
    or (an override key, or a server without a policy) λ exactly."""
    if job.alignment == "auto":
        floor = float(job.min_alignment or 0.0)
        return {"dsa_alignment": floor if floor > 0 else "auto", "dsa_request_key": key}
    return {"dsa_alignment": float(job.alignment), "dsa_alignment_exact": True, "dsa_request_key": key}


def _stop_reason(finish: str | None, why) -> str | None:
    """vLLM's finish reason as the HF engine names it ("eos", "stop_sequence", "length")."""
    if finish == "length":
        return "length"
    if finish == "stop":
        return "stop_sequence" if isinstance(why, str) else "eos"
    return None
