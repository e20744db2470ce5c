"""A real uvicorn server on 127.0.0.1 (tiny model): the official `openai` client, dropped streams,
SIGTERM, and hypothesis fuzzing of every route with 0 responses >= 500."""

import json
import signal
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from dsa.serve import ServerConfig, create_app
from dsa.serve.config import ApiKey, _digest

from .server_fuzz import any_json, chat_bodies, moderation_bodies
from .server_tiny import PROMPT, chat_body, live_server, served_process, tiny_model

KEY = "ops-key-0123456789abcdef"


def test_official_openai_client():
    openai = pytest.importorskip("openai")
    keys = [ApiKey("ops", _digest(KEY), frozenset({"override"}))]
    with live_server(create_app(tiny_model(), ServerConfig(model_name="tiny", api_keys=keys))) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        msgs = [{"role": "user", "content": PROMPT}]
        r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=5, extra_body={"alignment": 0.5})
        assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens <= 5
        assert r.model_extra["dsa"]["alignment_lambda"] == 0.5  # the override key sets λ exactly
        chunks = list(client.chat.completions.create(model="tiny", messages=msgs, max_tokens=5, stream=True,
                                                     stream_options={"include_usage": True},
                                                     extra_body={"alignment": 0.5}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == r.choices[0].message.content  # the same greedy request, streamed
        assert [c.model_extra["dsa"]["alignment_lambda"] for c in chunks if "dsa" in c.model_extra] == [0.5]
        assert chunks[-1].usage.completion_tokens <= 5
        mod = client.moderations.create(model="tiny", input=["hello", PROMPT])
        assert len(mod.results) == 2
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="tiny", messages=msgs, extra_body={"alignment": 5})
        assert err.value.body["param"] == "alignment"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4o", messages=msgs)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong-key-0123456789", max_retries=0).models.list()


def _stream(url: str, body: dict, drop_after: int | None, out: list,
            started: threading.Event | None = None) -> None:
    lines = []
    with httpx.Client(timeout=60) as c, c.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                lines.append(line)
                if started is not None:
                    started.set()
                if drop_after is not None and len(lines) >= drop_after:
                    break  # the client goes away mid-answer ("stop generating")
    out.append(lines)


