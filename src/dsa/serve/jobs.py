"""What the model worker is handed: chat and moderation jobs, the bounded queue they wait in
(`JobQueue`; full → `QueueFull`, a 429), and the events a job's sink receives."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from dsa.decoding import IncrementalDetokenizer
from dsa.serve.stop_strings import StopMatcher

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


class JobQueue:
    """A bounded FIFO the worker takes chat jobs from up to a row budget, moderations up to a count."""

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

    def take(self, max_chats: int, timeout: float, max_moderations: int = 10**9) -> list:
        with self._cv:
            if not self._items and timeout > 0:
                self._cv.wait(timeout)
            out, rest, n, m = [], deque(), 0, 0
            while self._items:
                job = self._items.popleft()
                chat = isinstance(job, ChatJob)
                if (chat and n >= max_chats) or (not chat and m >= max_moderations):
                    rest.append(job)
                    continue
                n += chat
                m += not chat
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


def error_event(status: int, message: str, code: str | None = None) -> dict:
    """The event that ends a job with an HTTP error (`status`, `message`, an optional `code`)."""
    return {"type": "error", "status": status, "message": message, "code": code}
