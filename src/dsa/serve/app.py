"""The FastAPI app: OpenAI-compatible routes in front of the model worker.

    GET  /health                 readiness, guard status, queue depth, leaked hooks (0)
    GET  /v1/models              the one model served
    POST /v1/chat/completions    chat (+ "stream": true server-sent events); extension field
                                 "alignment" and a "dsa" block in the answer
    POST /v1/moderations         guard flags per input in OpenAI's moderation shape

Operator policy (fail closed): λ = max(client λ, guard policy λ) unless the client's API key has
the "override" permission (`dsa.align.policy.request_alignment`, which every engine shares); raw guard scores go only to keys with "scores" (or every client with
`expose_scores`), since they are an oracle for tuning attacks, and so does λ under a ramp policy
(`reveals_score`). A prompt in a language the guard was not validated on fails closed
(`--unvalidated-language`: flag | refuse | allow; see `dsa.serve.language_rule`). Every error is
OpenAI's `{"error": {...}}`; a streaming error is an error event followed by `data: [DONE]`.

Engines: the app serves a `SafetyModel` through `ModelWorker` (the HF engine: its own batching
decode loop in a thread), or any model with a `make_worker(config)` method — the vLLM engine's
`dsa.vllm.serve.VllmServedModel`, whose worker runs requests on vLLM's `AsyncLLM`. Both answer the
same attributes (`base`, `guards`, `adapter`, `policy_head`, `response_guards`, `context_length`,
`check_alignment`) and take the same jobs, so routes, policy and limits are shared.
"""  # noqa: E501

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import asynccontextmanager

from dsa.extras import needs_extra

with needs_extra("serve", "HTTP server (dsa.serve)"):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

from dsa.align.policy import effective_floor, request_alignment, reveals_score
from dsa.runtime import policy_threshold
from dsa.serve.config import ApiKey, ServerConfig
from dsa.serve.errors import APIError, bad_request, documented, from_validation
from dsa.serve.job_events import cancel_on_disconnect, job_sink, next_event
from dsa.serve.language_rule import LanguageRule
from dsa.serve.openapi import document_bodies, request_body_spec
from dsa.serve.request_body import parse_body, prompt_budget, read_json
from dsa.serve.schema import ChatRequest, ModerationRequest
from dsa.serve.sse import SSEResponse, sse_events
from dsa.serve.worker import ChatJob, ModelWorker, ModerationJob, QueueFull, Unavailable

UNGUARDED = ("serving WITHOUT a prompt guard and an alignment adapter (--allow-unguarded): "
             "answers are not aligned by any policy")


def is_guarded(sm) -> bool:
    return sm.guards is not None and sm.adapter is not None


