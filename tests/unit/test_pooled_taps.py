"""Guard taps pooled inside their hooks (`record_taps(reduce=...)` with `TapSummary`s) give the same
scores and streaming state as the full [batch, seq, d] states, for PLR, RTB and LST heads."""

import torch

from dsa.guards.bank import TapSummary, last_window, tap_reducers
from dsa.runtime import SafetyModel
from dsa.taps import record_taps, run_with_taps

from .align_tiny import tiny_base
from .test_streaming_guard import _bank


def _loop_last_window(h, mask, window):
    """The reference: row by row."""
    b = h.shape[0]
    w = int(min(window, int(mask.sum(1).max())))
    out, m = h.new_zeros(b, w, h.shape[-1]), torch.zeros(b, w, dtype=torch.long)
    for r in range(b):
        pos = torch.nonzero(mask[r], as_tuple=True)[0][-w:]
        out[r, w - len(pos):] = h[r, pos]
        m[r, w - len(pos):] = 1
    return out, m


def test_last_window_equals_the_row_by_row_reference():
    torch.manual_seed(0)
    h = torch.randn(4, 11, 5)
    for mask in (torch.tensor([[0, 0, 0] + [1] * 8, [1] * 11, [0] * 9 + [1] * 2, [0] * 5 + [1] * 6]),
                 torch.tensor([[1] * 8 + [0] * 3, [1] * 11, [1] * 2 + [0] * 9, [1, 0, 1, 1, 0] + [1] * 6])):
        for window in (1, 3, 6, 20):
            got, want = last_window(h, mask, window), _loop_last_window(h, mask, window)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def _inputs(base):
    enc = base.tokenizer(["a short one", "a somewhat longer prompt here"], return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def test_summaries_score_like_full_states():
    base = tiny_base("llama", layers=4)
    bank = _bank(base, archs=("plr", "rtb", "lst"))  # heads that read summaries
    inputs = _inputs(base)
    mask = inputs["attention_mask"]
    with torch.no_grad():
        _, full = run_with_taps(base.model, inputs, bank.taps)
        _, summary = run_with_taps(base.model, inputs, bank.taps, reduce=bank.tap_reducers(mask))
    assert all(isinstance(v, TapSummary) for v in summary.values())
    want, got = bank.score(full, mask), bank.score(summary, mask)
    assert all(torch.equal(want[h], got[h]) for h in want)
    a, b = bank.stream_state(full, mask), bank.stream_state(summary, mask)
    plr_a, plr_b = a.streams[0], b.streams[0]  # `PLRStream`, then the ladder heads' `LadderStream`s
    assert torch.equal(plr_a.sums, plr_b.sums) and torch.equal(plr_a.last, plr_b.last)
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(a.streams[1:], b.streams[1:], strict=True))


def test_reducers_keep_the_requested_taps_whole_and_banks_without_summaries():
    base = tiny_base("llama", layers=4)
    bank = _bank(base, archs=("plr", "rtb", "lst"))  # heads that read summaries
    mask = torch.ones(1, 3, dtype=torch.long)

    class Plain:  # a bank that reads full states only
        taps = ["layers.0.resid_post"]

    red = tap_reducers([bank, Plain()], mask, keep_full=["layers.2.resid_post"])
    assert set(red) == set(bank.taps) - {"layers.2.resid_post"}
    with torch.no_grad(), record_taps(base.model, ["layers.0.resid_post", "layers.1.resid_post"],
                                      reduce={"layers.1.resid_post": lambda h: h.shape}) as cache:
        base.model(input_ids=torch.tensor([[5, 6, 7]]))
    assert cache["layers.1.resid_post"] == (1, 3, base.d_model) and cache["layers.0.resid_post"].dim() == 3


def test_prefill_pools_guard_taps_and_scores_like_classify():
    base = tiny_base("llama", layers=4)
    bank = _bank(base, archs=("plr", "rtb", "lst"))  # heads that read summaries
    sm = SafetyModel(base, guards=bank, response_guards=bank, policy_head="resp_plr/unsafe")
    prompts = ["a short one", "a somewhat longer prompt here"]
    batch = sm.prefill(prompts, alignment=0, max_new_tokens=2)
    enc = sm.encode(prompts)
    with torch.no_grad():
        _, full = run_with_taps(base.model, enc, bank.taps)
    want = bank.score(full, enc["attention_mask"])
    assert all(torch.allclose(batch.scores[h], want[h], atol=1e-6) for h in want)
