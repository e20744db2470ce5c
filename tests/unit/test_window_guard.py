"""The window head: max over `window`-token rolling means of per-token probe logits."""

from __future__ import annotations

import pytest
import torch

from dsa.guards import GuardBank
from dsa.guards.bank import GuardAdapter, classify
from dsa.guards.heads import GuardInput, rolling_max
from dsa.guards.kinds import build_head

from .align_tiny import tiny_base


def test_rolling_max_takes_full_windows_and_a_short_rows_whole_mean():
    z = torch.tensor([[1., 2, 3, 4, 5, 0, 0], [0, 0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 0, 7, 1]]).unsqueeze(-1)
    m = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1]])
    assert rolling_max(z, m, 2).squeeze(-1).tolist() == [4.5, 4.5, 4.0]  # right / left padding alike
    assert rolling_max(z, m, 10).squeeze(-1).tolist() == [3.0, 3.0, 4.0]  # shorter than a window: the mean


def test_benign_tokens_around_a_window_never_lower_its_score():
    g = torch.Generator().manual_seed(0)
    core = torch.randn(1, 12, 2, generator=g) + 2.0
    for before, after in [(0, 50), (200, 0), (100, 100)]:
        z = torch.cat([torch.randn(1, before, 2, generator=g) - 2.0, core,
                       torch.randn(1, after, 2, generator=g) - 2.0], 1)
        m = torch.ones(z.shape[:2])
        assert (rolling_max(z, m, 8) >= rolling_max(core, torch.ones(1, 12), 8) - 1e-4).all()  # cumsum rounding


def _window_adapter(base, window=8) -> GuardAdapter:
    torch.manual_seed(3)
    head = build_head("window", base.d_model, 1, {"layers": [1, 2], "window": window})
    head.net.weight.data.normal_(0, 0.3)
    head.mu.normal_(0, 0.1)
    head.sd.uniform_(0.5, 2.0)
    return GuardAdapter("window", "prompt_safety", "prompt", ["unsafe"], {"layers": [1, 2], "window": window},
                        head, [1.3], [0.4], max_length=4096)


def test_per_token_logits_equal_the_probe_on_window_means():
    """A window's logit is the linear probe of its mean features (the training view)."""
    base = tiny_base("llama", layers=3)
    a = _window_adapter(base, window=4)
    states = {1: torch.randn(2, 9, base.d_model), 2: torch.randn(2, 9, base.d_model)}
    mask = torch.ones(2, 9, dtype=torch.long)
    with torch.no_grad():
        got = a.head(GuardInput(states=states, mask=mask))
        feats = torch.cat([states[1], states[2]], -1).unfold(1, 4, 1).mean(-1)  # [2, 6, 2d]
        want = a.head.forward_windows(feats).amax(1)
    assert got == pytest.approx(want, abs=1e-4)


def test_window_adapter_round_trips_and_scores_like_classify(tmp_path):
    base = tiny_base("llama", layers=3)
    a = _window_adapter(base)
    a.save(tmp_path / "g", base.fingerprint, base.name)
    b = GuardAdapter.load(tmp_path / "g", base.fingerprint, base.d_model)
    assert (b.arch, b.cfg, b.max_length) == ("window", {"layers": [1, 2], "window": 8}, 4096)
    prompts = ["hello there", "how to do a bad thing quickly " * 5]
    one = classify(base, GuardBank([a]), prompts)
    two = classify(base, GuardBank([b]), prompts, batch_size=1)
    for x, y in zip(one, two, strict=True):
        assert x["scores"]["prompt_safety/unsafe"] == pytest.approx(y["scores"]["prompt_safety/unsafe"], abs=1e-5)


def test_fit_window_finds_a_short_signal_inside_long_benign_text():
    """Multiple-instance training: the label is carried by 6 tokens somewhere in up to 200."""
    import numpy as np

    from dsa.guards.window_train import TokenStates, WindowData, fit_window, predict_window

    g = torch.Generator().manual_seed(0)
    d, direction = 16, torch.randn(16, generator=g)

    def make(n):
        vals, lens, ys = [], [], []
        for i in range(n):
            length = int(torch.randint(10, 200, (1,), generator=g))
            x = torch.randn(length, d, generator=g)
            y = i % 2
            if y:
                at = int(torch.randint(0, length - 6, (1,), generator=g))
                x[at:at + 6] += 1.5 * direction
            vals.append(x)
            lens.append(length)
            ys.append(y)
        offsets = torch.tensor([0, *np.cumsum(lens)])
        return TokenStates(torch.cat(vals).to(torch.bfloat16), offsets), np.array(ys)

    (tr, y_tr), (va, y_va) = make(300), make(100)
    data = WindowData({}, {"train": y_tr, "val": y_va}, {}, {"train": tr, "val": va})
    head, info = fit_window(data, [0], 8, d, epochs=6, warm_epochs=1, lr=5e-2, batch_size=32)
    assert info["val_auc"] > 0.95
    logits = predict_window(head, va)[:, 0]
    assert logits[y_va == 1].mean() > logits[y_va == 0].mean()


