"""How a route waits on its job: the worker's events arrive through a thread-safe sink into an
asyncio queue, and a client that disconnects cancels the job at once."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from dsa.serve.errors import APIError

if TYPE_CHECKING:
    from fastapi import Request


def job_sink(events: asyncio.Queue):
    loop = asyncio.get_running_loop()

    def put(event: dict) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    return put


async def next_event(events: asyncio.Queue, job) -> dict:
    """The worker's next event for a non-streaming request (inside `cancel_on_disconnect`)."""
    try:
        ev = await events.get()
    except asyncio.CancelledError:
        job.cancelled.set()
        raise
    if ev is CLIENT_GONE:
        raise APIError(499, "client closed the request")
    return ev


CLIENT_GONE = {"type": "client_gone"}


@asynccontextmanager
async def cancel_on_disconnect(request: Request, job, events: asyncio.Queue):
    """Cancel `job` the moment a non-streaming client disconnects, so its row leaves the batch at
    the next decode step. Polling `is_disconnected` between events never fires while the worker
    keeps sending deltas; this waits on the connection itself (the body is read, so the next ASGI
    message is the disconnect)."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        job.cancelled.set()
        events.put_nowait(CLIENT_GONE)

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()
