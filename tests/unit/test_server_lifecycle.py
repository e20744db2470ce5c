"""A request's life on a real uvicorn server (tiny model): a client that disconnects, SIGTERM while
the worker is busy, and what a new client sees during the drain."""

import json
import socket
import time
from urllib.parse import urlsplit

import httpx

from dsa.serve import ServerConfig, create_app

from .server_tiny import chat_body, live_server, tiny_model


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
