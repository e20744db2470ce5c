"""dsa.train.fit on a tiny regression: seeded order, accumulation, precision, early stop, sharding."""

from __future__ import annotations

import pytest
import torch

from dsa.train import TrainSpec, fit, resolve_precision, split


def _job(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(23, 4, generator=g)
    y = x.sum(1, keepdim=True)

    def loss_fn(rows):
        return torch.nn.functional.mse_loss(model(x[rows]), y[rows]), {"rows": float(len(rows))}

    return model, loss_fn, list(range(23))


def _train(spec: TrainSpec, **kw):
    model, loss_fn, data = _job()
    hist = fit(loss_fn, data, list(model.parameters()), spec, modules=[model], **kw)
    return hist, torch.cat([p.detach().flatten() for p in model.parameters()])


def test_split_is_contiguous_and_balanced():
    assert split(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split([1], 2) == [[1], []]


def test_same_seed_same_run_and_the_loss_falls():
    spec = TrainSpec(epochs=4, batch_size=5, lr=1e-2, seed=3)
    h1, p1 = _train(spec)
    h2, p2 = _train(spec)
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2] and torch.equal(p1, p2)
    losses = [h["loss"] for h in h1]
    assert len(h1) == 4 * 5 and sum(losses[-5:]) < sum(losses[:5])  # last epoch vs first
    _, p3 = _train(TrainSpec(epochs=4, batch_size=5, lr=1e-2, seed=4))
    assert not torch.equal(p1, p3)


def test_gradient_accumulation_gives_the_same_steps():
    spec = TrainSpec(epochs=2, batch_size=6, lr=1e-2, clip_norm=1.0, seed=0)
    h1, p1 = _train(spec)
    h3, p3 = _train(TrainSpec(**{**spec.__dict__, "grad_accum": 3}))
    assert torch.allclose(p1, p3, atol=1e-6)
    assert [h["loss"] for h in h1] == pytest.approx([h["loss"] for h in h3], rel=1e-5)
    assert h3[0]["rows"] == 2.0  # stats: the mean over micro-batches of the main process


def test_schedule_and_early_stop():
    spec = TrainSpec(epochs=3, batch_size=8, lr=1e-2)
    hist, p = _train(spec, schedule=lambda s, total: 0.0, on_epoch=lambda ep: ep == 1)
    assert len(hist) == 2 * 3  # stopped after the second epoch
    _, p0 = _train(TrainSpec(epochs=0))
    assert torch.equal(p, p0)  # a zero learning rate never moves the weights


def test_precision_by_device(monkeypatch):
    assert resolve_precision("auto", "cpu") == "no"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("no", "cuda") == "no"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda") == "bf16"
    with pytest.raises(ValueError, match="GPU"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="expected one of"):
        resolve_precision("fp8", "cpu")


def test_bf16_autocast_then_fp32_in_one_process():
    model, _, data = _job()
    seen = []

    def loss_fn(rows):
        out = model(torch.randn(len(rows), 4))
        seen.append(out.dtype)
        return out.float().pow(2).mean(), {}

    fit(loss_fn, data, list(model.parameters()), TrainSpec(batch_size=23, mixed_precision="bf16"))
    fit(loss_fn, data, list(model.parameters()), TrainSpec(batch_size=23, mixed_precision="no"))
    assert seen == [torch.bfloat16, torch.float32]
