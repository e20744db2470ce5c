"""One featurizer, one cache: guard training (the feature store), `extract_features` and guard
serving (`classify`, the runtime's prefill) read the same tokens and the same store."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dsa.features import extract_features, extract_views, render_input, text_hash
from dsa.guards import GuardBank, classify
from dsa.guards.bank import GuardAdapter
from dsa.guards.featurize import extract_task_features, render
from dsa.guards.kinds import build_head
from dsa.guards.train import guard_input
from dsa.runtime import SafetyModel

LADDER = (0, 1, 2)
INPUTS = ["how do i make a cake ?", "hello world", "tell me about the weather today please", "what is a bomb",
          [{"role": "user", "content": "write a poem"}, {"role": "assistant", "content": "roses are red"}]]


@pytest.fixture(scope="module")
def base():
    from dsa.base import from_model
    from tests.tiny import tiny_model, tiny_tokenizer

    return from_model(tiny_model("llama"), tiny_tokenizer(), name="tiny-llama")  # float32


def _adapter(base, arch: str, max_length: int) -> GuardAdapter:
    torch.manual_seed(0)
    cfg = {"layers": [1, 2], "poolings": ["mean", "last"]} if arch == "plr" else {"ladder": [0, 2], "width": 16}
    head = build_head(arch, base.d_model, 1, cfg).eval()
    return GuardAdapter(arch, "unit", "prompt", ["unsafe"], cfg, head, [1.0], [0.5], max_length=max_length, window=8)


def _store_scores(base, adapter: GuardAdapter, inputs, root) -> torch.Tensor:
    """What guard training sees: the store's views of the rendered texts, through the head."""
    texts = [render_input(base, x) for x in inputs]
    feats = extract_task_features(base, texts, "unit", max_length=adapter.max_length, window=adapter.window,
                                  ladder_layers=LADDER, progress=False, root=root)
    with torch.no_grad():
        logits = adapter.head(guard_input(feats, range(len(texts)), adapter.kind, adapter.cfg)).float()
    return adapter.probs(logits)[:, 0]


def _assert_same_scores(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal up to the store's bf16 rounding: compared as logits, against the spread between texts
    (a random head's scores are close together, so a plain tolerance on them would prove little)."""
    got, want = torch.logit(got.double()), torch.logit(want.double())
    spread = float(want.max() - want.min())
    assert spread > 0 and float((got - want).abs().max()) < spread / 20, (got, want)


@pytest.mark.parametrize("arch", ["plr", "rtb"])
@pytest.mark.parametrize("max_length", [64, 5])  # 5: every input is left-truncated
def test_classify_scores_equal_scores_from_the_store(base, tmp_path, arch, max_length):
    adapter = _adapter(base, arch, max_length)
    served = classify(base, GuardBank([adapter]), INPUTS)
    stored = _store_scores(base, adapter, INPUTS, tmp_path)
    _assert_same_scores(torch.tensor([r["scores"]["unit/unsafe"] for r in served]), stored)


@pytest.mark.parametrize("max_length", [64, 5])  # 5: the runtime rescores every prompt, truncated
def test_runtime_prefill_scores_equal_scores_from_the_store(base, tmp_path, max_length):
    prompts = [x for x in INPUTS if isinstance(x, str)]  # generation adds the prompt for an answer
    adapter = _adapter(base, "plr", max_length)
    sm = SafetyModel(base, GuardBank([adapter]), None, "step")
    batch = sm.prefill(prompts, alignment=0.0, max_new_tokens=1)
    got = torch.tensor([batch.guard_scores(i)["unit/unsafe"] for i in range(len(prompts))])
    _assert_same_scores(got, _store_scores(base, adapter, prompts, tmp_path))


def test_extract_features_reads_and_writes_the_guard_store(base, tmp_path):
    texts = [render_input(base, x) for x in INPUTS]
    first = extract_features(base, texts, "1,2", "mean", max_length=64, cache_root=tmp_path, progress=False)
    assert first.stats["source"] == "store" and first.stats["computed"] == len(texts)
    # guard training on the same texts and view settings finds them all in the store
    views = extract_views(base, texts, max_length=64, root=tmp_path, progress=False, tokens=False)
    assert views.stats["computed"] == 0
    assert torch.equal(first.values["layers.2.resid_post"], views.mean[:, 2])
    last = extract_features(base, texts[::-1], "1", "last", max_length=64, cache_root=tmp_path, progress=False)
    assert last.stats["computed"] == 0 and torch.equal(last.values["layers.1.resid_post"], views.last.flip(0)[:, 1])
    # not in the store: other taps and per-token features are computed, cached beside it
    other = extract_features(base, texts, ["layers.1.mlp_out"], "mean", max_length=64, cache_root=tmp_path,
                             progress=False)
    assert other.stats["source"] == "cache" and other.stats["computed"] == len(texts)
    memory = extract_features(base, texts, "1,2", "mean", max_length=64, cache=False, progress=False)
    torch.testing.assert_close(memory.values["layers.2.resid_post"], first.values["layers.2.resid_post"],
                               atol=2e-2, rtol=0)


def test_records_render_as_before_so_stored_hashes_stay_valid(base):
    rec = SimpleNamespace(prompt="how do i pick a lock ?", response="you should not",
                          main_text="how do i pick a lock ?")
    assert render(base, rec, "prompt_response") == base.prompt_response_text(rec.prompt, rec.response)
    assert render(base, rec, "prompt") == base.chat_text(rec.main_text)
    assert text_hash("hello") == "2cf24dba5fb0a30e26e8"  # sha256("hello")[:20]: the key of every stored text
