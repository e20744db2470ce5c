"""Server policy (fail closed), API keys, limits, OpenAI error shape and conformance, on tiny models."""

import json

import pytest
import torch
from fastapi.testclient import TestClient

from dsa.serve import ServerConfig, create_app, load_api_keys
from dsa.serve.config import ApiKey, _digest

from .server_tiny import PROMPT, chat_body, plr_bank, tiny_model

OPS, ALICE = "ops-key-0123456789abcdef", "alice-key-0123456789abcd"


def _keys() -> list[ApiKey]:
    return [ApiKey("ops", _digest(OPS), frozenset({"override", "scores"})), ApiKey("alice", _digest(ALICE))]


def _client(sm=None, **cfg) -> TestClient:
    return TestClient(create_app(sm or tiny_model(), ServerConfig(model_name="tiny", **cfg)))


def _error(r, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


BAD_CHAT = [
    ({"messages": []}, "messages"),
    (chat_body(alignment="max"), "alignment"),
    (chat_body(alignment=-5), "alignment"),
    (chat_body(alignment=1000), "alignment"),
    (chat_body(alignment=True), "alignment"),
    (chat_body(temperature=3.0), "temperature"),
    (chat_body(seed=2**63), "seed"),
    (chat_body(max_tokens=0), "max_tokens"),
    (chat_body(n=2), "n"),
    (chat_body(top_p=0.5), "top_p"),
    (chat_body(logprobs=True), "logprobs"),
    (chat_body(stop=["a", "b", "c", "d", "e"]), "stop"),
    (chat_body(tools=[{"type": "function"}]), "tools"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, "messages.0.content"),
    (chat_body(max_tokens=10_000), "max_tokens"),  # past the tiny model's 256-token context
]


@pytest.mark.parametrize("body,param", BAD_CHAT)
def test_bad_chat_requests_are_400_in_openai_shape(body, param):
    err = _error(_client().post("/v1/chat/completions", json=body), 400)
    assert err["type"] == "invalid_request_error" and err["param"] == param


@pytest.mark.parametrize("raw", [
    b'{"messages": [{"role": "user", "content": "\\ud800"}]}',  # a lone surrogate
    b'{"messages": [{"role": "user", "content": "hi"}], "alignment": NaN}',
    b'{"messages": [{"role": "user", "content": "hi"}], "alignment": Infinity}',
    b'{"messages": [{"role": "user", "content": "hi"}], "alignment": -Infinity}',
    b'{"messages": [{"role": "user", "content": "hi"}], "alignment": 1e400}',
    b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e400}',
    b'{"messages": [{"role": "user", "content": "hi"}',  # truncated JSON
    b'[1, 2]',
    b'\xff\xfe\x00',
])
def test_hostile_bodies_are_400(raw):
    _error(_client().post("/v1/chat/completions", content=raw), 400)


def test_moderation_limits():
    c = _client(max_moderation_inputs=3)
    _error(c.post("/v1/moderations", json={"input": []}), 400)
    _error(c.post("/v1/moderations", json={"input": ["a"] * 4}), 400)
    _error(c.post("/v1/moderations", content=b'{"input": "\\udc00"}'), 400)
    assert c.post("/v1/moderations", json={"input": [{"type": "text", "text": "a"}]}).status_code == 200


def test_tiny_temperature_and_extreme_seed_are_served():
    c = _client()
    r = c.post("/v1/chat/completions", json=chat_body(temperature=1e-300, seed=2**63 - 1))
    assert r.status_code == 200, r.text
    r = c.post("/v1/chat/completions", json=chat_body(temperature=2.0, seed=-(2**63)))
    assert r.status_code == 200, r.text


def test_limits_prompt_body_and_queue():
    c = _client(max_prompt_tokens=16)
    err = _error(c.post("/v1/chat/completions", json=chat_body("x " * 40)), 400)
    assert err["code"] == "context_length_exceeded"
    _error(_client(max_body_bytes=100).post("/v1/chat/completions", json=chat_body("y" * 200)), 413)
    _error(_client(max_queue=0).post("/v1/chat/completions", json=chat_body()), 429)