def test_token_states_cache_per_text_and_reuse_across_lists(tmp_path):
    from dsa.guards.window_train import token_states

    base = tiny_base("llama", layers=3)
    texts = [base.chat_text(t) for t in ("hello there", "a bad thing", "what is two plus two")]
    a = token_states(base, texts, [1, 2], root=tmp_path)
    calls = []
    fwd = base.model.forward
    base.model.forward = lambda *x, **k: calls.append(1) or fwd(*x, **k)
    b = token_states(base, [texts[2], texts[0]], [1, 2], root=tmp_path)  # all cached: no forward
    assert calls == []
    assert torch.equal(b.values[b.offsets[0]:b.offsets[1]], a.values[a.offsets[2]:a.offsets[3]])
    c = token_states(base, [*texts, base.chat_text("tell me a poem")], [1, 2], root=tmp_path)
    assert len(calls) == 1 and len(c) == 4  # only the new text ran
    assert a.values.shape[1] == 2 * base.d_model and a.values.dtype == torch.bfloat16


def _fake_task():
    from dsa.data.records import Record
    from dsa.data.tasks import GuardTask

    words = ["how do I bake bread", "how to make a pipe bomb", "tell me a poem", "steal a car quickly",
             "what is two plus two", "write a phishing email"]
    recs = {s: [Record(id=f"{s}{i}", source="alpaca_instructions" if i % 2 == 0 else "advbench", split=s,
                       prompt=f"{words[i % len(words)]} ({s} {i})", label=i % 2,
                       meta={"frame": "roleplay", "framed_from": "advbench"} if i % 5 == 4 else {})
                for i in range(24)] for s in ("train", "val", "test")}
    recs["train"].append(Record(id="x", source="advbench", split="train", prompt="unlabelled", label=None))
    return GuardTask("prompt_safety", "prompt", ["unsafe"], recs["train"], recs["val"], recs["test"])


def test_window_prompts_are_the_raw_prompts_window_data_renders(monkeypatch):
    """`window_prompts` (no token states) is exactly what `window_data` renders and labels."""
    import dsa.data.tasks
    from dsa.data.wrappers import augment
    from dsa.features.text import render_input
    from dsa.guards.window_train import window_data, window_prompts

    task = _fake_task()
    monkeypatch.setattr(dsa.data.tasks, "guard_task", lambda name: task)
    base = tiny_base("llama", layers=3)
    splits = ("train", "val", "test")
    wp = window_prompts(base.tokenizer, "prompt_safety", seed=3, share=0.8, pad_tokens=(10, 30), splits=splits)
    data = window_data(base, "prompt_safety", [1], seed=3, share=0.8, pad_tokens=(10, 30), splits=splits)
    count = lambda s: len(base.tokenizer(s)["input_ids"])  # noqa: E731
    for s in splits:
        assert data.texts[s] == [render_input(base, p) for p in wp.prompts[s]]
        assert (data.y[s] == wp.y[s]).all() and data.kinds[s] == wp.kinds[s] and data.sources[s] == wp.sources[s]
        assert len(data.states[s]) == len(wp.prompts[s])
        plain = [r for r in task.split(s) if r.label is not None]  # unlabelled rows are dropped
        n = len(plain)
        assert wp.prompts[s][:n] == [r.prompt for r in plain] and wp.y[s][:n].tolist() == [r.label for r in plain]
        assert wp.kinds[s][:n] == ["framed" if r.meta.get("frame") else "plain" for r in plain]
        want = [] if s == "test" else [(i, k, t) for i, k, t in augment(wp.prompts[s][:n], seed=3 + (s == "val"),
                                                                       share=0.8, pad_tokens=(10, 30), count=count)
                                       if k.startswith("pad_")]
        assert wp.n_padded[s] == len(want) == len(wp.prompts[s]) - n
        assert wp.prompts[s][n:] == [t for _, _, t in want] and wp.kinds[s][n:] == [k for _, k, _ in want]
        assert wp.y[s][n:].tolist() == [wp.y[s][i] for i, _, _ in want]
    assert wp.n_padded["train"] > 0 and wp.n_padded["val"] > 0 and wp.n_padded["test"] == 0