def test_dropped_streams_free_their_rows_next_request_starts_and_no_hooks_are_left():
    sm = tiny_model(response_bias=-50.0)  # a response guard too: more taps per step
    rows_per_step = []
    step = sm.decode_step

    def slow_step(batch):
        rows_per_step.append(len(batch))
        time.sleep(0.01)
        step(batch)

    sm.decode_step = slow_step
    with live_server(create_app(sm, ServerConfig(model_name="tiny"))) as url:
        body = chat_body(max_tokens=150, stream=True)
        kept, dropped = [], []
        threads = [threading.Thread(target=_stream, args=(url, body, 3 if i % 2 else None, dropped if i % 2 else kept))
                   for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(kept) == 5 and all(ls[-1] == "data: [DONE]" for ls in kept)
        finishes = [json.loads(ls[-2][6:])["choices"][0]["finish_reason"] for ls in kept]
        assert set(finishes) <= {"stop", "length"}
        t0 = time.monotonic()
        r = httpx.post(f"{url}/v1/chat/completions", json=chat_body(max_tokens=2), timeout=30)
        assert r.status_code == 200 and time.monotonic() - t0 < 5
        deadline = time.monotonic() + 5
        while (health := httpx.get(f"{url}/health").json())["active_rows"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health["active_rows"] == 0 and health["tap_hooks"] == 0
    # dropped rows left the batch early: far fewer row-steps than 10 full answers
    assert sum(rows_per_step) < 5 * 150 + 5 * 60


def test_sigterm_drains_and_exits_within_10_s(tmp_path):
    with served_process(tmp_path, "step = sm.decode_step\nsm.decode_step = lambda b: (time.sleep(0.05), step(b))") \
            as (proc, url):
        out: list = []
        started = threading.Event()
        t = threading.Thread(target=_stream, args=(url, chat_body(max_tokens=200, stream=True), None, out, started),
                             daemon=True)
        t.start()
        assert started.wait(60)  # the stream is running
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        # uvicorn re-raises the captured SIGTERM once it has shut down gracefully
        assert time.monotonic() - t0 < 10 and proc.returncode in (0, -signal.SIGTERM)
        t.join(10)
        assert out and out[0][-1] == "data: [DONE]"  # the cut answer still ends cleanly
        assert "shutting down" in out[0][-2]


@pytest.fixture(scope="module")
def fuzz_client():
    from fastapi.testclient import TestClient

    return TestClient(create_app(tiny_model(response_bias=0.0), ServerConfig(model_name="tiny")))


def _check(resp) -> None:
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(body=chat_bodies())
def test_fuzz_chat_never_5xx(fuzz_client, body):
    raw = json.dumps(body, allow_nan=True).encode()
    if body.get("stream") is True:
        with fuzz_client.stream("POST", "/v1/chat/completions", content=raw) as r:
            lines = list(r.iter_lines())
        assert r.status_code < 500
        if r.status_code == 200:
            assert [ln for ln in lines if ln][-1] == "data: [DONE]"
        return
    _check(fuzz_client.post("/v1/chat/completions", content=raw))


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(body=moderation_bodies() | any_json)
def test_fuzz_moderations_never_5xx(fuzz_client, body):
    _check(fuzz_client.post("/v1/moderations", content=json.dumps(body, allow_nan=True).encode()))



def test_openapi_document_carries_the_request_bodies():
    doc = create_app(tiny_model(), ServerConfig(model_name="tiny")).openapi()
    body = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ChatRequest"}
    assert {"ChatRequest", "ModerationRequest", "ChatMessage", "TextPart"} <= set(doc["components"]["schemas"])


def test_405_names_the_allowed_methods():
    with live_server(create_app(tiny_model(), ServerConfig(model_name="tiny"))) as url:
        for method, path, allowed in (("POST", "/health", "GET"), ("GET", "/v1/chat/completions", "POST"),
                                      ("DELETE", "/v1/moderations", "POST")):
            r = httpx.request(method, f"{url}{path}", timeout=10)
            assert r.status_code == 405 and r.headers.get("allow") == allowed, (path, r.headers)
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def _ranges(schema: dict) -> dict:
    """minimum/maximum of a property, looking into anyOf branches."""
    out = {k: schema[k] for k in ("minimum", "maximum") if k in schema}
    for branch in schema.get("anyOf", []):
        out |= _ranges(branch)
    return out


def test_openapi_document_lists_the_errors_and_value_ranges():
    with live_server(create_app(tiny_model(), ServerConfig(model_name="tiny"))) as url:
        doc = httpx.get(f"{url}/openapi.json", timeout=10).json()
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for path in ("/v1/chat/completions", "/v1/moderations"):
        responses = doc["paths"][path]["post"]["responses"]
        assert {"400", "401", "404", "413", "429", "503"} <= set(responses), (path, set(responses))
        assert all(responses[c]["content"]["application/json"]["schema"] == error
                   for c in ("400", "401", "404", "413", "429", "503"))
    assert "text/event-stream" in doc["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert "401" in doc["paths"]["/v1/models"]["get"]["responses"]
    assert "404" in doc["paths"]["/v1/models/{model_id}"]["get"]["responses"]
    # the server answers a bad request with a 400, never FastAPI's 422
    assert not [p for p, ops in doc["paths"].items() for op in ops.values() if "422" in op["responses"]]
    chat = doc["components"]["schemas"]["ChatRequest"]["properties"]
    assert _ranges(chat["temperature"]) == {"minimum": 0, "maximum": 2}
    assert _ranges(chat["alignment"]) == {"minimum": 0, "maximum": 1}
    assert _ranges(chat["top_p"]) == {"minimum": 1, "maximum": 1}  # only top_p = 1 is served
    assert _ranges(chat["presence_penalty"]) == {"minimum": 0, "maximum": 0}
    assert _ranges(chat["max_tokens"]) == {"minimum": 1, "maximum": 1_000_000}
    assert set(doc["components"]["schemas"]["ErrorResponse"]["properties"]) == {"error"}
    # what the server refuses the schema excludes (schemathesis sent logprobs: true and input: [] as valid)
    assert chat["logprobs"]["anyOf"][0] == {"const": False, "type": "boolean"}
    moderation = doc["components"]["schemas"]["ModerationRequest"]["properties"]["input"]["anyOf"]
    assert all(b.get("minItems") == 1 for b in moderation if b.get("type") == "array")
    stop = {"minLength": 1, "maxLength": 256, "type": "string"}
    assert chat["stop"]["anyOf"][:2] == [stop, {"items": stop, "maxItems": 4, "type": "array"}]
