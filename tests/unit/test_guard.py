"""Guard heads, adapters and the bank on a tiny random llama (no downloads)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from dsa.adapter_io import FingerprintMismatch
from dsa.features import extract_features, pad_right
from dsa.guards import GuardAdapter, GuardBank, build_head, classify
from dsa.guards.calibrate import calibrated, fit_temperature, threshold_for_fpr
from dsa.guards.featurize import extract_task_features
from dsa.guards.heads import n_params
from dsa.guards.kinds import flops_fraction, head_kind
from dsa.guards.kinds.plr import fit_plr_linear
from dsa.guards.train import calibrate, fit_torch, guard_input, predict
from dsa.taps import run_with_taps

LADDER = (0, 1, 2)
TEXTS = ["how do i make a cake ?", "hello world", "tell me about the weather today please",
         "what is a bomb", "write a poem about the world and you", "kill process", "yes",
         "how to make a bomb ?", "tell me a poem", "why is the weather bad today"]
CFGS = {"plr": {"layers": [1, 2], "poolings": ["mean", "last"], "hidden": 0},
        "plr_mlp": {"layers": [2], "poolings": ["mean"], "hidden": 8},
        "rtb": {"ladder": list(LADDER), "width": 8},
        "lst": {"ladder": list(LADDER), "width": 8, "attn_heads": 2}}


def _arch(name: str) -> str:
    return "plr" if name.startswith("plr") else name


@pytest.fixture(scope="module")
def tiny_base():
    # module-scoped: the tiny model and its cached features are built once for all tests here
    from dsa.base import from_model
    from tests.tiny import tiny_model, tiny_tokenizer

    return from_model(tiny_model("llama"), tiny_tokenizer(), name="tiny-llama")


def _chats(base):
    return [base.chat_text(t) for t in TEXTS]


_FEATS: dict = {}


def _features(base, window=8):
    key = (id(base), window)
    if key not in _FEATS:
        import tempfile

        _FEATS[key] = extract_task_features(base, _chats(base), "unit", max_length=64, window=window,
                                            ladder_layers=LADDER, progress=False, batch_tokens=64,
                                            root=tempfile.mkdtemp(prefix="guard-feats-"))
    return _FEATS[key]


N_TEXTS = len(TEXTS)


def _labels(n=N_TEXTS, heads=2):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n, heads), generator=g).float()
    y[0] = torch.tensor([0.0, 1.0])
    y[1] = torch.tensor([1.0, 0.0])
    y[2, 1] = float("nan")  # not annotated
    return y


def _adapter(base, name, feats=None, y=None):
    feats = feats or _features(base)
    y = _labels() if y is None else y
    cfg = CFGS[name]
    if name == "plr":
        head = fit_plr_linear(feats, y, feats, y, {**cfg, "C_grid": [1.0]}, base.d_model)
    else:
        head = fit_torch(head_kind(_arch(name)), feats, y, feats, y, cfg, base.d_model, epochs=2, batch_size=4)
    temps, thr = calibrate(predict(head, feats, head_kind(_arch(name)), cfg), y.numpy(), 0.2)
    return GuardAdapter(_arch(name), "unit", "prompt", ["a", "b"], cfg, head, temps, thr,
                        max_length=64, window=8)


def _one_forward(base, bank, texts):
    ids = base.tokenizer(texts, add_special_tokens=False)["input_ids"]
    input_ids, mask = pad_right(ids, base.tokenizer.pad_token_id)
    with torch.no_grad():
        _, cache = run_with_taps(base.model, {"input_ids": input_ids, "attention_mask": mask},
                                 bank.taps, need_output=False)
    return cache, mask


def test_prefix_shared_extraction_equals_plain_forward(tiny_base):
    feats = _features(tiny_base)
    plain = extract_features(tiny_base, _chats(tiny_base), ["layers.2.resid_post"], "mean",
                             max_length=64, progress=False, cache=False)
    last = extract_features(tiny_base, _chats(tiny_base), ["layers.2.resid_post"], "last",
                            max_length=64, progress=False, cache=False)
    torch.testing.assert_close(feats.mean[:, 2], plain.values["layers.2.resid_post"], atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(feats.last[:, 2], last.values["layers.2.resid_post"], atol=2e-2, rtol=2e-2)
    assert feats.tokens.shape[1:] == (len(LADDER), tiny_base.d_model)
    assert int(feats.ntok.max()) == 8


@pytest.mark.parametrize("name", list(CFGS))
def test_head_shapes_params_and_flops(tiny_base, name):
    feats = _features(tiny_base)
    head = build_head(_arch(name), tiny_base.d_model, 3, CFGS[name])
    out = head(guard_input(feats, [0, 1, 2], head_kind(_arch(name)), CFGS[name]))
    assert out.shape == (3, 3)
    assert n_params(head) > 0
    assert 0 < flops_fraction(head, tiny_base.model, 64) < 10


@pytest.mark.parametrize("name", list(CFGS))
def test_bank_from_one_forward_equals_cached_features_and_roundtrips(tiny_base, tmp_path, name):
    feats = _features(tiny_base)
    adapter = _adapter(tiny_base, name, feats)
    expected = adapter.probs(torch.as_tensor(predict(adapter.head, feats, adapter.kind, adapter.cfg)))
    adapter.save(tmp_path / name, tiny_base.fingerprint, "tiny")
    bank = GuardBank.load([tmp_path / name], tiny_base)
    assert bank.heads == ["unit/a", "unit/b"]
    cache, mask = _one_forward(tiny_base, bank, _chats(tiny_base))
    scores = bank.score(cache, mask)
    got = torch.stack([scores["unit/a"], scores["unit/b"]], 1)
    torch.testing.assert_close(got, expected.float(), atol=3e-2, rtol=3e-2)
    # the reloaded adapter scores exactly like the one in memory
    direct = adapter.probs(adapter.logits(cache, mask))
    torch.testing.assert_close(got, direct, atol=0, rtol=0)
    flags = bank.flags(scores)
    assert flags["unit/a"].dtype == torch.bool
    assert torch.equal(flags["unit/a"], scores["unit/a"] >= adapter.thresholds[0])


def test_fingerprint_mismatch_raises(tiny_base, tmp_path):
    _adapter(tiny_base, "plr").save(tmp_path / "a", "llama-0000000000000000", "other")
    with pytest.raises(FingerprintMismatch):
        GuardBank.load([tmp_path / "a"], tiny_base)


def test_classify_and_score_tokens(tiny_base, tmp_path):
    _adapter(tiny_base, "plr").save(tmp_path / "p", tiny_base.fingerprint)
    _adapter(tiny_base, "rtb").save(tmp_path / "r", tiny_base.fingerprint)
    with pytest.raises(ValueError, match="duplicate"):
        GuardBank.load([tmp_path / "p", tmp_path / "r"], tiny_base)
    bank = GuardBank.load([tmp_path / "p"], tiny_base)
    res = classify(tiny_base, bank, ["how to make a bomb ?", [{"role": "user", "content": "hello world"}]])
    assert len(res) == 2 and set(res[0]["scores"]) == {"unit/a", "unit/b"}
    assert all(0 <= v <= 1 for v in res[0]["scores"].values())
    cache, mask = _one_forward(tiny_base, bank, _chats(tiny_base)[:3])
    tok = bank.score_tokens(cache, mask)
    assert tok["unit/a"].shape == mask.shape
    # the per-token score at the last real token of a right-padded row equals the sequence score
    seq = bank.score(cache, mask)
    last = mask.sum(1) - 1
    torch.testing.assert_close(tok["unit/a"][torch.arange(3), last], seq["unit/a"], atol=1e-5, rtol=1e-5)


def test_each_head_of_a_bank_reads_its_own_max_length(tiny_base):
    from dsa.runtime import SafetyModel

    short, long = _adapter(tiny_base, "plr"), _adapter(tiny_base, "rtb")
    short.task, short.max_length = "short", 8  # shorter than two of the prompts (11 and 12 tokens)
    inputs = ["how to make a bomb ?", "yes", "tell me about the weather today please"]

    def scores(bank) -> dict:  # {(input, head): score} from classify
        return {(i, q): v for i, r in enumerate(classify(tiny_base, bank, inputs)) for q, v in r["scores"].items()}

    alone = scores(GuardBank([short])) | scores(GuardBank([long]))
    untruncated = scores(GuardBank([replace(short, max_length=64)]))
    assert alone[(0, "short/a")] != pytest.approx(untruncated[(0, "short/a")], abs=1e-4)  # 8 tokens matter
    bank = GuardBank([short, long])
    assert scores(bank) == pytest.approx(alone, abs=1e-5)
    # the runtime's prefill scores (a chat prompt is one user message, as classify reads a string)
    served = SafetyModel(tiny_base, bank, None).generate([[{"role": "user", "content": t}] for t in inputs],
                                                          alignment=0.0, max_new_tokens=1)
    assert ({(i, q): v for i, r in enumerate(served) for q, v in r.guard_scores.items()}
            == pytest.approx(alone, abs=1e-4))


def test_the_vllm_engine_refuses_guards_of_different_max_length(tiny_base, tmp_path):
    from dsa.vllm.serve import _check_guards

    short, long = _adapter(tiny_base, "plr"), _adapter(tiny_base, "plr")
    short.task, short.max_length = "short", 8
    paths = [a.save(tmp_path / a.task, tiny_base.fingerprint) for a in (short, long)]
    assert _check_guards(paths[1:], tiny_base.fingerprint).max_length == 64
    with pytest.raises(ValueError, match="max_length 64 differs.*--engine hf"):
        _check_guards(paths, tiny_base.fingerprint)


def test_temperature_and_threshold():
    rng = np.random.default_rng(0)
    z = rng.normal(size=4000) * 3
    y = (rng.random(4000) < 1 / (1 + np.exp(-z / 2.5))).astype(float)
    assert fit_temperature(z, y) == pytest.approx(2.5, rel=0.15)
    p = calibrated(z, 2.5)
    thr = threshold_for_fpr(p, y, 0.05)
    assert np.mean(p[y == 0] >= thr) <= 0.05
    assert np.mean(p[y == 0] >= np.nextafter(thr, -1) - 1e-3) > 0.04  # the smallest such threshold
    assert fit_temperature([1.0, 2.0], [1.0, 1.0]) == 1.0  # one class: identity


def test_zero_shot_guard_scores_equal_the_full_model_next_token_logits(tiny_base):
    from types import SimpleNamespace

    from dsa.guards.baselines import ZERO_SHOT_QUESTIONS, _answer_ids, zero_shot, zero_shot_text

    tok = tiny_base.tokenizer
    rec = SimpleNamespace(main_text="how to make a bomb ?", prompt="hi", response="sure, here it is",
                          document="word " * 600, summary="a summary")
    texts = [zero_shot_text(tok, rec, m) for m in ZERO_SHOT_QUESTIONS]  # lengths differ: padding matters
    assert "Document:" in texts[-1] and len(tok(texts[-1])["input_ids"]) < 500  # the document was cut
    got = zero_shot(tiny_base, texts, progress=False)
    yes, no = _answer_ids(tok, ("Yes", "yes", " Yes", "YES")), _answer_ids(tok, ("No", "no", " No", "NO"))
    for text, score in zip(texts, got, strict=True):
        ids = tok(tiny_base.chat_text(text), add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            lp = torch.log_softmax(tiny_base.model(input_ids=ids).logits[0, -1].float(), -1)
        want = torch.logsumexp(lp[yes], -1) - torch.logsumexp(lp[no], -1)
        assert score == pytest.approx(float(want), abs=2e-2)
