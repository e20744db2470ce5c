"""A request's life on a real uvicorn server (tiny model): a client that disconnects, SIGTERM while
the worker is busy, and what a new client sees during the drain."""

import json
import signal
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx

from dsa.serve import ServerConfig, create_app

from .server_tiny import chat_body, live_server, served_process, tiny_model


def _wait_rows(url: str, want: int, within: float) -> dict:
    deadline = time.monotonic() + within
    while (health := httpx.get(f"{url}/health", timeout=5).json())["active_rows"] != want:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return health


def _open_request(url: str, path: str, body: dict) -> socket.socket:
    """Send a request on a raw socket and leave it waiting for the answer."""
    parts = urlsplit(url)
    raw = json.dumps(body).encode()
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
    return sock


def test_a_dropped_non_streaming_request_frees_its_row_within_one_decode_step():
    sm = tiny_model()
    steps: list[tuple[float, int]] = []  # (start time, rows) of each decode step
    step = sm.decode_step

    def slow_step(batch):
        steps.append((time.monotonic(), len(batch)))
        time.sleep(0.05)
        step(batch)

    sm.decode_step = slow_step
    with live_server(create_app(sm, ServerConfig(model_name="tiny"))) as url:
        # greedy, this prompt runs to max_tokens: 200 steps, 10 s, unless the row is dropped
        sock = _open_request(url, "/v1/chat/completions", chat_body(max_tokens=200))
        assert _wait_rows(url, 1, 30)["active_rows"] == 1
        time.sleep(0.2)  # a few steps in
        sock.close()  # the client gives up
        gone = time.monotonic()
        health = _wait_rows(url, 0, 5)
        freed = time.monotonic() - gone
        assert health["active_rows"] == 0 and freed < 1.0, freed
        late = [n for t, n in steps if t > gone + 0.01 and n]
        assert len(late) <= 1, late  # at most the step already under way when the client left
        # the server still answers
        r = httpx.post(f"{url}/v1/chat/completions", json=chat_body(max_tokens=2), timeout=30)
        assert r.status_code == 200


SLOW = """
step, prefill = sm.decode_step, sm.prefill
sm.decode_step = lambda b: (time.sleep(0.05), step(b))


def slow_prefill(messages, **kw):
    if any("LONG" in m["content"] for ms in messages for m in ms):
        time.sleep(8)  # a long prompt's prefill: one forward, longer than the shutdown grace (5 s)
    return prefill(messages, **kw)


sm.prefill = slow_prefill
"""


def _stream(url: str, body: dict, out: list, started: threading.Event) -> None:
    with httpx.Client(timeout=60) as c, c.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        try:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    out.append(line)
                    started.set()
        except httpx.HTTPError as err:  # the connection was cut
            out.append(f"cut: {type(err).__name__}")


def _post(url: str, body: dict, out: list) -> None:
    try:
        out.append(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60))
    except httpx.HTTPError as err:
        out.append(err)


def test_sigterm_during_a_long_prefill_ends_every_request_cleanly(tmp_path):
    with served_process(tmp_path, SLOW) as (proc, url):
        streamed, started = [], threading.Event()
        threading.Thread(target=_stream, args=(url, chat_body(max_tokens=200, stream=True), streamed, started),
                         daemon=True).start()
        assert started.wait(60)  # a stream is running
        answered: list = []
        waiting = threading.Thread(target=_post, args=(url, chat_body("LONG " * 8, max_tokens=4), answered))
        waiting.start()
        time.sleep(1.0)  # the worker is inside the long prefill; the stream gets no steps
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        assert time.monotonic() - t0 < 10
        waiting.join(10)
        deadline = time.monotonic() + 5
        while not streamed[-1].startswith(("data: [DONE]", "cut")) and time.monotonic() < deadline:
            time.sleep(0.05)
    # the request being prefilled gets OpenAI's JSON error (503), not uvicorn's plain-text 500
    r = answered[0]
    assert isinstance(r, httpx.Response), r
    assert r.status_code == 503, (r.status_code, r.text)
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    # the running stream ends with an error event and [DONE], not a cut connection
    assert streamed[-1] == "data: [DONE]", streamed[-3:]
    assert json.loads(streamed[-2][6:])["error"]["type"] == "server_error"
    assert "shutting down" in streamed[-2]


def test_new_requests_during_the_drain_get_503_not_a_refused_connection(tmp_path):
    with served_process(tmp_path, SLOW) as (proc, url):
        streamed, started = [], threading.Event()
        threading.Thread(target=_stream, args=(url, chat_body(max_tokens=200, stream=True), streamed, started),
                         daemon=True).start()
        assert started.wait(60)  # a stream is running: the server drains rather than exiting
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        r = httpx.post(f"{url}/v1/chat/completions", json=chat_body(), timeout=10)
        assert r.status_code == 503 and set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert "shutting down" in r.json()["error"]["message"]
        health = httpx.get(f"{url}/health", timeout=10)
        assert health.status_code == 503 and health.json()["status"] == "draining"
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while not streamed[-1].startswith(("data: [DONE]", "cut")) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert streamed[-1] == "data: [DONE]" and "shutting down" in streamed[-2]
