"""Train every DSA head and baseline on a guard task's fixed splits and score its test split.

`train_guard(base, cfg)` is the one training path (used by `dsa guard train` for the shipped
adapters and by `evaluate_all` for the tables), so a shipped adapter equals the evaluated one;
`train_user_guard` runs it on a user's file. A response guard also trains on the base's own
everyday answers (`base_answers`), which the runtime generates: so guard training is a recipe,
above the runtime.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from dsa.data.records import Record
from dsa.guards.bank import GuardAdapter
from dsa.guards.calibrate import calibrated, fit_temperature
from dsa.guards.config import GuardTrainConfig
from dsa.guards.featurize import SplitData, task_features
from dsa.guards.heads import n_params
from dsa.guards.kinds import head_kind
from dsa.guards.train import calibrate, mean_auc, predict
from dsa.guards.user import user_task
from dsa.guards.window_train import train_window
from dsa.metrics import binary_report

log = logging.getLogger(__name__)
EVAL_TASKS = ("toxigen", "summedits", "prompt_safety", "response_harm", "openai_moderation")
PRED_DIR = Path("runs/guard_preds")
# Head types that train by a recipe of their own (`GuardHead.cached_features` False), returning the
# calibrated adapter; every other head type is `fit` on cached task features below.
RECIPES = {"window": train_window}


def _logits(head, arch, cfg, feats) -> np.ndarray:
    return predict(head, feats, head_kind(arch), cfg)


def base_answers(base, prompts: Sequence[str], max_new_tokens: int = 128, batch_size: int = 32,
                 progress: Callable[[int], None] | None = None) -> list[Record]:
    """The base's own greedy answers (alignment 0, no guard) to `prompts`, as safe (label 0)
    prompt/response records: the everyday answers a response guard must let finish. Kept in the
    cache (`$DSA_CACHE/base_answers/`) by base fingerprint, prompts and budget (not the batch size,
    which changes only the rounding of padded rows): generating them is the slow part."""
    import hashlib

    from dsa.adapter_io import atomic_write_text
    from dsa.base import cache_dir
    from dsa.runtime import SafetyModel

    key = hashlib.sha256(json.dumps([base.fingerprint, list(prompts), max_new_tokens]).encode())
    path = cache_dir() / "base_answers" / f"{key.hexdigest()[:24]}.json"
    if path.exists():
        texts = json.loads(path.read_text())
        if progress is not None:
            progress(len(texts))
    else:
        sm, texts = SafetyModel(base), []
        for k in range(0, len(prompts), batch_size):
            part = list(prompts[k:k + batch_size])
            texts += [r.text for r in sm.generate(part, alignment=0.0, max_new_tokens=max_new_tokens)]
            if progress is not None:
                progress(len(part))
        atomic_write_text(path, json.dumps(texts))
    return [Record(id=f"base_answer:{i}", source="base_answers", prompt=p, response=t, label=0)
            for i, (p, t) in enumerate(zip(prompts, texts, strict=True))]


def everyday_answers(base, task, cfg: GuardTrainConfig) -> dict | None:
    """{"train", "val": the base's own answers to benign prompts, label 0} when `cfg.base_answers`
    asks for them (a response guard must let the answers it will read finish; the labelled
    answers of a task like Do-Not-Answer are mostly replies to harmful questions)."""
    if not cfg.base_answers:
        return None
    from dsa.data import guard_task
    from dsa.guards.streaming import benign_prompts

    mode = (guard_task(task) if isinstance(task, str) else task).mode
    if mode != "prompt_response":
        raise ValueError(f"base_answers is for prompt_response guards; {cfg.task} is a {mode!r} task")
    return {split: base_answers(base, benign_prompts(split, n), cfg.base_answer_tokens)
            for split, n in (("train", cfg.base_answers), ("val", cfg.base_answers // 2))}


def train_guard(base, cfg: GuardTrainConfig, splits: dict[str, SplitData] | None = None,
                heads: list[str] | None = None, mode: str | None = None, feature_root=None) -> GuardAdapter:
    """Train one guard adapter as `cfg` says (features from the store, `feature_root` or the
    default one), calibrated on val: the head type's own recipe where it has one (`RECIPES`), else
    its `fit` on cached task features."""
    kind = head_kind(cfg.arch)
    if cfg.arch in RECIPES:
        return RECIPES[cfg.arch](base, cfg)
    cfg = cfg.resolved(base.n_layers)  # layer indices / fractions of depth -> this model's layers
    if splits is None:
        task = cfg.task
        if cfg.data:
            task = user_task(cfg.data, cfg.map, positive=cfg.positive, limit=cfg.limit, seed=cfg.seed, name=cfg.task)
        t_feat = time.perf_counter()
        heads, mode, splits = task_features(base, task, max_length=cfg.max_length, window=cfg.window,
                                            tokens=kind.reads_tokens,
                                            ladder=cfg.ladder, root=feature_root,
                                            extra=everyday_answers(base, task, cfg))
        feature_seconds = time.perf_counter() - t_feat
    else:
        feature_seconds = None
    tr, va = splits["train"], splits["val"]
    prefix_info = None
    if cfg.prefix_cuts or cfg.prefix_random:
        if mode != "prompt_response":
            raise ValueError(f"prefix rows are for prompt_response guards; {cfg.task} is a {mode!r} task")
        from dsa.guards.prefixes import with_prefixes

        tr, prefix_info = with_prefixes(base, tr, cfg)
    d = base.d_model
    t0 = time.perf_counter()
    head, hcfg = kind.fit(cfg, tr, va, d)
    val_logits = _logits(head, cfg.arch, hcfg, va.feats)
    temps, thresholds = calibrate(val_logits, va.labels.numpy(), cfg.target_fpr)
    from dsa.guards.kinds import flops_fraction

    info = {"params": n_params(head), "flops_fraction_64": flops_fraction(head, base.model, 64),
            "flops_fraction_256": flops_fraction(head, base.model, 256),
            "val_auc": mean_auc(va.labels.numpy(), val_logits), "train_seconds": time.perf_counter() - t0}
    if feature_seconds is not None:
        info["feature_seconds"] = feature_seconds
    if prefix_info is not None:
        info["prefix_rows"] = prefix_info
    if cfg.data and "test" in splits:  # a user's guard: its held-out split's AUC, printed and stored
        info["test_auc"] = mean_auc(splits["test"].labels.numpy(), _logits(head, cfg.arch, hcfg, splits["test"].feats))
        info["data"] = {"file": Path(cfg.data).name, "rows": {s: len(v.texts) for s, v in splits.items()}}
    return GuardAdapter(cfg.arch, cfg.task, mode, heads, hcfg, head, temps, thresholds, cfg.max_length,
                        cfg.window, cfg.target_fpr, info)


def train_user_guard(base, cfg):
    """Train `cfg`'s guard on its user file and measure every head on the held-out test split.

    Returns:
        (adapter, test): the `GuardAdapter`, whose info holds `heads`: per head the test AUC, the
        TPR at 1 % FPR and the test TPR / FPR at the stored threshold
        (`dsa.guards.user_report.head_report`); and {head: (labels, logits)} of the test split
        for the plots (empty without a test split).
    """
    from dsa.guards.user_report import head_report

    rcfg = cfg.resolved(base.n_layers)
    task = user_task(cfg.data, cfg.map, positive=cfg.positive, limit=cfg.limit, seed=cfg.seed, name=cfg.task)
    t0 = time.perf_counter()
    heads, mode, splits = task_features(base, task, max_length=rcfg.max_length, window=rcfg.window,
                                        tokens=head_kind(rcfg.arch).reads_tokens, ladder=rcfg.ladder)
    feature_seconds = time.perf_counter() - t0
    adapter = train_guard(base, cfg, splits, heads, mode)
    adapter.info["feature_seconds"] = feature_seconds
    adapter.info["data"] = {"file": Path(cfg.data).name, "rows": {s: len(v.texts) for s, v in splits.items()}}
    test = {}
    if "test" in splits:
        y = splits["test"].labels.numpy()
        logits = _logits(adapter.head, adapter.arch, adapter.cfg, splits["test"].feats)  # [n, heads]
        test = {h: (y[:, j], logits[:, j]) for j, h in enumerate(adapter.heads)}
        adapter.info["heads"] = {h: head_report(yj, sj, adapter.temperatures[j], adapter.thresholds[j])
                                 for j, (h, (yj, sj)) in enumerate(test.items())}
    return adapter, test


def report_from_logits(y_val: np.ndarray, val_logits: np.ndarray, y_test: np.ndarray,
                       test_logits: np.ndarray, j: int = 0) -> dict:
    """Metrics of head j: ranking metrics on raw logits, ECE after temperature scaling on val."""
    t = fit_temperature(val_logits[:, j], y_val[:, j])
    return binary_report(y_test[:, j], test_logits[:, j], calibrated(test_logits[:, j], t))


def save_preds(task: str, method: str, preds: dict[str, np.ndarray]) -> None:
    PRED_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(PRED_DIR / f"{task}-{method}.npz", **preds)


def load_preds(task: str, method: str) -> dict[str, np.ndarray] | None:
    p = PRED_DIR / f"{task}-{method}.npz"
    return dict(np.load(p)) if p.exists() else None


def _cfg_hash(cfg: GuardTrainConfig) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(cfg.model_dump(), sort_keys=True).encode()).hexdigest()[:12]


def _splits_key(splits: dict[str, SplitData]) -> str:
    """Hash of every text and label of the splits: saved predictions are reused only for the same data."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(splits):
        for text in splits[name].texts:
            h.update(hashlib.sha256(text.encode()).digest())
        h.update(splits[name].labels.numpy().tobytes())
    return h.hexdigest()[:8]


def dsa_predictions(base, task: str, arch_cfgs: dict[str, GuardTrainConfig], splits, heads, mode,
                    xstest: SplitData | None, reuse: bool = False) -> dict[str, dict]:
    """Train each DSA arch; return {method: {"val","test"[, "xstest"], "info"}}.

    With `reuse`, predictions saved by an earlier run of the same config on the same data (both
    hashed into the file name under runs/guard_preds/) are read instead of retraining.
    """
    out = {}
    for method, cfg in arch_cfgs.items():
        key = f"{method}-{_cfg_hash(cfg)}-{_splits_key(splits)}"
        info_path = PRED_DIR / f"{task}-{key}.json"
        if reuse and info_path.exists() and load_preds(task, key) is not None:
            out[method] = {**load_preds(task, key), "info": json.loads(info_path.read_text())}
            continue
        adapter = train_guard(base, cfg, splits, heads, mode)
        preds = {"val": _logits(adapter.head, adapter.arch, adapter.cfg, splits["val"].feats),
                 "test": _logits(adapter.head, adapter.arch, adapter.cfg, splits["test"].feats)}
        if xstest is not None:
            preds["xstest"] = _logits(adapter.head, adapter.arch, adapter.cfg, xstest.feats)
        save_preds(task, key, preds)
        info = {**adapter.info, "head": adapter.cfg}
        info_path.write_text(json.dumps(info, indent=1))
        out[method] = {**preds, "info": info}
        log.info("%s %s: val auc %.4f", task, method, adapter.info["val_auc"])
    return out


def default_arch_cfgs(task: str) -> dict[str, GuardTrainConfig]:
    return {"dsa_plr": GuardTrainConfig(task=task, arch="plr"),
            "dsa_plr_mlp": GuardTrainConfig(task=task, arch="plr", hidden=256),
            "dsa_rtb": GuardTrainConfig(task=task, arch="rtb"),
            "dsa_lst": GuardTrainConfig(task=task, arch="lst")}


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def labels_np(s: SplitData) -> np.ndarray:
    return s.labels.numpy().astype(float)


def torch_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
