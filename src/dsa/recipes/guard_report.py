"""`dsa guard eval --all`: every DSA head and baseline on every guard task -> results/guard.json,
docs/results-guard.md and docs/img/guard-*.png. Every number in the doc comes from this run.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from dsa.data import guard_task
from dsa.guards.baselines import record_pair
from dsa.guards.featurize import (
    eval_subset,
    features_cached,
    task_features,
    task_splits,
    train_subset,
)
from dsa.plots import plot_curves
from dsa.recipes.guard_train import (
    EVAL_TASKS,
    default_arch_cfgs,
    dsa_predictions,
    labels_np,
    load_preds,
    report_from_logits,
    save_preds,
    write_json,
)

log = logging.getLogger(__name__)
DSA_METHODS = ("dsa_plr", "dsa_plr_mlp", "dsa_rtb", "dsa_lst")
BASELINES = ("minilm_finetune", "tfidf_lr", "zero_shot")


def _data_key(splits: dict[str, list]) -> str:
    """A hash of every record id and label a baseline trains and is scored on: cached predictions
    are found again only while the task's data is unchanged."""
    h = hashlib.sha256()
    for name in sorted(splits):
        for r in splits[name]:
            h.update(f"{name}:{r.id}:{r.label}:{sorted((r.labels or {}).items())};".encode())
    return h.hexdigest()[:10]


def baseline_predictions(task: str, method: str, compute: bool, minilm_epochs: int = 2,
                         base=None) -> dict | None:
    """Predictions of a baseline, cached per task data (runs/guard_preds/), computed here when
    `compute` is set (zero_shot also needs `base`)."""
    t = guard_task(task)
    t.train = train_subset(task, t.train)
    t.val, t.test = eval_subset(task, t.val), eval_subset(task, t.test)
    sets = {"val": t.val, "test": t.test}
    if task == "prompt_safety":
        sets["xstest"] = guard_task("xstest").test
    key = f"{method}-{_data_key({'train': t.train, **sets})}"
    cached = load_preds(task, key)
    if cached is not None or not compute or (method == "zero_shot" and base is None):
        return cached
    from dsa.guards.featurize import record_labels

    y_tr = record_labels(t.train, t.heads)
    y_va = record_labels(t.val, t.heads)
    t0 = time.perf_counter()
    if method == "zero_shot":
        from dsa.guards.baselines import zero_shot, zero_shot_text

        # one question per task: for multi-head tasks it answers the "any" head; the others stay NaN
        j = _main_head(t.heads)
        preds = {}
        for k, v in sets.items():
            col = zero_shot(base, [zero_shot_text(base.tokenizer, r, t.mode) for r in v])
            preds[k] = np.full((len(v), len(t.heads)), np.nan)
            preds[k][:, j] = col
    elif method == "tfidf_lr":
        from dsa.guards.baselines import tfidf_lr

        def text(r):
            a, b = record_pair(r, t.mode)
            return a if b is None else f"{a}\n\n{b}"

        preds = tfidf_lr([text(r) for r in t.train], y_tr.numpy(),
                         {k: [text(r) for r in v] for k, v in sets.items()}, y_va.numpy())
    elif method == "minilm_finetune":
        from dsa.guards.baselines import minilm_finetune

        long_task = task in ("summedits", "response_harm")
        preds = minilm_finetune([record_pair(r, t.mode) for r in t.train], y_tr,
                                {**{k: [record_pair(r, t.mode) for r in v] for k, v in sets.items()},
                                 "val_y": y_va.numpy()},
                                epochs=1 if long_task else minilm_epochs, log=log.info)
    else:
        raise ValueError(f"unknown baseline {method!r}")
    preds = {k: np.asarray(v, dtype=float) for k, v in preds.items()}
    save_preds(task, key, {**preds, "seconds": np.array(time.perf_counter() - t0)})
    return preds


