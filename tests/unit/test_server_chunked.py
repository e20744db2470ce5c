"""A real uvicorn server (tiny model): a long prompt or a big moderation request admitted while a
stream runs is read in slices between decode steps, so the stream's chunks keep coming."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from dsa.serve import ServerConfig, create_app

from .server_tiny import chat_body, live_server, tiny_model

PER_TOKEN = 0.02  # seconds each token costs a forward (a one-shot read of 190 tokens: 3.8 s)
LONG = "tell me about the harbour and the mill " * 5  # ~200 tokens with the template (char-level)


def _slow_model():
    """The tiny model with a forward cost proportional to the tokens it reads."""
    sm = tiny_model()
    model, forward = sm.base.model, sm.base.model.forward

    def slow(*args, **kw):
        ids = kw.get("input_ids", args[0] if args else None)
        time.sleep(PER_TOKEN * ids.numel())
        return forward(*args, **kw)

    model.forward = slow
    return sm


def _stream(url: str, arrivals: list, started: threading.Event, stop: threading.Event) -> None:
    with httpx.Client(timeout=60) as c, c.stream("POST", f"{url}/v1/chat/completions",
                                                 json=chat_body(max_tokens=200, stream=True)) as r:
        for line in r.iter_lines():
            if '"content"' in line and '"role"' not in line:
                arrivals.append(time.monotonic())
                if len(arrivals) >= 5:
                    started.set()
            if stop.is_set():
                break


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", chat_body(LONG, max_tokens=1)),
    ("/v1/moderations", {"input": [LONG[:120]] * 2}),
], ids=["long_prompt", "moderation"])
def test_a_big_request_does_not_stall_a_running_stream(path, body):
    with live_server(create_app(_slow_model(), ServerConfig(model_name="tiny", max_prefill_tokens=16))) as url:
        arrivals, started, stop = [], threading.Event(), threading.Event()
        streamer = threading.Thread(target=_stream, args=(url, arrivals, started, stop), daemon=True)
        streamer.start()
        assert started.wait(60)
        t0 = time.monotonic()
        r = httpx.post(f"{url}{path}", json=body, timeout=120)
        t1 = time.monotonic()
        assert r.status_code == 200, r.text
        stop.set()
        streamer.join(30)
    during = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False) if b >= t0 and a <= t1]
    # a one-shot read would stop the stream for the whole request (>= 3.8 s); a slice is 16 tokens
    assert during and max(during) < 1.5, during
    assert t1 - t0 > 3.0 and len(during) > 5


def test_a_long_prompt_answers_as_it_would_alone():
    sm = tiny_model()
    config = ServerConfig(model_name="tiny", max_prefill_tokens=16, expose_scores=True)
    with live_server(create_app(sm, config)) as url:
        chunked = httpx.post(f"{url}/v1/chat/completions", json=chat_body(LONG, max_tokens=8), timeout=60).json()
    with live_server(create_app(sm, ServerConfig(model_name="tiny", max_prefill_tokens=4096,
                                                 expose_scores=True))) as url:
        whole = httpx.post(f"{url}/v1/chat/completions", json=chat_body(LONG, max_tokens=8), timeout=60).json()
    assert chunked["choices"][0]["message"]["content"] == whole["choices"][0]["message"]["content"]
    assert chunked["dsa"]["alignment_lambda"] == whole["dsa"]["alignment_lambda"]
    assert chunked["dsa"]["guard_scores"] == pytest.approx(whole["dsa"]["guard_scores"], abs=1e-4)