def create_app(sm, config: ServerConfig | None = None, model_name: str | None = None) -> FastAPI:
    """Build the app serving `sm`. Refuses (ValueError) a model without a prompt guard and an
    alignment adapter unless `config.allow_unguarded`."""
    config = config or ServerConfig(model_name=model_name)
    if not is_guarded(sm) and not config.allow_unguarded:
        missing = " and ".join(x for x, have in (("a prompt guard", sm.guards is not None),
                                                  ("an alignment adapter", sm.adapter is not None)) if not have)
        raise ValueError(f"refusing to serve without {missing}: pass --allow-unguarded "
                         "(ServerConfig(allow_unguarded=True)) to serve unaligned answers")
    name = config.model_name or model_name or sm.base.name
    make_worker = getattr(sm, "make_worker", None)
    languages = LanguageRule.for_model(sm, config)  # before the worker: it sets the model's rule
    worker = make_worker(config) if make_worker is not None else ModelWorker(sm, config)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if hasattr(worker, "astart"):  # an engine built inside the server's event loop (vLLM)
            await worker.astart()
        else:
            worker.start()
        yield
        # uvicorn has already waited its grace period for open connections
        if hasattr(worker, "astop"):
            await worker.astop(1.0)
        else:
            await run_in_threadpool(worker.stop, 1.0)

    app = FastAPI(title="dsa", description=__doc__, lifespan=lifespan)
    app.state.worker, app.state.config = worker, config

    @app.exception_handler(APIError)
    async def _api_error(_r: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_r: Request, err: RequestValidationError) -> JSONResponse:
        return from_validation(list(err.errors())).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, err: StarletteHTTPException) -> JSONResponse:
        return APIError(err.status_code, str(err.detail), code=None).response(err.headers)  # 405: Allow

    @app.exception_handler(Exception)
    async def _internal(_r: Request, err: Exception) -> JSONResponse:
        return APIError(500, f"internal error: {type(err).__name__}", code="internal_error").response()

    def auth(request: Request) -> ApiKey | None:
        try:
            return config.authenticate(request.headers.get("authorization"))
        except PermissionError as err:
            raise APIError(401, str(err), code="invalid_api_key") from None

    def check_model(model: str | None) -> None:
        if model is not None and model != name:
            raise APIError(404, f"the model {model!r} does not exist; this server serves {name!r}",
                           "model", "model_not_found")

    def expose(key: ApiKey | None) -> bool:
        return config.expose_scores or (key is not None and "scores" in key.permissions)

    # a ramp policy's λ is a function of the guard score: shown only to clients that see scores
    secret_lambda = is_guarded(sm) and reveals_score(sm.policy, policy_threshold(sm.guards, sm.policy_head))

    def submit(job) -> None:
        try:
            worker.submit(job)
        except QueueFull:
            raise APIError(429, "the server is busy (request queue full); retry later", code="queue_full") from None
        except Unavailable as err:
            raise APIError(503, str(err), code="unavailable") from None

    @app.get("/health", responses={503: {"description": "not ready (draining, or the worker stopped): the same body"}})
    def health() -> JSONResponse:
        status = ("error" if not worker.alive or worker.error else "draining" if worker.draining
                  else "ok" if is_guarded(sm) else "unguarded")
        body = {"status": status, "ready": worker.ready, "guarded": is_guarded(sm), "base": sm.base.name,
                "fingerprint": sm.base.fingerprint, "model": name, "engine": getattr(sm, "engine", "hf"),
                "guard_heads": list(sm.guards.heads) if sm.guards is not None else [],
                "policy_head": sm.policy_head, "alignment_adapter": sm.adapter is not None,
                "response_guard": sm.response_guards is not None, "queue": worker.queued(),
                "active_rows": worker.active_rows(), "tap_hooks": worker.extra_hooks(),
                **(languages.health() if languages is not None else {"validated_languages": []})}
        if hasattr(worker, "health"):
            body |= worker.health()
        if not is_guarded(sm):
            body["warning"] = UNGUARDED
        if worker.error:
            body["error"] = worker.error
        return JSONResponse(body, status_code=200 if worker.ready else 503)

    @app.get("/v1/models", responses=documented(401))
    def models(request: Request) -> dict:
        auth(request)
        return {"object": "list", "data": [_model_card(name, created)]}

    @app.get("/v1/models/{model_id}", responses=documented(401, 404))
    def model(model_id: str, request: Request) -> dict:
        auth(request)
        check_model(model_id)
        return _model_card(name, created)

    @app.post("/v1/moderations", openapi_extra=request_body_spec(ModerationRequest),
              responses=documented(400, 401, 404, 413, 429, 503))
    async def moderations(request: Request) -> dict:
        key = auth(request)
        req = parse_body(ModerationRequest, await read_json(request, config.max_body_bytes))
        check_model(req.model)
        if sm.guards is None:
            raise bad_request("this server has no guard heads loaded", "input", "no_guard")
        if len(req.input) > config.max_moderation_inputs:
            raise bad_request(f"at most {config.max_moderation_inputs} inputs per request", "input")
        events: asyncio.Queue = asyncio.Queue()
        job = ModerationJob(req.input, job_sink(events))
        submit(job)
        async with cancel_on_disconnect(request, job, events):
            ev = await next_event(events, job)
        if ev["type"] == "error":
            raise APIError(ev["status"], ev["message"], code=ev.get("code"))
        show = expose(key)
        return {"id": f"modr-{uuid.uuid4().hex[:24]}", "model": name, "results": [
            {"flagged": any(r["flags"].values()), "categories": r["flags"],
             "category_scores": r["scores"] if show else {h: float(f) for h, f in r["flags"].items()}}
            for r in ev["results"]]}

    @app.post("/v1/chat/completions", openapi_extra=request_body_spec(ChatRequest),
              responses={200: {"content": {"text/event-stream": {}},
                               "description": "the answer; with \"stream\": true, server-sent events"},
                         **documented(400, 401, 404, 413, 429, 503)})
    async def chat(request: Request):
        key = auth(request)
        req = parse_body(ChatRequest, await read_json(request, config.max_body_bytes))
        check_model(req.model)
        messages = [m.as_dict() for m in req.messages]
        override = key is not None and "override" in key.permissions
        alignment, floor, mode = request_alignment(req.alignment, exact=override, guarded=is_guarded(sm))
        try:
            sm.check_alignment(alignment, floor)
        except ValueError as err:
            raise bad_request(str(err), "alignment") from None
        prompt_tokens, max_tokens = await run_in_threadpool(prompt_budget, sm, config, messages, req.budget())
        show = expose(key)
        lang = await run_in_threadpool(languages.check, messages, mode, show) if languages is not None else None
        refuse = lang is not None and lang["applied"] and languages.rule == "refuse"
        if lang is not None and lang["applied"] and languages.rule == "flag":  # at least a flagged prompt's λ
            floor = effective_floor(alignment, floor, language_flagged=True, flagged_lambda=languages.flagged_lambda)
        events: asyncio.Queue = asyncio.Queue()
        job = ChatJob(messages, alignment, floor or 0.0, max_tokens, float(req.temperature or 0.0), req.seed,
                      req.stop or [], job_sink(events), prompt_tokens)
        if refuse:  # answered here, without generating, through the same events as a generated answer
            events.put_nowait({"type": "delta", "text": languages.refusal()})
            events.put_nowait({"type": "done", "finish_reason": "content_filter", "stop_reason": "unvalidated_language",
                               "completion_tokens": 0, "lam": None, "guard_scores": {}, "response_scores": {}})
        else:
            submit(job)
        cid, now = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def extras(done: dict) -> dict:
            lam = None if secret_lambda and mode in ("auto", "floor") and not show else done["lam"]
            out = {"alignment_lambda": lam, "alignment_policy": mode, "stop_reason": done["stop_reason"]}
            if lang is not None:
                out["language"] = lang
            if show:
                out |= {"guard_scores": done["guard_scores"], "response_guard": done["response_scores"]}
            return out

        def usage(done: dict) -> dict:
            return {"prompt_tokens": prompt_tokens, "completion_tokens": done["completion_tokens"],
                    "total_tokens": prompt_tokens + done["completion_tokens"]}

        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return SSEResponse(sse_events(events, job, cid, now, name, extras, usage, include_usage))
        text = []
        async with cancel_on_disconnect(request, job, events):
            while (ev := await next_event(events, job))["type"] == "delta":
                text.append(ev["text"])
        if ev["type"] == "error":
            raise APIError(ev["status"], ev["message"], code=ev.get("code"))
        return {"id": cid, "object": "chat.completion", "created": now, "model": name,
                "system_fingerprint": sm.base.fingerprint,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                             "logprobs": None, "finish_reason": ev["finish_reason"]}],
                "usage": usage(ev), "dsa": extras(ev)}

    document_bodies(app, (ChatRequest, ModerationRequest))
    return app


def _model_card(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "dsa"}
