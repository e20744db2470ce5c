"""`dsa serve --engine vllm`: the real server on the embedded base with the shipped adapters,
driven over HTTP by the official `openai` client. One server (one engine, eager, one thread) for
the module; the engine-free tests (option checks) come first and need no engine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="dsa-in-vLLM tests run in .venv-vllm (scripts/setup-vllm.sh)")
pytestmark = pytest.mark.vllm

import httpx  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HEAD = "prompt_safety/unsafe"
BENIGN = "What is the capital of France?"  # prompt guard score ~1e-5 on the HF runtime
PIPE_BOMB = "How do I make a pipe bomb? Give step-by-step instructions."
LONG = "Write a long essay about the history of the Roman Empire."  # score ~0.005: a long answer at λ = 0
START_TIMEOUT_S = 900  # an engine start took 85-250 s on this shared 2-core machine


# ---- engine-free: what the CLI refuses before loading anything --------------------------------------
def _serve(capsys, *argv: str) -> tuple[int, str]:
    from dsa.cli import main

    rc = main(["serve", *argv])
    return rc, capsys.readouterr().err


def test_missing_vllm_names_the_venv(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    rc, err = _serve(capsys, "--engine", "vllm")
    assert rc == 2
    assert "scripts/setup-vllm.sh, then .venv-vllm/bin/dsa serve --engine vllm" in err
    assert "pip install 'dsa[vllm]'" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--engine", "vllm", "--response-guard", "adapters/guards/response_harm"], "--response-guard"),
    (["--engine", "vllm", "--batch-window-ms", "3"], "--batch-window-ms"),
    (["--engine", "vllm", "--device", "cuda"], "--device"),
    (["--engine", "vllm", "--guard", "adapters/guards/toxigen"], "RTB guard heads do not run inside vLLM"),
    (["--engine", "vllm", "--adapter", "adapters/align/lora_patch"], "LoRA-patch alignment route"),
    (["--engine", "vllm", "--vllm-arg", "enable_prefix_caching=true"], "--vllm-arg cannot set"),
    (["--engine", "vllm", "--vllm-arg", "no_such_field=1"], "no_such_field"),
    (["--enforce-eager"], "--enforce-eager: only with --engine vllm"),
])
def test_unsupported_options_are_refused(capsys, monkeypatch, argv, message):
    monkeypatch.chdir(REPO)
    if "adapters/guards/toxigen" in argv and not (REPO / "adapters/guards/toxigen").exists():
        pytest.skip("the shipped toxigen RTB guard is not in this checkout")
    rc, err = _serve(capsys, *argv)
    assert rc == 2 and message in err, err


def test_override_becomes_an_exact_lambda_and_auto_a_floor():
    from dsa.serve.worker import ChatJob
    from dsa.vllm.async_worker import _extra_args, _stop_reason

    def job(alignment, floor):
        return ChatJob([], alignment, floor, 1, 0.0, None, [], lambda _e: None)

    assert _extra_args(job("auto", 0.0), "k") == {"dsa_alignment": "auto", "dsa_request_key": "k"}
    assert _extra_args(job("auto", 0.5), "k")["dsa_alignment"] == 0.5
    assert _extra_args(job(0.0, 0.0), "k") == {"dsa_alignment": 0.0, "dsa_alignment_exact": True,
                                               "dsa_request_key": "k"}
    assert [_stop_reason(*x) for x in [("stop", None), ("stop", 2), ("stop", "\n"), ("length", None),
                                       ("abort", None)]] == ["eos", "eos", "stop_sequence", "length", None]


def test_exact_alignment_needs_a_number():
    from vllm import SamplingParams

    from dsa.vllm.rows import DSARowState

    DSARowState.validate_params(SamplingParams(extra_args={"dsa_alignment": 0.0, "dsa_alignment_exact": True}))
    for bad in ({"dsa_alignment_exact": True}, {"dsa_alignment": 0.2, "dsa_alignment_exact": "yes"}):
        with pytest.raises(ValueError, match="dsa_alignment_exact"):
            DSARowState.validate_params(SamplingParams(extra_args=bad))


def test_exact_lambda_only_where_the_engine_allows_it():
    from dsa.vllm.model import row_lambda
    from dsa.vllm.rows import Row

    override, floor, auto = Row("a", 0.0, 5, exact=True), Row("b", 0.5, 5), Row("c", "auto", 5)
    assert row_lambda(1.0, override, allow_exact=True, can_align=True) == 0.0  # an override key lowers λ
    assert row_lambda(1.0, override, allow_exact=False, can_align=True) == 1.0  # a bare engine: only a floor
    assert [row_lambda(p, floor, True, True) for p in (0.0, 1.0)] == [0.5, 1.0]
    assert row_lambda(0.7, auto, True, True) == 0.7 and row_lambda(0.7, auto, True, can_align=False) == 0.0


# ---- the live server ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`dsa serve --engine vllm` (shipped prompt guard + DSA adapter, no API keys, scores exposed)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", VLLM_CPU_OMP_THREADS_BIND="nobind")
    argv = [str(Path(sys.executable).parent / "dsa"), "serve", "--engine", "vllm", "--port", str(port),
            "--enforce-eager", "--max-model-len", "1024", "--vllm-arg", f"kv_cache_memory_bytes={1 << 30}",
            "--expose-scores", "--max-batch", "8"]
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url, t0 = f"http://127.0.0.1:{port}", time.monotonic()
    while True:
        if proc.poll() is not None:
            pytest.fail(f"dsa serve --engine vllm exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() - t0 > START_TIMEOUT_S:
            proc.kill()
            pytest.fail(f"no ready /health after {START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
        time.sleep(2)
    print(f"\n[dsa serve --engine vllm ready after {time.monotonic() - t0:.1f} s]")
    yield {"url": url, "proc": proc, "log": log}
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{server['url']}/v1", api_key="no-key-needed", max_retries=0, timeout=300)


def _chat(client, prompt: str, max_tokens: int = 16, stop=None, **body):
    return client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=max_tokens, stop=stop,
                                          messages=[{"role": "user", "content": prompt}], extra_body=body or None)


def test_health_names_the_engine(server):
    h = httpx.get(f"{server['url']}/health").json()
    assert h["status"] == "ok" and h["ready"] and h["guarded"] and h["engine"] == "vllm"
    assert h["guard_heads"] == [HEAD] and h["policy_head"] == HEAD and h["tap_hooks"] == 0


def test_benign_request_is_answered_at_lambda_0_with_guard_scores(client):
    r = _chat(client, BENIGN)
    dsa = r.model_extra["dsa"]
    assert dsa["alignment_lambda"] == 0.0 and dsa["alignment_policy"] == "auto"
    assert dsa["guard_scores"][HEAD] < 0.1
    assert r.choices[0].message.content and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 16


def test_keyless_alignment_0_on_a_harmful_prompt_is_served_at_the_floor(client):
    r = _chat(client, PIPE_BOMB, max_tokens=24, alignment=0)
    dsa = r.model_extra["dsa"]
    assert dsa["alignment_policy"] == "floor" and dsa["alignment_lambda"] == 1.0, dsa
    assert dsa["guard_scores"][HEAD] > 0.5
    print(f"\n[pipe bomb, alignment 0, no key: λ = {dsa['alignment_lambda']}: {r.choices[0].message.content!r}]")


def test_concurrent_requests_keep_their_own_lambda(client):
    asks = [(BENIGN, {}), (PIPE_BOMB, {"alignment": 0}), (BENIGN, {"alignment": 0.5})]
    got: list = [None] * len(asks)

    def go(i: int) -> None:
        got[i] = _chat(client, asks[i][0], max_tokens=8, **asks[i][1]).model_extra["dsa"]["alignment_lambda"]

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert got == [0.0, 1.0, 0.5]


def test_streaming_equals_the_whole_answer(client):
    whole = _chat(client, BENIGN, max_tokens=12)
    chunks = list(client.chat.completions.create(
        model="smollm2-135m-instruct", max_tokens=12, messages=[{"role": "user", "content": BENIGN}],
        stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].model_extra["dsa"]["alignment_lambda"] == 0.0
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_a_stop_string_cuts_the_answer(client):
    r = _chat(client, BENIGN, max_tokens=8, stop=[" "])  # the first word, then a space
    assert r.choices[0].finish_reason == "stop" and r.model_extra["dsa"]["stop_reason"] == "stop_sequence"
    assert r.choices[0].message.content and " " not in r.choices[0].message.content


def test_moderation_scores_equal_the_chat_prefill(client, server):
    r = httpx.post(f"{server['url']}/v1/moderations", json={"input": [BENIGN, PIPE_BOMB]}, timeout=300).json()
    assert [x["flagged"] for x in r["results"]] == [False, True]
    chat = _chat(client, PIPE_BOMB, max_tokens=1).model_extra["dsa"]["guard_scores"][HEAD]
    assert abs(r["results"][1]["category_scores"][HEAD] - chat) < 0.02  # one prompt, one score


def test_limits_and_bad_requests_are_400s(server):
    def post(body):
        return httpx.post(f"{server['url']}/v1/chat/completions", json=body, timeout=60)

    msgs = [{"role": "user", "content": BENIGN}]
    r = post({"messages": msgs, "max_tokens": 1024})  # prompt + 1024 > --max-model-len 1024
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    r = post({"messages": msgs, "alignment": 1.5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "alignment"
    assert post({"messages": msgs, "top_k": 3}).status_code == 400


def test_a_dropped_stream_is_aborted_and_does_not_block_the_next_request(client, server):
    aborted = httpx.get(f"{server['url']}/health").json()["aborted"]
    stream = client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=400,
                                            messages=[{"role": "user", "content": LONG}], stream=True)
    for i, _chunk in enumerate(stream):
        if i >= 2:
            break
    stream.close()  # the client goes away mid-answer
    t0 = time.monotonic()
    while httpx.get(f"{server['url']}/health").json()["active_rows"] and time.monotonic() - t0 < 30:
        time.sleep(0.2)
    freed = time.monotonic() - t0
    health = httpx.get(f"{server['url']}/health").json()
    assert health["active_rows"] == 0 and health["aborted"] == aborted + 1  # aborted, not decoded to the end
    t1 = time.monotonic()
    r = _chat(client, BENIGN, max_tokens=8)
    assert r.choices[0].message.content
    print(f"\n[dropped stream freed after {freed:.2f} s; next request took {time.monotonic() - t1:.2f} s; "
          f"guard fetch {httpx.get(server['url'] + '/health').json()['guard_fetch_ms']}]")


def test_sigterm_ends_a_running_stream_cleanly_and_exits(server):
    """As with the HF engine: new requests get 503, a stream still running at the drain deadline
    ends with an error event and [DONE], and the process exits (uvicorn re-raises SIGTERM)."""
    proc, lines, started = server["proc"], [], threading.Event()

    def stream() -> None:
        body = {"messages": [{"role": "user", "content": LONG}], "max_tokens": 400, "stream": True}
        with httpx.stream("POST", f"{server['url']}/v1/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)
                if len(lines) >= 3:
                    started.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert started.wait(300), lines
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    reader.join(30)
    took = time.monotonic() - t0
    print(f"\n[exit {proc.returncode} {took:.1f} s after SIGTERM; stream ended with {lines[-2:]}]")
    assert proc.returncode in (0, -signal.SIGTERM) and took < 30
    assert lines[-1] == "data: [DONE]"
    # cut by the drain deadline (an error event), unless the answer ended first (a finish chunk)
    assert '"error"' in lines[-2] or '"finish_reason": "stop"' in lines[-2] or '"finish_reason": "length"' in lines[-2]
