"""OpenAI-compatible HTTP server over a `SafetyModel`.

    POST /v1/chat/completions   chat with guard scores and the alignment λ in the response
                                (extra request field "alignment": "auto" or a number; "stream": true
                                sends server-sent events)
    POST /v1/moderations        guard scores and flags per input, in OpenAI's moderation shape
    GET  /health                base, fingerprint, guard heads, adapter

Requests are served one batch at a time (the model is not thread-safe); the server is stateless,
so it scales horizontally behind a load balancer.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from dsa.runtime import SafetyModel


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int = Field(128, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: int | None = None
    stream: bool = False
    alignment: Literal["auto"] | float = Field(
        "auto", description='"auto": λ from the guard score by the server\'s policy; or a fixed λ')


class ModerationRequest(BaseModel):
    model: str | None = None
    input: str | list[str]


def _finish_reason(stop_reason: str) -> str:
    return "stop" if stop_reason == "eos" else stop_reason


def create_app(sm: SafetyModel, model_name: str | None = None) -> FastAPI:
    """Build the FastAPI app serving `sm`."""
    app = FastAPI(title="dsa", description=__doc__)
    lock = threading.Lock()
    name = model_name or sm.base.name

    def check_alignment(alignment: str | float) -> None:
        if isinstance(alignment, float | int) and alignment != 0 and sm.adapter is None:
            raise HTTPException(422, "alignment > 0 needs an alignment adapter; this server has none")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "base": sm.base.name, "fingerprint": sm.base.fingerprint,
                "guard_heads": list(sm.guards.heads) if sm.guards is not None else [],
                "alignment_adapter": sm.adapter is not None}

    @app.post("/v1/moderations")
    def moderations(req: ModerationRequest) -> dict:
        if sm.guards is None:
            raise HTTPException(422, "this server has no guard heads loaded")
        inputs = [req.input] if isinstance(req.input, str) else req.input
        with lock:
            results = sm.classify(inputs)
        return {"id": f"modr-{uuid.uuid4().hex[:12]}", "model": name, "results": [
            {"flagged": any(r["flags"].values()), "categories": r["flags"], "category_scores": r["scores"]}
            for r in results]}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest):
        check_alignment(req.alignment)
        messages = [m.model_dump() for m in req.messages]
        created, cid = int(time.time()), f"chatcmpl-{uuid.uuid4().hex[:12]}"
        if req.stream:
            return StreamingResponse(_sse(sm, lock, messages, req, cid, created, name),
                                     media_type="text/event-stream")
        with lock:
            r = sm.generate([messages], alignment=req.alignment, max_new_tokens=req.max_tokens,
                            temperature=req.temperature, seed=req.seed)[0]
        prompt_tokens = len(sm.base.tokenizer(sm.base.chat_text(messages), add_special_tokens=False)["input_ids"])
        return {
            "id": cid, "object": "chat.completion", "created": created, "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text},
                         "finish_reason": _finish_reason(r.stop_reason)}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": r.n_tokens,
                      "total_tokens": prompt_tokens + r.n_tokens},
            "dsa": {"guard_scores": r.guard_scores, "alignment_lambda": r.lam, "stop_reason": r.stop_reason},
        }

    return app


def _sse(sm: SafetyModel, lock: threading.Lock, messages: list[dict], req: ChatRequest,
         cid: str, created: int, name: str) -> Iterator[str]:
    """Server-sent events: one chunk per decoded piece of text, then the guard summary."""

    def chunk(delta: dict, finish: str | None = None, extra: dict | None = None) -> str:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if extra:
            body["dsa"] = extra
        return f"data: {json.dumps(body)}\n\n"

    with lock:
        yield chunk({"role": "assistant"})
        final = None
        for event in sm.stream(messages, alignment=req.alignment, max_new_tokens=req.max_tokens,
                               temperature=req.temperature, seed=req.seed):
            if event.text:
                yield chunk({"content": event.text})
            final = event
        assert final is not None
        yield chunk({}, _finish_reason(final.stop_reason),
                    {"guard_scores": final.guard_scores, "alignment_lambda": final.lam,
                     "stop_reason": final.stop_reason, "response_guard": final.response_scores})
    yield "data: [DONE]\n\n"


def serve(sm: SafetyModel, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(create_app(sm), host=host, port=port, log_level="info")
