"""Streaming generation with the response guard, and the OpenAI-compatible server, on tiny models."""

import json

import pytest
from fastapi.testclient import TestClient

from dsa.serve import ServerConfig, create_app

from .align_tiny import ForwardCounter
from .server_tiny import PROMPT, chat_body, tiny_model


@pytest.mark.parametrize("alignment", [0.0, 1.0, "auto"])
def test_stream_matches_generate(alignment):
    sm = tiny_model()
    full = sm.generate([PROMPT], alignment=alignment, max_new_tokens=8)[0]
    events = list(sm.stream(PROMPT, alignment=alignment, max_new_tokens=8))
    assert "".join(e.text for e in events) == full.text
    assert [e.stop_reason for e in events[:-1]] == [None] * (len(events) - 1)
    assert events[-1].stop_reason == full.stop_reason
    assert {e.lam for e in events} == {full.lam}
    assert events[-1].guard_scores == pytest.approx(full.guard_scores)


def test_response_guard_stops_generation_and_costs_no_extra_prefill():
    sm = tiny_model(response_bias=50.0)  # flags every transcript
    counter = ForwardCounter(sm.base.model.model)
    res = sm.generate([PROMPT, "hello"], alignment=0.0, max_new_tokens=8)
    counter.remove()
    assert [r.stop_reason for r in res] == ["guard", "guard"]
    assert all(r.n_tokens == 0 for r in res)  # the flagged first token is scored before it is shown
    assert sum(n > 1 for n in counter.seq_lens) == 1  # one prefill, then one-token steps


def test_response_guard_that_never_fires_changes_nothing():
    quiet, plain = tiny_model(response_bias=-50.0), tiny_model()
    a = quiet.generate([PROMPT], alignment=0.0, max_new_tokens=8)[0]
    b = plain.generate([PROMPT], alignment=0.0, max_new_tokens=8)[0]
    assert a.token_ids == b.token_ids and a.stop_reason == b.stop_reason
    last = list(quiet.stream(PROMPT, alignment=0.0, max_new_tokens=4))[-1]
    assert 0.0 <= last.response_scores["unsafe"] < 0.5


def test_abandoned_stream_leaves_no_hooks():
    from dsa.taps import hook_count

    sm = tiny_model(response_bias=-50.0)
    before = hook_count(sm.base.model)
    it = sm.stream(PROMPT, alignment=1.0, max_new_tokens=8)
    next(it)
    assert hook_count(sm.base.model) == before  # hooks never outlive one forward call
    del it
    assert hook_count(sm.base.model) == before


@pytest.fixture
def client():
    return TestClient(create_app(tiny_model(), model_name="tiny"))


def test_health_models_and_moderations(client):
    health = client.get("/health").json()
    assert health["guard_heads"] == ["prompt_safety/unsafe"] and health["alignment_adapter"]
    assert health["status"] == "ok" and health["guarded"] and health["tap_hooks"] == 0
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
    mod = client.post("/v1/moderations", json={"input": ["hello", PROMPT]}).json()
    assert len(mod["results"]) == 2
    r = mod["results"][0]
    assert set(r["category_scores"]) == {"prompt_safety/unsafe"}
    assert r["flagged"] == any(r["categories"].values())
    # raw scores are not exposed by default: category_scores carry the flags
    assert r["category_scores"]["prompt_safety/unsafe"] == float(r["categories"]["prompt_safety/unsafe"])


def test_chat_completion_reports_lambda_not_scores(client):
    r = client.post("/v1/chat/completions", json=chat_body(alignment=1.0)).json()
    assert r["object"] == "chat.completion" and r["model"] == "tiny"
    assert r["dsa"]["alignment_lambda"] == 1.0 and r["dsa"]["alignment_policy"] == "floor"
    assert "guard_scores" not in r["dsa"]
    assert r["choices"][0]["finish_reason"] in ("stop", "length")
    assert r["usage"]["completion_tokens"] <= 6


def test_streamed_chat_equals_the_plain_one(client):
    body = chat_body(alignment="auto")
    plain = client.post("/v1/chat/completions", json=body).json()
    with client.stream("POST", "/v1/chat/completions",
                       json={**body, "stream": True, "stream_options": {"include_usage": True}}) as resp:
        lines = [ln for ln in resp.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    usage = chunks.pop()
    assert usage["choices"] == [] and usage["usage"] == plain["usage"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert chunks[-1]["dsa"]["alignment_lambda"] == plain["dsa"]["alignment_lambda"]


def test_alignment_without_adapter_is_refused():
    with pytest.raises(ValueError, match="alignment adapter"):
        create_app(tiny_model(adapter=False))
    c = TestClient(create_app(tiny_model(adapter=False), ServerConfig(allow_unguarded=True)))
    health = c.get("/health").json()
    assert health["status"] == "unguarded" and not health["guarded"] and "WITHOUT" in health["warning"]
    r = c.post("/v1/chat/completions", json=chat_body(alignment=0.5))
    assert r.status_code == 400 and "adapter" in r.json()["error"]["message"]
    assert c.post("/v1/chat/completions", json=chat_body()).status_code == 200  # λ = 0: unaligned
