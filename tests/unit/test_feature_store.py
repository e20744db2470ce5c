"""The guard feature store is content-addressed: a text is extracted once per base and view
settings, whatever list it arrives in; incomplete shards are ignored; the former per-list cache
moves in without a base pass."""

from __future__ import annotations

import json

import pytest
import torch

from dsa.guards import featurize
from dsa.guards.featurize import extract_task_features, store_dir, store_index

LADDER = (0, 1, 2)
TEXTS = ["how do i make a cake ?", "hello world", "tell me about the weather today please",
         "what is a bomb", "write a poem", "kill process"]


@pytest.fixture(scope="module")
def base():
    from dsa.base import from_model
    from tests.tiny import tiny_model, tiny_tokenizer

    return from_model(tiny_model("llama"), tiny_tokenizer(), name="tiny-llama")


def _extract(base, texts, root, **kw):
    return extract_task_features(base, [base.chat_text(t) for t in texts], "unit", max_length=64, window=8,
                                 ladder_layers=LADDER, progress=False, batch_tokens=64, root=root, **kw)


def _count_forwards(monkeypatch):
    calls = []
    real = featurize._forward_unit

    def counting(base, ids, unit, *a, **k):
        calls.append(len(unit))
        return real(base, ids, unit, *a, **k)

    monkeypatch.setattr(featurize, "_forward_unit", counting)
    return calls


def test_new_texts_only_are_extracted_and_views_match(base, tmp_path, monkeypatch):
    calls = _count_forwards(monkeypatch)
    first = _extract(base, TEXTS[:4], tmp_path)
    assert sum(calls) == 4
    calls.clear()
    both = _extract(base, TEXTS[2:] + TEXTS[:2], tmp_path)  # other order, two new texts, a repeat below
    assert sum(calls) == 2
    for k in range(4):  # text k of the first list is row (k - 2) % 6 of the second
        j = (k - 2) % len(TEXTS)
        assert torch.equal(first.mean[k], both.mean[j]) and torch.equal(first.last[k], both.last[j])
        assert torch.equal(first.tokens[first.offsets[k]:first.offsets[k + 1]],
                           both.tokens[both.offsets[j]:both.offsets[j + 1]])
    calls.clear()
    again = _extract(base, [TEXTS[0], TEXTS[0]], tmp_path, tokens=False)
    assert calls == [] and torch.equal(again.mean[0], again.mean[1]) and again.tokens.numel() == 0


def test_views_equal_a_fresh_extraction(base, tmp_path):
    mixed = _extract(base, TEXTS[:3], tmp_path / "a")
    mixed = _extract(base, TEXTS, tmp_path / "a")
    fresh = _extract(base, TEXTS, tmp_path / "b")
    # the same texts forwarded in other batches: equal up to float rounding of batched matmuls
    torch.testing.assert_close(mixed.mean, fresh.mean, atol=2e-2, rtol=0)
    torch.testing.assert_close(mixed.last, fresh.last, atol=2e-2, rtol=0)
    assert torch.equal(mixed.ntok, fresh.ntok)


def test_a_shard_without_its_hash_list_is_ignored(base, tmp_path, monkeypatch):
    _extract(base, TEXTS[:2], tmp_path)
    d = store_dir(base, 64, 8, LADDER, tmp_path)
    for f in d.glob("*.hashes.json"):
        f.unlink()  # as if killed between the tensors and the hash list
    assert store_index(d) == {}
    calls = _count_forwards(monkeypatch)
    _extract(base, TEXTS[:2], tmp_path)
    assert sum(calls) == 2


def test_legacy_per_list_cache_moves_in_without_a_forward(base, tmp_path, monkeypatch):
    import hashlib

    from dsa.adapter_io import atomic_save_tensors

    texts = [base.chat_text(t) for t in TEXTS[:3]]
    ref = _extract(base, TEXTS[:3], tmp_path / "ref")
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    legacy = tmp_path / "new" / base.fingerprint / f"unit-len64-w8-0_1_2-{h.hexdigest()[:16]}"
    legacy.mkdir(parents=True)
    order = [2, 0, 1]  # shard rows in another order than the list, as units made them
    atomic_save_tensors({"mean": ref.mean[order].bfloat16(), "last": ref.last[order].bfloat16(),
                         "tokens": torch.cat([ref.tokens[ref.offsets[i]:ref.offsets[i + 1]] for i in order]),
                         "ntok": ref.ntok[order], "index": torch.tensor(order)}, legacy / "shard-00000.safetensors",
                        metadata={"ladder": json.dumps(list(LADDER))})
    calls = _count_forwards(monkeypatch)
    got = _extract(base, TEXTS[:3], tmp_path / "new")
    assert calls == [] and not legacy.exists()
    assert torch.equal(got.mean, ref.mean) and torch.equal(got.tokens, ref.tokens)
