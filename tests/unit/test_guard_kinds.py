"""A guard head type is one module satisfying `dsa.guards.kinds.GuardHead` plus one `ARCHS` line:
the bank scores it, streams it, reads it in chunks and round-trips it without other changes."""

import pytest
import torch
from torch import nn

from dsa.chunked_prefill import GuardReader
from dsa.guards import ARCHS, GuardBank
from dsa.guards.bank import GuardAdapter
from dsa.guards.heads import GuardInput
from dsa.guards.kinds import build_head, flops_fraction
from dsa.guards.summaries import pooled, tap_name
from dsa.taps import run_with_taps

from .align_tiny import tiny_base


class LastTokenHead(nn.Module):
    """The toy head: a linear readout of the last real token's state of one layer."""

    def __init__(self, d_model: int, n_heads: int, layer: int):
        super().__init__()
        self.layer = layer
        self.net = nn.Linear(d_model, n_heads)

    def forward(self, x: GuardInput) -> torch.Tensor:
        return self.net(x.pooled[(self.layer, "last")].float())


class LastTokenStream:
    def __init__(self, head: LastTokenHead, last: torch.Tensor):
        self.head, self.last = head, last

    def update(self, cache):
        self.last = cache[tap_name(self.head.layer)][:, -1].float()
        return self.head.net(self.last)

    def select(self, idx):
        return LastTokenStream(self.head, self.last[idx])

    def merge(self, other):
        return LastTokenStream(self.head, torch.cat([self.last, other.last]))


class LastToken:
    """What would be `src/dsa/guards/kinds/last_token.py`."""

    arch = "last_token"
    head_type = LastTokenHead
    reads_tokens = False
    cached_features = True
    vllm_reads = None

    def build(self, d_model, n_heads, cfg):
        return LastTokenHead(d_model, n_heads, cfg["layer"])

    def layers(self, cfg):
        return [cfg["layer"]]

    def tap_needs(self, cfg, window):
        return {tap_name(cfg["layer"]): {"mean": False, "last": True, "window": 0}}

    def inputs(self, cfg, cache, mask, window):
        return GuardInput(pooled={(cfg["layer"], "last"): pooled(cache[tap_name(cfg["layer"])], mask, "last")})

    def token_logits(self, head, cfg, cache, mask):
        return head.net(cache[tap_name(cfg["layer"])].float())

    def stream(self, adapter, cache, mask):
        return LastTokenStream(adapter.head, pooled(cache[tap_name(adapter.cfg["layer"])], mask, "last").float())

    def prompt_state(self, adapter):
        return None

    def flops(self, head, seq_len):
        return 2.0 * head.net.in_features * head.net.out_features

    def cached_input(self, feats, idx, cfg):
        return GuardInput(pooled={(cfg["layer"], "last"): feats.last[idx, cfg["layer"]]})

    def fit_norm(self, head, feats, cfg):
        pass

    def fit(self, cfg, train, val, d_model):
        raise NotImplementedError

    def check(self, cfg):
        pass


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(ARCHS, "last_token", LastToken())  # the one registry line


def test_a_new_head_type_scores_streams_and_round_trips(registered, tmp_path):
    base = tiny_base("llama", layers=4)
    torch.manual_seed(0)
    head = build_head("last_token", base.d_model, 2, {"layer": 2})
    assert isinstance(head, LastTokenHead)
    adapter = GuardAdapter("last_token", "toy", "prompt", ["a", "b"], {"layer": 2}, head, [1.0, 2.0], [0.5, 0.5])
    bank = GuardBank([adapter])
    assert bank.taps == ["layers.2.resid_post"]
    enc = base.tokenizer(["a short one", "a somewhat longer prompt here"], return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        _, full = run_with_taps(base.model, {"input_ids": ids, "attention_mask": mask}, bank.taps)
        _, summary = run_with_taps(base.model, {"input_ids": ids, "attention_mask": mask}, bank.taps,
                                   reduce=bank.tap_reducers(mask))
    h = full["layers.2.resid_post"]
    last = torch.stack([h[r, mask[r].nonzero().max()] for r in range(2)]).float()
    want = torch.sigmoid(head.net(last) / torch.tensor([1.0, 2.0]))
    got = bank.score(full, mask)
    assert torch.allclose(got["toy/a"], want[:, 0]) and torch.allclose(got["toy/b"], want[:, 1])
    assert all(torch.equal(got[q], s) for q, s in bank.score(summary, mask).items())
    assert set(bank.score_tokens(full, mask)) == {"toy/a", "toy/b"}
    assert 0 < flops_fraction(head, base.model, 64) < 1

    # streaming: the prefix's state plus one token scores as the whole transcript (dynamic batching too)
    k = ids.shape[1] - 1
    state = bank.stream_state({t: v[:, :k] for t, v in full.items()}, mask[:, :k])
    state.select(torch.tensor([1, 0]))
    state.select(torch.tensor([1, 0]))
    step = state.update({t: v[:, k:] for t, v in full.items()})
    assert mask[:, -1].all()  # left padding: every row's last token is the step's
    assert all(torch.allclose(step[q], got[q]) for q in got)

    # chunked prefill reads it from running summaries
    reader = GuardReader([adapter])
    with torch.no_grad():
        _, one = run_with_taps(base.model, {"input_ids": ids[1:], "attention_mask": mask[1:]}, reader.taps)
    for a in range(0, ids.shape[1], 3):
        reader.extend({t: v[:, a:a + 3] for t, v in one.items()})
    assert torch.allclose(reader.scores()["toy/a"], got["toy/a"][1:])

    adapter.save(tmp_path / "toy", base.fingerprint)
    back = GuardBank.load([tmp_path / "toy"], base)
    assert all(torch.equal(back.score(full, mask)[q], s) for q, s in got.items())


def test_unknown_head_types_are_named():
    with pytest.raises(ValueError, match="unknown guard architecture 'nope'"):
        build_head("nope", 8, 1, {})
