"""The loops ported onto `dsa.train` reproduce their pre-Accelerate results in one process (fp32).

The expected numbers were recorded from the hand-written loops (recipes/sft.py `train`,
guards/train.py `fit_torch`, guards/baselines.py `minilm_finetune`, scripts/subspace_train.py) before
they moved onto the shared trainer; on the machine that recorded them the ported loops reproduce
them bit for bit. Regenerate with `python -m tests.unit.test_train_parity` only when a change of
numerics is intended.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from .align_tiny import tiny_base

RTOL = 1e-4  # other CPUs round differently; on the recording machine the match is exact

ROWS = [("bad thing", "no way", "sft", None), ("nice thing", "sure", "distill", None),
        ("bad", "no", "dpo", "yes"), ("how do i cook", "boil it", "distill", None),
        ("hurt them", "I can't help", "sft", None), ("worse", "never", "dpo", "ok sure"),
        ("tell me", "a story", "sft", None)]


def _examples(kinds=("sft", "distill", "dpo")):
    from dsa.recipes.sft import Example

    return [Example(p, r, k, rej) for p, r, k, rej in ROWS if k in kinds]


def _param_sum(params) -> float:
    return float(sum(p.detach().double().abs().sum() for p in params))


def sft_runs() -> dict:
    from dsa.align.logit_adapter import LogitAdapter, LogitAdapterSpec
    from dsa.align.lora import LoRASpec, patch_lora
    from dsa.recipes.sft import AdapterStudent, Example, ModelStudent, train

    out = {}
    base = tiny_base(layers=4)
    adapter = LogitAdapter(base, LogitAdapterSpec(k=2))
    adapter.tail.float().train()
    student = AdapterStudent(adapter, base)
    hist = train(student, base, _examples(), epochs=2, batch_size=3, lr=3e-3, seed=1, beta=0.2,
                 kl_weight=0.5, warmup=0.3)
    out["adapter"] = {"history": [{k: v for k, v in h.items() if k != "seconds"} for h in hist],
                      "param_sum": _param_sum(student.parameters())}

    base = tiny_base(layers=3, seed=2)
    patch = patch_lora(base.model, LoRASpec(r=4))
    for p in patch.parameters():  # B starts at zero: give it a start so every step moves the loss
        p.data.add_(0.01)
    base.model.train()
    hist = train(ModelStudent(base.model, base, patch.parameters()), base, _examples(("sft",)) * 2,
                 epochs=2, batch_size=4, lr=1e-2, seed=0)
    out["lora"] = {"history": [h["loss"] for h in hist], "param_sum": _param_sum(patch.parameters())}

    base = tiny_base(layers=2, seed=3)
    params = list(base.model.parameters())
    rows = [Example(e.prompt, e.response, "sft") for e in _examples(("sft", "distill"))]
    hist = train(ModelStudent(base.model, base, params), base, rows, epochs=1, batch_size=2, lr=1e-3,
                 weight_decay=0.01, seed=5)
    out["full_ft"] = {"history": [h["loss"] for h in hist], "param_sum": _param_sum(params)}
    return out


def _task_features(n=20, layers=3, d=16, window=4, seed=0):
    from dsa.guards.featurize import TaskFeatures

    g = torch.Generator().manual_seed(seed)
    ntok = torch.randint(1, window + 1, (n,), generator=g)
    tokens = torch.randn(int(ntok.sum()), layers, d, generator=g).to(torch.bfloat16)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), ntok.cumsum(0)])
    return TaskFeatures(torch.randn(n, layers, d, generator=g), torch.randn(n, layers, d, generator=g),
                        tokens, ntok, offsets, tuple(range(layers)))


def _guard_labels(n, heads=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n, heads), generator=g).float()
    y[3, 1] = float("nan")
    return y


GUARD_CFGS = {"plr": {"layers": [1, 2], "poolings": ["mean", "last"], "hidden": 8},
              "rtb": {"ladder": [0, 1, 2], "width": 8},
              "lst": {"ladder": [0, 2], "width": 8, "attn_heads": 2}}


def guard_runs() -> dict:
    from dsa.guards.kinds import head_kind
    from dsa.guards.train import fit_torch, predict

    tr, va = _task_features(seed=0), _task_features(n=12, seed=1)
    y_tr, y_va = _guard_labels(20), _guard_labels(12, seed=2)
    out = {}
    for arch, cfg in GUARD_CFGS.items():
        head = fit_torch(head_kind(arch), tr, y_tr, va, y_va, dict(cfg), 16, seed=3, epochs=4, patience=5,
                         lr=1e-2, batch_size=6)
        out[arch] = predict(head, va, head_kind(arch), cfg).round(5).tolist()
    return out


WORDS = "hello world how do i make a cake bomb tell me about the weather kill process poem".split()


def tiny_minilm(path):
    """A tiny random BERT with a word-level vocabulary, saved like the MiniLM package's folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(path)
    return path


