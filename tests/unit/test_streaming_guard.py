"""The incremental response guard: O(1) state per token that gives the whole-transcript scores."""

import pytest
import torch

from dsa.decoding import IncrementalDetokenizer
from dsa.guards import GuardBank
from dsa.guards.bank import GuardAdapter
from dsa.guards.kinds import build_head
from dsa.runtime import SafetyModel
from dsa.taps import run_with_taps

from .align_tiny import tiny_base


def _bank(base, bias: float = 0.0, archs=("plr", "rtb", "lst", "window")) -> GuardBank:
    torch.manual_seed(1)
    adapters = []
    for arch in archs:
        # window 32: the first prompt (29 tokens) starts shorter than a window and grows past it
        cfg = ({"layers": [1, 2], "poolings": ["mean", "last"]} if arch == "plr"
               else {"layers": [1, 3], "window": 32} if arch == "window"
               else {"ladder": [1, 2], "width": 8, "attn_heads": 2})
        head = build_head(arch, base.d_model, 1, cfg)
        for p in head.parameters():
            p.data.normal_(0, 0.3)
        last = head.net if arch in ("plr", "window") else head.head
        with torch.no_grad():
            last.bias.fill_(bias)
        adapters.append(GuardAdapter(arch, f"resp_{arch}", "prompt_response", ["unsafe"], cfg, head,
                                     [1.0], [0.5], window=6))
    return GuardBank(adapters)


def test_incremental_state_equals_whole_transcript_scores():
    base = tiny_base("llama", layers=4)
    bank = _bank(base)
    enc = base.tokenizer(["a short one", "a somewhat longer prompt here"], return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    ids = torch.cat([ids, torch.randint(3, 90, (2, 9))], 1)
    mask = torch.cat([mask, torch.ones(2, 9, dtype=torch.long)], 1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        _, cache = run_with_taps(base.model, {"input_ids": ids, "attention_mask": mask, "position_ids": pos},
                                 bank.taps)
    k = ids.shape[1] - 9
    state = bank.stream_state({t: v[:, :k] for t, v in cache.items()}, mask[:, :k])
    for j in range(k, ids.shape[1]):
        got = state.update({t: v[:, j:j + 1] for t, v in cache.items()}, mask[:, :j + 1])
        want = bank.score({t: v[:, :j + 1] for t, v in cache.items()}, mask[:, :j + 1])
        for h in want:
            assert got[h] == pytest.approx(want[h], abs=1e-4), (h, j)


class _NoIncremental:
    """The same bank without `stream_state`: the runtime falls back to rescoring the transcript."""

    def __init__(self, bank):
        self.bank = bank
        self.taps, self.heads, self.thresholds = bank.taps, bank.heads, bank.thresholds

    def score(self, cache, mask):
        return self.bank.score(cache, mask)

    def flags(self, scores):
        return self.bank.flags(scores)


def test_runtime_incremental_guard_matches_transcript_rescoring():
    base = tiny_base("llama", layers=4)
    bank = _bank(base, archs=("plr", "rtb"))
    fast = SafetyModel(base, None, None, response_guards=bank)
    slow = SafetyModel(base, None, None, response_guards=_NoIncremental(bank))
    a = fast.generate(["hello there", "what is two plus two"], alignment=0.0, max_new_tokens=8)
    b = slow.generate(["hello there", "what is two plus two"], alignment=0.0, max_new_tokens=8)
    for x, y in zip(a, b, strict=True):
        assert x.token_ids == y.token_ids and x.stop_reason == y.stop_reason
        assert x.response_scores == pytest.approx(y.response_scores, abs=1e-4)


def test_flagged_token_is_never_shown_and_debounce_holds_tokens_back():
    base = tiny_base("llama", layers=4)
    sm = SafetyModel(base, None, None, response_guards=_bank(base, bias=50.0, archs=("plr",)))
    r = sm.generate(["hello there"], alignment=0.0, max_new_tokens=8)[0]
    assert r.stop_reason == "guard" and r.n_tokens == 0 and r.text == ""
    events = list(sm.stream("hello there", alignment=0.0, max_new_tokens=8))
    assert "".join(e.text for e in events) == "" and events[-1].stop_reason == "guard"
    sm.response_debounce = 3  # three consecutive flags: the two held tokens are dropped too
    events = list(sm.stream("hello there", alignment=0.0, max_new_tokens=8))
    assert len(events) == 3 and "".join(e.text for e in events) == ""


def test_incremental_detokenizer_adds_up_to_the_stripped_text():
    class Tok:  # multi-token characters and whitespace
        pieces = {1: " ", 2: "h", 3: "é", 4: "\n", 5: "x"}

        def decode(self, ids, skip_special_tokens=True):
            return "".join(self.pieces[i] for i in ids)

    ids = [1, 1, 2, 3, 1, 4, 5, 1, 1]
    d = IncrementalDetokenizer(Tok())
    shown = "".join(d.push([i]) for i in ids)
    assert shown == Tok().decode(ids).strip()