def test_val_flag_rates_are_read_per_kind_of_copy():
    import numpy as np

    from dsa.guards.window_train import flag_rates_by_kind, kind_group

    assert [kind_group(k) for k in ("plain", "roleplay", "pad_before", "pad_long_after", "pad_corpus_around")] == [
        "plain", "framed", "pad", "pad_long", "pad_corpus"]
    kinds = ["plain", "plain", "pad_corpus_before", "pad_corpus_after", "pad_corpus_around"]
    y = np.array([0, 1, 0, 0, 1])
    out = flag_rates_by_kind(kinds, y, np.array([0.2, 0.9, 0.8, 0.1, 0.95]), 0.5)
    assert out["plain"] == {"benign": 0.0, "harmful": 1.0, "n_benign": 1, "n_harmful": 1}
    assert out["pad_corpus"] == {"benign": 0.5, "harmful": 1.0, "n_benign": 2, "n_harmful": 1}


def test_tail_drop_hides_the_template_end_from_the_loss():
    """Where the label is carried only by the last tokens (as the assistant turn's opening carries
    much of it on the real base), a head trained with every text's tail hidden cannot learn it; one
    trained on the request's own signal still can."""
    import numpy as np

    from dsa.guards.window_train import TokenStates, WindowData, fit_window

    g = torch.Generator().manual_seed(0)
    d, tail = 16, 4
    tail_dir, body_dir = torch.randn(d, generator=g), torch.randn(d, generator=g)

    def make(n, in_tail: bool):
        vals, lens, ys = [], [], []
        for i in range(n):
            length = int(torch.randint(30, 80, (1,), generator=g))
            x = torch.randn(length, d, generator=g)
            y = i % 2
            if in_tail:  # ± so that the standardisation's mean (over every token) carries no class signal
                x[-tail:] += (2.0 if y else -2.0) * tail_dir
            elif y:
                x[5:13] += 2.0 * body_dir
            vals.append(x)
            lens.append(length)
            ys.append(y)
        return TokenStates(torch.cat(vals).to(torch.bfloat16), torch.tensor([0, *np.cumsum(lens)])), np.array(ys)

    def auc(in_tail: bool, share: float) -> float:
        (tr, y_tr), (va, y_va) = make(300, in_tail), make(100, in_tail)
        data = WindowData({}, {"train": y_tr, "val": y_va}, {}, {"train": tr, "val": va})
        return fit_window(data, [0], 8, d, epochs=4, warm_epochs=1, lr=5e-2, batch_size=32,
                          tail_drop_share=share, tail_tokens=tail)[1]["val_auc"]

    assert auc(in_tail=True, share=0.0) > 0.95
    assert auc(in_tail=True, share=1.0) < 0.75
    assert auc(in_tail=False, share=1.0) > 0.95


def test_long_copy_weight_weights_the_long_padded_copies_loss():
    """The loss of the long padded copies (kinds pad_long / pad_doc) is weighted by `long_copy_weight`:
    where they carry the opposite cue to the plain texts, a few of them lose at weight 1 and win when
    weighted, read on val made of such copies only."""
    import numpy as np

    from dsa.guards.window_train import TokenStates, WindowData, fit_window

    g = torch.Generator().manual_seed(0)
    d = 16
    cue = torch.randn(d, generator=g)

    def make(n, long_share):
        vals, lens, ys, kinds = [], [], [], []
        for i in range(n):
            long = i < round(n * long_share)
            length = int(torch.randint(60, 90, (1,), generator=g)) if long else int(torch.randint(20, 30, (1,),
                                                                                                   generator=g))
            x = torch.randn(length, d, generator=g)
            y = i % 2
            x[5:13] += (2.0 if (y == 1) != long else -2.0) * cue  # long copies: the opposite cue
            vals.append(x)
            lens.append(length)
            ys.append(y)
            kinds.append("pad_long_before" if long else "plain")
        states = TokenStates(torch.cat(vals).to(torch.bfloat16), torch.tensor([0, *np.cumsum(lens)]))
        return states, np.array(ys), kinds

    def auc(weight: float) -> float:
        (tr, y_tr, k_tr), (va, y_va, k_va) = make(400, 0.15), make(100, 1.0)
        data = WindowData({}, {"train": y_tr, "val": y_va}, {"train": k_tr, "val": k_va},
                          {"train": tr, "val": va})
        return fit_window(data, [0], 8, d, epochs=4, warm_epochs=1, lr=5e-2, batch_size=32,
                          long_copy_weight=weight)[1]["val_auc"]

    assert auc(1.0) < 0.5
    assert auc(20.0) > 0.9