def minilm_run(tmp_path, monkeypatch) -> list:
    from dsa.guards import baselines

    path = tiny_minilm(tmp_path / "minilm")
    monkeypatch.setattr(baselines, "minilm_dir", lambda: path)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 9)))) for _ in range(26)]
    pairs = [(t, None) for t in texts]
    y = _guard_labels(18)
    val_y = _guard_labels(8, seed=4).numpy()
    out = baselines.minilm_finetune(pairs[:18], y, {"val": pairs[18:], "val_y": val_y}, epochs=3,
                                    lr=1e-3, batch_size=5, max_length=16, seed=2, max_train=15,
                                    log=lambda *a: None)
    return out["val"].round(5).tolist()


def subspace_run() -> dict:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "subspace_train", Path(__file__).parents[2] / "scripts" / "subspace_train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    base = tiny_base(layers=2, seed=4)
    base.model.requires_grad_(True)
    base.model.train()
    encoded = mod.encode(base, [(p, r) for p, r, _, _ in ROWS])
    losses, _held = mod.train_update(base.model, encoded, batch_size=3, lr=1e-3,
                                     pad_id=base.tokenizer.pad_token_id, autocast=False, shuffle=False)
    return {"losses": losses, "param_sum": _param_sum(base.model.parameters())}


def _close(got, want):
    if isinstance(want, dict):
        assert set(got) == set(want)
        for k in want:
            _close(got[k], want[k])
    elif isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            _close(g, w)
    else:
        assert math.isclose(got, want, rel_tol=RTOL, abs_tol=RTOL), (got, want)


