"""A streamed chat answer as OpenAI's server-sent events (chunks, the finish chunk, usage, `[DONE]`)."""

from __future__ import annotations

import asyncio
import json

from dsa.extras import needs_extra

with needs_extra("serve", "HTTP server (dsa.serve)"):
    from fastapi.responses import StreamingResponse

from dsa.serve.errors import APIError
from dsa.serve.jobs import ChatJob


def sse_chunk(cid: str, created: int, name: str, delta: dict, finish: str | None = None, **extra) -> str:
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
    return f"data: {json.dumps(body)}\n\n"


async def sse_events(events: asyncio.Queue, job: ChatJob, cid: str, created: int, name: str, extras, usage,
               include_usage: bool):
    """Server-sent events: role, content deltas, the finish chunk (+ usage), `[DONE]`. An error
    after the stream began is an error event, then `[DONE]`. Leaving the stream cancels the row."""
    more = {"usage": None} if include_usage else {}
    try:
        yield sse_chunk(cid, created, name, {"role": "assistant", "content": ""}, **more)
        while True:
            ev = await events.get()
            if ev["type"] == "delta":
                yield sse_chunk(cid, created, name, {"content": ev["text"]}, **more)
            elif ev["type"] == "error":
                yield f"data: {json.dumps(APIError(ev['status'], ev['message'], code=ev.get('code')).body())}\n\n"
                break
            else:
                yield sse_chunk(cid, created, name, {}, ev["finish_reason"], dsa=extras(ev), **more)
                if include_usage:
                    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
                            "choices": [], "usage": usage(ev)}
                    yield f"data: {json.dumps(body)}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()  # a no-op once done; otherwise the row leaves the batch at the next step


class SSEResponse(StreamingResponse):
    """Closes the event generator however the response ends (a vanished client included), so the
    job is cancelled at once rather than when the generator is garbage-collected."""

    def __init__(self, gen):
        super().__init__(gen, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._gen = gen

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._gen.aclose()