def _kept_from_previous(path: Path, tasks) -> dict:
    """What an earlier results file holds for tasks not re-run now (and the shipped guards'
    operating points), so evaluating one task never drops the others' numbers."""
    import json

    if not path.exists():
        return {}
    prev = json.loads(path.read_text())
    redo = set(tasks) | ({"xstest"} if "prompt_safety" in tasks else set())
    keep = {t for t in prev.get("tasks", {}) if t not in redo}
    old_cmd = prev.get("command", "")
    out = {"tasks": {t: prev["tasks"][t] for t in keep},
           "dsa_heads": {t: v for t, v in prev.get("dsa_heads", {}).items() if t in keep},
           "task_commands": {t: prev.get("task_commands", {}).get(t, old_cmd) for t in keep}}
    if "openai_moderation" in keep:
        out["openai_moderation_per_category"] = prev.get("openai_moderation_per_category", {})
    if "operating_points" in prev:
        out["operating_points"] = prev["operating_points"]
    return out


def _main_head(heads: list[str]) -> int:
    return heads.index("any") if "any" in heads else 0


def evaluate_all(base, tasks=EVAL_TASKS, out_json="results/guard.json", doc="docs/results-guard.md",
                 img_dir="docs/img", compute_baselines: tuple[str, ...] = BASELINES, reuse: bool = False,
                 command: str = "dsa guard eval --all") -> dict:
    """Score every DSA head and baseline on `tasks`; baselines named in `compute_baselines` are
    trained where no cached predictions exist, the others are read from the cache when present."""
    results: dict = {"command": command, "base": base.name, "base_fingerprint": base.fingerprint, "tasks": {},
                     "openai_moderation_per_category": {}, "dsa_heads": {}, "notes": {}, "task_commands": {}}
    results.update(_kept_from_previous(Path(out_json), tasks))
    curves: dict[str, dict] = {}
    no_features = []
    for task in tasks:
        if reuse and not features_cached(base, task):
            # --reuse never starts a base pass: a task whose features were not extracted
            # (scripts/guard_features.py) gets its cached baselines only
            heads, mode, splits = task_splits(base, task)
            xs, preds = None, {}
            no_features.append(task)
        else:
            heads, mode, splits = task_features(base, task)
            xs = task_features(base, "xstest")[2]["test"] if task == "prompt_safety" else None
            preds = dsa_predictions(base, task, default_arch_cfgs(task), splits, heads, mode, xs, reuse)
        for m in BASELINES:
            p = baseline_predictions(task, m, m in compute_baselines, base=base)
            if p is not None:
                preds[m] = p
        y_va, y_te = labels_np(splits["val"]), labels_np(splits["test"])
        j = _main_head(heads)
        if not preds:
            continue
        results["task_commands"][task] = command
        results["tasks"][task] = {m: report_from_logits(y_va, p["val"], y_te, p["test"], j) for m, p in preds.items()}
        results["dsa_heads"][task] = {m: p["info"] for m, p in preds.items() if "info" in p}
        curves[task] = {m: (y_te[:, j], p["test"][:, j]) for m, p in preds.items()}
        if task == "openai_moderation":
            results["openai_moderation_per_category"] = {
                m: {h: report_from_logits(y_va, p["val"], y_te, p["test"], k) for k, h in enumerate(heads)
                    if not np.isnan(p["test"][:, k]).all()}  # zero_shot answers the "any" head only
                for m, p in preds.items()}
        if xs is not None:
            y_xs = labels_np(xs)
            results["tasks"]["xstest"] = {m: report_from_logits(y_va, p["val"], y_xs, p["xstest"], 0)
                                          for m, p in preds.items() if "xstest" in p}
            curves["xstest"] = {m: (y_xs[:, 0], p["xstest"][:, 0]) for m, p in preds.items() if "xstest" in p}
        write_json(Path(out_json), results)  # after every task: a killed run keeps what it measured
    missing_tasks = [t for t in EVAL_TASKS if t not in results["tasks"]]
    missing = {t: [m for m in BASELINES if m not in r]
               for t, r in results["tasks"].items()}
    results["notes"]["missing"] = (
        "**Not measured in this run.** Tasks: " + (", ".join(missing_tasks) or "none")
        + ". Baselines without cached predictions: "
        + (", ".join(f"{t}: {', '.join(ms)}" for t, ms in missing.items() if ms) or "none")
        + ". DSA heads not trained (base features not extracted): " + (", ".join(no_features) or "none") + ".")
    for task, c in curves.items():
        plot_curves(c, Path(img_dir) / f"guard-{task}.png", title=task)
    write_json(Path(out_json), results)
    from dsa.guards.doc import write_doc

    write_doc(results, doc)
    return results
