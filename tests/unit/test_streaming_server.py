"""Streaming generation with the response guard, and the OpenAI-compatible server, on tiny models."""

import json

import pytest
import torch
from fastapi.testclient import TestClient

from dsa.align.logit_adapter import LogitAdapter, LogitAdapterSpec
from dsa.align.policy import make_policy
from dsa.guards import GuardBank
from dsa.guards.bank import GuardAdapter
from dsa.guards.heads import build_head
from dsa.runtime import SafetyModel
from dsa.server import create_app

from .align_tiny import ForwardCounter, ProbeBank, tiny_base

PROMPT = "how to do a bad thing quickly"


def _plr_bank(base, bias: float) -> GuardBank:
    cfg = {"layers": [1, 2], "poolings": ["mean", "last"]}
    torch.manual_seed(0)
    head = build_head("plr", base.d_model, 1, cfg)
    with torch.no_grad():
        head.net.bias.fill_(bias)
    return GuardBank([GuardAdapter("plr", "prompt_safety", "prompt", ["unsafe"], cfg, head, [1.0], [0.5])])


def _model(response_bias: float | None = None, adapter: bool = True) -> SafetyModel:
    base = tiny_base("llama", layers=4)
    lad = None
    if adapter:
        lad = LogitAdapter(base, LogitAdapterSpec(k=2))
        for p in lad.trainable_parameters():
            p.data.add_(torch.randn_like(p) * 0.2)
    rbank = None if response_bias is None else ProbeBank("layers.2.resid_post", base.d_model, bias=response_bias)
    return SafetyModel(base, _plr_bank(base, 0.0), lad, make_policy("step"), response_guards=rbank)


@pytest.mark.parametrize("alignment", [0.0, 1.0, "auto"])
def test_stream_matches_generate(alignment):
    sm = _model()
    full = sm.generate([PROMPT], alignment=alignment, max_new_tokens=8)[0]
    events = list(sm.stream(PROMPT, alignment=alignment, max_new_tokens=8))
    assert "".join(e.text for e in events) == full.text
    assert [e.stop_reason for e in events[:-1]] == [None] * (len(events) - 1)
    assert events[-1].stop_reason == full.stop_reason
    assert {e.lam for e in events} == {full.lam}
    assert events[-1].guard_scores == pytest.approx(full.guard_scores)


def test_response_guard_stops_generation_and_costs_no_extra_prefill():
    sm = _model(response_bias=50.0)  # flags every transcript
    counter = ForwardCounter(sm.base.model.model)
    res = sm.generate([PROMPT, "hello"], alignment=0.0, max_new_tokens=8)
    counter.remove()
    assert [r.stop_reason for r in res] == ["guard", "guard"]
    assert all(r.n_tokens == 0 for r in res)  # the flagged first token is scored before it is shown
    assert sum(n > 1 for n in counter.seq_lens) == 1  # one prefill, then one-token steps


def test_response_guard_that_never_fires_changes_nothing():
    quiet, plain = _model(response_bias=-50.0), _model()
    a = quiet.generate([PROMPT], alignment=0.0, max_new_tokens=8)[0]
    b = plain.generate([PROMPT], alignment=0.0, max_new_tokens=8)[0]
    assert a.token_ids == b.token_ids and a.stop_reason == b.stop_reason
    last = list(quiet.stream(PROMPT, alignment=0.0, max_new_tokens=4))[-1]
    assert 0.0 <= last.response_scores["unsafe"] < 0.5


@pytest.fixture
def client():
    return TestClient(create_app(_model(), model_name="tiny"))


def test_health_and_moderations(client):
    health = client.get("/health").json()
    assert health["guard_heads"] == ["prompt_safety/unsafe"] and health["alignment_adapter"]
    mod = client.post("/v1/moderations", json={"input": ["hello", PROMPT]}).json()
    assert len(mod["results"]) == 2
    r = mod["results"][0]
    assert set(r["category_scores"]) == {"prompt_safety/unsafe"}
    assert r["flagged"] == any(r["categories"].values())


def test_chat_completion_reports_guard_scores_and_lambda(client):
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 6, "alignment": 1.0}
    r = client.post("/v1/chat/completions", json=body).json()
    assert r["object"] == "chat.completion" and r["model"] == "tiny"
    assert r["dsa"]["alignment_lambda"] == 1.0
    assert set(r["dsa"]["guard_scores"]) == {"prompt_safety/unsafe"}
    assert r["choices"][0]["finish_reason"] in ("stop", "length")
    assert r["usage"]["completion_tokens"] <= 6


def test_streamed_chat_equals_the_plain_one(client):
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 6, "alignment": "auto"}
    plain = client.post("/v1/chat/completions", json=body).json()
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as resp:
        lines = [ln for ln in resp.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert chunks[-1]["dsa"]["alignment_lambda"] == plain["dsa"]["alignment_lambda"]


@pytest.mark.parametrize("body", [
    {"messages": []},
    {"messages": [{"role": "user", "content": "hi"}], "alignment": "max"},
    {"messages": [{"role": "wizard", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
])
def test_bad_requests_are_422(client, body):
    assert client.post("/v1/chat/completions", json=body).status_code == 422


def test_alignment_without_adapter_is_refused():
    c = TestClient(create_app(_model(adapter=False)))
    r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "alignment": 0.5})
    assert r.status_code == 422 and "adapter" in r.json()["detail"]