EXPECTED = {'sft': {'adapter': {'history': [{'step': 1,
                                             'loss': 1.7504714727401733,
                                             'sft': 4.558267116546631,
                                             'distill': 0.0,
                                             'dpo': 0.6931471824645996,
                                             'dpo_acc': 0.0},
                                            {'step': 2,
                                             'loss': 3.217373847961426,
                                             'sft': 4.4653143882751465,
                                             'dpo': 0.7214930653572083,
                                             'dpo_acc': 0.0},
                                            {'step': 3, 'loss': 0.010163228027522564, 'distill': 0.010163228027522564},
                                            {'step': 4,
                                             'loss': 1.6638526916503906,
                                             'sft': 4.337067604064941,
                                             'distill': 0.011198801919817924,
                                             'dpo': 0.6432917714118958,
                                             'dpo_acc': 1.0},
                                            {'step': 5,
                                             'loss': 3.0817978382110596,
                                             'sft': 4.314115047454834,
                                             'dpo': 0.617163360118866,
                                             'dpo_acc': 1.0},
                                            {'step': 6, 'loss': 0.010410211980342865, 'distill': 0.010410211980342865}],
                                'param_sum': 1538.5545119508515},
                    'lora': {'history': [4.4918341636657715, 4.381587505340576, 4.298546314239502, 4.258449077606201],
                             'param_sum': 472.8449213416934},
                    'full_ft': {'history': [4.587997913360596, 4.52570104598999, 4.397680759429932],
                                'param_sum': 1696.7906588499336}},
            'guard': {'plr': [[-0.41154998540878296, 0.7196999788284302], [0.2694700062274933, -0.26941001415252686],
                              [-0.21762999892234802, -0.7414000034332275], [0.2533400058746338, 0.21884000301361084],
                              [-0.29089999198913574, 1.0627100467681885], [0.06097999960184097, 0.4593000113964081],
                              [0.020349999889731407, -0.18328000605106354], [-0.11246000230312347, 0.15929000079631805],
                              [-0.05987999960780144, 0.3693400025367737], [0.0007600000244565308, 0.31123998761177063],
                              [-0.2798300087451935, -0.36754000186920166], [-0.2037999927997589, -0.22051000595092773]],
                      'rtb': [[-0.47049999237060547, -0.817359983921051], [0.12620000541210175, -0.06589999794960022],
                              [-0.444350004196167, -1.4125800132751465], [0.8949900269508362, -1.9625600576400757],
                              [0.8072500228881836, 0.5308499932289124], [-0.16675999760627747, -0.3640500009059906],
                              [0.049219999462366104, -0.0012199999764561653], [0.7805299758911133, 0.9765200018882751],
                              [-0.8567100167274475, 0.7103899717330933], [-1.0945299863815308, -0.6654000282287598],
                              [-1.0666199922561646, -0.446150004863739], [-0.6682299971580505, -1.409850001335144]],
                      'lst': [[0.6384599804878235, -1.2157000303268433], [-0.6828500032424927, -0.035590000450611115],
                              [-0.9242900013923645, 0.11699000000953674], [1.0513099431991577, -0.9295399785041809],
                              [0.3345400094985962, 0.1652899980545044], [-0.7599899768829346, 0.38712000846862793],
                              [0.274150013923645, 0.07006999850273132], [0.9359599947929382, -0.3320100009441376],
                              [0.0038499999791383743, -0.42816999554634094],
                              [-0.28481999039649963, 0.026399999856948853], [-0.7224299907684326, 0.4329499900341034],
                              [-0.9674100279808044, 0.11896000057458878]]},
            'minilm': [[-0.7908499836921692, -0.27639999985694885], [-0.7376499772071838, -0.092289999127388],
                       [-0.697160005569458, -0.14159999787807465], [-0.7908499836921692, -0.27639999985694885],
                       [-0.7376499772071838, -0.092289999127388], [-0.697160005569458, -0.14159999787807465],
                       [-0.7861300110816956, -0.3099699914455414], [-0.7055500149726868, -0.01998000033199787]],
            'subspace': {'losses': [4.533560752868652, 4.478050708770752, 4.481882572174072],
                         'param_sum': 1694.3092098604611}}


def test_alignment_training_matches_the_pre_accelerate_loop():
    _close(sft_runs(), EXPECTED["sft"])


def test_guard_head_training_matches_the_pre_accelerate_loop():
    _close(guard_runs(), EXPECTED["guard"])


def test_minilm_baseline_matches_the_pre_accelerate_loop(tmp_path, monkeypatch):
    _close(minilm_run(tmp_path, monkeypatch), EXPECTED["minilm"])


def test_subspace_update_training_matches_the_pre_accelerate_loop():
    _close(subspace_run(), EXPECTED["subspace"])


if __name__ == "__main__":  # print a fresh recording
    import tempfile
    from pathlib import Path

    class _MP:
        def setattr(self, obj, name, value):
            setattr(obj, name, value)

    rec = {"sft": sft_runs(), "guard": guard_runs(),
           "minilm": minilm_run(Path(tempfile.mkdtemp()), _MP())}
    try:
        rec["subspace"] = subspace_run()
    except AttributeError as err:
        print("subspace: not recorded:", err)
    print(json.dumps(rec))