def test_client_lambda_is_a_floor_without_an_override_key():
    flagged = tiny_model(guard_bias=50.0)  # the guard flags every prompt: policy λ = 1
    r = _client(flagged).post("/v1/chat/completions", json=chat_body(alignment=0)).json()
    assert r["dsa"]["alignment_lambda"] == 1.0 and r["dsa"]["alignment_policy"] == "floor"
    benign = tiny_model(guard_bias=-50.0)  # policy λ = 0: a client may still raise it
    r = _client(benign).post("/v1/chat/completions", json=chat_body(alignment=0.7)).json()
    assert r["dsa"]["alignment_lambda"] == pytest.approx(0.7)


def test_override_key_may_lower_lambda_and_see_scores():
    c = _client(tiny_model(guard_bias=50.0), api_keys=_keys())
    _error(c.post("/v1/chat/completions", json=chat_body()), 401)
    _error(c.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": "Bearer nope"}), 401)
    _error(c.get("/v1/models"), 401)
    assert c.get("/health").status_code == 200  # probes need no key
    alice = c.post("/v1/chat/completions", json=chat_body(alignment=0),
                   headers={"Authorization": f"Bearer {ALICE}"}).json()
    assert alice["dsa"]["alignment_lambda"] == 1.0 and "guard_scores" not in alice["dsa"]
    ops = c.post("/v1/chat/completions", json=chat_body(alignment=0),
                 headers={"Authorization": f"Bearer {OPS}"}).json()
    assert ops["dsa"]["alignment_lambda"] == 0.0 and ops["dsa"]["alignment_policy"] == "override"
    assert ops["dsa"]["guard_scores"]["prompt_safety/unsafe"] > 0.5
    mod = c.post("/v1/moderations", json={"input": PROMPT}, headers={"Authorization": f"Bearer {OPS}"}).json()
    assert mod["results"][0]["category_scores"]["prompt_safety/unsafe"] > 0.5


def _ramp_model(score: float):
    """A tiny model under the sigmoid policy whose guard scores PROMPT `score` (on the ramp below
    the 0.5 threshold, where λ is a continuous function of the score)."""
    from dsa.align.policy import make_policy

    sm = tiny_model()
    head = sm.guards.adapters[0].head
    got = sm.classify([[{"role": "user", "content": PROMPT}]])[0]["scores"]["prompt_safety/unsafe"]
    with torch.no_grad():
        head.net.bias.add_(float(torch.logit(torch.tensor(score)) - torch.logit(torch.tensor(got))))
    sm.policy = make_policy("sigmoid", threshold=0.5)
    return sm


def test_a_ramp_policy_does_not_publish_the_score_through_lambda():
    c = _client(_ramp_model(0.42), api_keys=_keys())
    alice, ops = ({"Authorization": f"Bearer {k}"} for k in (ALICE, OPS))
    seen = c.post("/v1/chat/completions", json=chat_body(), headers=ops).json()["dsa"]
    assert 0.3 < seen["guard_scores"]["prompt_safety/unsafe"] < 0.5 and 0 < seen["alignment_lambda"] < 1
    for body in (chat_body(), chat_body(alignment=0.1)):  # auto, and a floor under the policy's λ
        hidden = c.post("/v1/chat/completions", json=body, headers=alice).json()["dsa"]
        assert hidden["alignment_lambda"] is None and "guard_scores" not in hidden
        assert hidden["alignment_policy"] == ("auto" if "alignment" not in body else "floor")
    with c.stream("POST", "/v1/chat/completions", json={**chat_body(), "stream": True}, headers=alice) as resp:
        last = [json.loads(ln[6:]) for ln in resp.iter_lines() if ln.startswith("data: {")][-1]
    assert last["dsa"]["alignment_lambda"] is None
    fixed = c.post("/v1/chat/completions", json=chat_body(alignment=0.3), headers=ops).json()["dsa"]
    assert fixed["alignment_lambda"] == pytest.approx(0.3)  # an override key's own λ is no secret


def test_api_keys_file(tmp_path):
    f = tmp_path / "keys.json"
    f.write_text(json.dumps([{"key": OPS, "name": "ops", "permissions": ["override"]}]))
    (key,) = load_api_keys(f)
    assert key.name == "ops" and key.permissions == {"override"} and OPS not in repr(key)
    f.write_text(json.dumps([{"key": "short"}]))
    with pytest.raises(ValueError, match="16 characters"):
        load_api_keys(f)
    f.write_text(json.dumps([{"key": OPS, "permissions": ["root"]}]))
    with pytest.raises(ValueError, match="unknown permissions"):
        load_api_keys(f)


def test_unknown_model_and_route_are_404():
    c = _client()
    assert _error(c.post("/v1/chat/completions", json=chat_body(model="gpt-4")), 404)["code"] == "model_not_found"
    _error(c.get("/v1/nothing"), 404)
    _error(c.get("/v1/chat/completions"), 405)


def test_stop_sequences_and_multipart_content():
    c = _client()
    sampled = dict(max_tokens=12, temperature=1.0, seed=3)
    plain = c.post("/v1/chat/completions", json=chat_body(**sampled)).json()["choices"][0]["message"]["content"]
    k = next(i for i in range(1, len(plain)) if plain[i] not in plain[:i])  # a first occurrence
    cut = c.post("/v1/chat/completions", json=chat_body(**sampled, stop=["zz", plain[k:k + 2]])).json()
    assert cut["choices"][0]["message"]["content"] == plain[:k]
    assert cut["choices"][0]["finish_reason"] == "stop"
    parts = [{"type": "text", "text": "how to do"}, {"type": "text", "text": "a bad thing quickly"}]
    a = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": parts}], "max_tokens": 6})
    b = c.post("/v1/chat/completions", json=chat_body("how to do\na bad thing quickly"))
    assert a.status_code == 200 and a.json()["choices"] == b.json()["choices"]
    mc = c.post("/v1/chat/completions", json=chat_body(max_tokens=None, max_completion_tokens=2)).json()
    assert mc["usage"]["completion_tokens"] <= 2


def test_guard_stop_is_content_filter_and_streams_end_with_done():
    c = _client(tiny_model(response_bias=50.0))
    r = c.post("/v1/chat/completions", json=chat_body()).json()
    assert r["choices"][0]["finish_reason"] == "content_filter" and r["choices"][0]["message"]["content"] == ""
    with c.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as resp:
        lines = [ln for ln in resp.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "content_filter"


def test_a_failure_mid_stream_is_an_error_event_then_done():
    sm = tiny_model()
    calls = []

    def broken(batch):
        calls.append(1)
        raise RuntimeError("boom")

    sm.decode_step = broken
    with _client(sm).stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as resp:
        lines = [ln for ln in resp.iter_lines() if ln.startswith("data: ")]
    assert resp.status_code == 200 and lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["error"]["type"] == "server_error"


def test_moderation_and_chat_give_one_score_for_a_long_prompt():
    sm = tiny_model()
    sm.guards = plr_bank(sm.base, 0.0, max_length=12)  # the prompt is longer: both paths left-truncate
    c = _client(sm, expose_scores=True)
    long = PROMPT + " and then some more words about it"
    chat = c.post("/v1/chat/completions", json=chat_body(long, max_tokens=1)).json()["dsa"]["guard_scores"]
    mod = c.post("/v1/moderations", json={"input": long}).json()["results"][0]["category_scores"]
    assert chat == pytest.approx(mod, abs=1e-6)


@pytest.mark.parametrize("cfg", [{}, {"max_prefill_tokens": 16}])  # 16: each prompt read in slices
def test_concurrent_requests_share_decode_steps_and_match_solo_answers(cfg):
    import threading

    sm = tiny_model()
    sizes = []
    step = sm.decode_step

    def counting(batch):
        sizes.append(len(batch))
        step(batch)

    sm.decode_step = counting
    c = _client(sm, batch_window_s=0.2, **cfg)
    prompts = ["hello there", PROMPT, "what is two plus two", "tell me a poem"]
    solo = {p: c.post("/v1/chat/completions", json=chat_body(p)).json()["choices"][0]["message"]["content"]
            for p in prompts}
    sizes.clear()
    out = {}

    def ask(p):
        out[p] = c.post("/v1/chat/completions", json=chat_body(p)).json()["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(sizes) > 1  # rows of several requests in one decode step
    assert out == solo


def test_dsa_serve_refuses_to_start_unguarded(tmp_path, monkeypatch, capsys):
    from dsa.cli import main

    monkeypatch.chdir(tmp_path)  # no adapters/ here
    assert main(["serve", "--port", "1"]) == 2
    assert "refusing to start without a prompt guard" in capsys.readouterr().err
