import pytest
import torch

from dsa import features as F
from dsa.features import extract_features, length_buckets, pool, raw_forward_throughput
from dsa.taps import run_with_taps

TEXTS = ["how do i make a cake ?", "hello world", "tell me about the weather today please",
         "what is a bomb", "write a poem about the world and you", "hello world", "yes"]
TAPS = ["layers.0.resid_post", "layers.2.mlp_out"]


def _direct(base, text, tap, how):
    ids = base.tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        _, cache = run_with_taps(base.model, dict(ids), [tap])
    return pool(cache[tap], ids["attention_mask"], how)[0]


def test_pool_mean_and_last_respect_padding_side():
    h = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(pool(h, right, "mean")[0], h[0, :3].mean(0))
    assert torch.equal(pool(h, right, "last")[0], h[0, 2])
    assert torch.equal(pool(h, left, "mean")[0], h[0, 1:].mean(0))
    assert torch.equal(pool(h, left, "last")[0], h[0, 3])
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(h, right, "max")


def test_length_buckets_cover_every_index_within_budget():
    lengths = [5, 50, 3, 40, 41, 7, 100, 1]
    batches = length_buckets(lengths, batch_tokens=100, max_batch=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 100


@pytest.mark.parametrize("how", ["mean", "last"])
def test_extracted_features_equal_single_text_forward(tiny_base, how):
    feats = extract_features(tiny_base, TEXTS, TAPS, how, batch_tokens=32, progress=False)
    assert feats.values[TAPS[0]].shape == (len(TEXTS), 64)
    for i, text in enumerate(TEXTS):
        for tap in TAPS:
            expected = _direct(tiny_base, text, tap, how).to(torch.bfloat16).float()  # cache stores bf16
            torch.testing.assert_close(feats.values[tap][i], expected, atol=2e-2, rtol=2e-2)


def test_cache_hit_returns_the_same_and_computes_nothing(tiny_base, tmp_path):
    first = extract_features(tiny_base, TEXTS, TAPS, cache_root=tmp_path, progress=False)
    assert first.stats["computed"] == len(set(TEXTS))
    again = extract_features(tiny_base, TEXTS[::-1], TAPS, cache_root=tmp_path, progress=False)
    assert again.stats["computed"] == 0
    for tap in TAPS:
        assert torch.equal(again.values[tap], first.values[tap].flip(0))
    # a new tap on the same texts is computed, the old one still read from the cache
    more = extract_features(tiny_base, TEXTS, ["layers.1.resid_post"], cache_root=tmp_path, progress=False)
    assert more.stats["computed"] == len(set(TEXTS))


def test_resume_after_kill(tiny_base, tmp_path, monkeypatch):
    real_write = F.FeatureCache.write
    calls = {"n": 0}

    def dying_write(self, *a, **k):
        if calls["n"] == 1:
            raise KeyboardInterrupt  # killed while the second shard is pending
        calls["n"] += 1
        return real_write(self, *a, **k)

    monkeypatch.setattr(F.FeatureCache, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        extract_features(tiny_base, TEXTS, TAPS, cache_root=tmp_path, shard_size=2, max_batch=2, progress=False)
    monkeypatch.setattr(F.FeatureCache, "write", real_write)
    resumed = extract_features(tiny_base, TEXTS, TAPS, cache_root=tmp_path, shard_size=2, progress=False)
    assert 0 < resumed.stats["computed"] < len(set(TEXTS))
    fresh = extract_features(tiny_base, TEXTS, TAPS, cache=False, progress=False)
    for tap in TAPS:
        torch.testing.assert_close(resumed.values[tap], fresh.values[tap].to(torch.bfloat16).float())
    assert not list(tmp_path.rglob(".shard*"))  # no half-written shard left behind


def test_per_token_features(tiny_base, tmp_path):
    feats = extract_features(tiny_base, TEXTS, TAPS, "tokens", cache_root=tmp_path, progress=False)
    lengths = [len(tiny_base.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS]
    assert feats.offsets.tolist() == [0, *torch.tensor(lengths).cumsum(0).tolist()]
    assert feats.tokens(TAPS[0], 2).shape == (lengths[2], 64)
    cached = extract_features(tiny_base, TEXTS, TAPS, "tokens", cache_root=tmp_path, progress=False)
    assert cached.stats["computed"] == 0 and torch.equal(cached.values[TAPS[1]], feats.values[TAPS[1]])


def test_max_length_keeps_the_end(tiny_base):
    ids = F.tokenize(tiny_base, ["a b c d e f"], max_length=2)
    assert ids == [tiny_base.tokenizer("e f", add_special_tokens=False)["input_ids"]]


def test_raw_forward_reference_runs(tiny_base):
    r = raw_forward_throughput(tiny_base, TEXTS, progress=False)
    assert r["tokens"] == sum(len(tiny_base.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS)
    assert r["tokens_per_s"] > 0


def test_bad_pooling_is_rejected(tiny_base):
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        extract_features(tiny_base, TEXTS, TAPS, "max", progress=False)


def test_compare_throughput_counts_the_same_tokens(tiny_base):
    from dsa.features import compare_throughput

    r = compare_throughput(tiny_base, TEXTS, TAPS, progress=False)
    assert r["tokens"] == raw_forward_throughput(tiny_base, TEXTS, progress=False)["tokens"]
    assert r["ratio"] == pytest.approx(r["features_tokens_per_s"] / r["raw_tokens_per_s"])


def test_cli_extract_serves_resid_post_from_the_store_and_other_taps_from_the_cache(tiny_base, tmp_path,
                                                                                     monkeypatch, capsys):
    import argparse

    from dsa.cli import features_cmd

    monkeypatch.setattr(features_cmd, "load_base", lambda *a, **k: tiny_base)
    data = tmp_path / "mine.csv"
    data.write_text("comment,is_toxic\nhello world,0\nyou are an idiot,1\nwrite a poem,0\n")
    parser = argparse.ArgumentParser()
    features_cmd.register(parser.add_subparsers())
    common = ["features", "extract", "--file", str(data), "--map", "text=comment", "--map", "label=is_toxic",
              "--chat", "--cache-root", str(tmp_path / "store")]
    for taps, where in [("1,2", "feature store"), ("mlp_out:1", "feature cache")]:
        args = parser.parse_args([*common, "--taps", taps])
        assert args.func(args) == 0
        out = capsys.readouterr().out
        assert "computed 3 of 3" in out and where in out


def test_cli_compare_raw_writes_results_and_the_page_renders_from_them(tiny_base, tmp_path, monkeypatch, capsys):
    import argparse
    import json

    from dsa.cli import features_cmd

    monkeypatch.setattr(features_cmd, "load_base", lambda *a, **k: tiny_base)
    data = tmp_path / "mine.csv"
    data.write_text("comment\nhello world\nyou are an idiot\nwrite a poem\n")
    out, doc = tmp_path / "features.json", tmp_path / "results-features.md"
    doc.write_text("# Feature extraction throughput\n\nhand-written\n")
    parser = argparse.ArgumentParser()
    features_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["features", "extract", "--file", str(data), "--map", "text=comment", "--taps", "1,2",
                              "--compare-raw", "--out", str(out), "--doc", str(doc)])
    assert args.func(args) == 0
    res = json.loads(out.read_text())
    assert res["texts"] == 3 and res["compare"]["tokens"] > 0 and res["machine"]["load_average_end"]
    page = doc.read_text()
    assert page.startswith("# Feature extraction throughput\n\nhand-written\n")
    assert f"**{res['compare']['ratio']:.3f}**" in page and "No measurement is stored" not in page
    # `dsa features doc` rewrites the same block from the file alone
    args = parser.parse_args(["features", "doc", "--results", str(out), "--doc", str(doc)])
    assert args.func(args) == 0 and doc.read_text() == page
    out.unlink()
    assert args.func(args) == 0 and "No measurement is stored" in doc.read_text()
