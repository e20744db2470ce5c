"""A request's body as the routes read it: size-limited JSON (413), validated by its model (400),
and a chat's token budget against the prompt, `--max-prompt-tokens` and the context (400)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pydantic import ValidationError

from dsa.features.text import encode_inputs
from dsa.serve.config import ServerConfig
from dsa.serve.errors import APIError, bad_request, from_validation

if TYPE_CHECKING:
    from fastapi import Request


def prompt_budget(sm, config: ServerConfig, messages: list[dict], asked: int | None) -> tuple[int, int]:
    """(prompt tokens, max new tokens) after the prompt, budget and context limits (400 otherwise)."""
    chars = sum(len(m["content"]) for m in messages)
    if chars > 32 * config.max_prompt_tokens:  # too long to be worth tokenising
        raise bad_request(f"the prompt is longer than --max-prompt-tokens {config.max_prompt_tokens}",
                          "messages", "context_length_exceeded")
    n = len(encode_inputs(sm.base, [messages], None)[0])  # the tokens the worker will prefill
    if n > config.max_prompt_tokens:
        raise bad_request(f"the prompt has {n} tokens; this server accepts at most {config.max_prompt_tokens} "
                          "(--max-prompt-tokens)", "messages", "context_length_exceeded")
    context = sm.context_length or n + (asked or config.default_max_tokens)
    if asked is None:
        asked = max(1, min(config.default_max_tokens, context - n))
    if n + asked > context:
        raise bad_request(f"the prompt ({n} tokens) plus max_tokens ({asked}) exceeds the model's context of "
                          f"{context} tokens", "max_tokens", "context_length_exceeded")
    return n, asked


async def read_json(request: Request, limit: int):
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise APIError(413, f"request body over {limit} bytes", code="request_too_large")
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise APIError(413, f"request body over {limit} bytes", code="request_too_large")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise bad_request("the request body is not valid JSON", None, "invalid_json") from None


def parse_body(model, body):
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", None, "invalid_json")
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise from_validation(err.errors()) from None
