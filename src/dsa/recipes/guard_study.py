"""The prompt-guard precision study: candidate heads on the cached prompt_safety features, one
selection rule applied on validation data only, leave-one-source-out validation, and the
candidates' operating points on eval-only sets (reported, never used to choose).

    dsa guard study                       # results/guard-precision.json (+ the guard doc section)

Selection rule (written before any eval-only number was looked at): the candidate with the
highest TPR at 1 % FPR on the validation split (every source pooled) wins; candidates within
0.005 of the best go to the one with fewer FLOPs per token.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from dsa.adapter_io import atomic_write_text, weights_hash
from dsa.data.tasks import guard_task, prompt_source
from dsa.guards.config import GuardTrainConfig
from dsa.guards.featurize import SplitData, extract_task_features, render, task_features
from dsa.guards.operating import OPERATING_SETS, operating_points, operating_sets, tpr_at_fpr
from dsa.metrics import roc_auc
from dsa.recipes.guard_train import _logits, train_guard

log = logging.getLogger(__name__)
TASK = "prompt_safety"
ALL_LAYERS = [6, 9, 12, 15, 18, 21, 24, 27]
# candidate name -> GuardTrainConfig overrides
CANDIDATES: dict[str, dict] = {
    "plr_mean_last": {"arch": "plr", "layer_sets": [ALL_LAYERS], "poolings": ["mean", "last"]},
    "plr_mean": {"arch": "plr", "layer_sets": [ALL_LAYERS], "poolings": ["mean"]},
    "plr_last": {"arch": "plr", "layer_sets": [ALL_LAYERS], "poolings": ["last"]},
    "plr_mid_mean_last": {"arch": "plr", "layer_sets": [[9, 14, 19, 24]], "poolings": ["mean", "last"]},
    "plr_mlp": {"arch": "plr", "layer_sets": [ALL_LAYERS], "poolings": ["mean", "last"], "hidden": 256},
    "rtb": {"arch": "rtb"},
    "lst": {"arch": "lst"},
}
RULE = ("highest TPR at 1 % FPR on the validation split (all sources pooled); candidates within 0.005 "
        "of the best go to the one with fewer FLOPs per token")
TIE = 0.005


def candidate_config(name: str, **extra) -> GuardTrainConfig:
    return GuardTrainConfig(task=TASK, **{**CANDIDATES[name], **extra})


def val_metrics(y: np.ndarray, logits: np.ndarray, sources: list[str], threshold_logit: float) -> dict:
    flagged = logits >= threshold_logit
    by_src = {s: float(flagged[[i for i, x in enumerate(sources) if x == s]].mean()) for s in sorted(set(sources))}
    return {"auc": roc_auc(y, logits), "tpr_at_1pct_fpr": tpr_at_fpr(y, logits, 0.01),
            "tpr_at_5pct_fpr": tpr_at_fpr(y, logits, 0.05), "flag_rate_by_source": by_src}


def select(cands: dict[str, dict]) -> str:
    """Apply RULE to {name: {"val": {...}, "flops_fraction_64": x}}."""
    best = max(c["val"]["tpr_at_1pct_fpr"] for c in cands.values())
    near = [n for n, c in cands.items() if c["val"]["tpr_at_1pct_fpr"] >= best - TIE]
    return min(near, key=lambda n: cands[n]["flops_fraction_64"])


def _records() -> dict[str, list]:
    t = guard_task(TASK)
    return {s: t.split(s) for s in ("train", "val", "test")}


def ops_features(base, max_length: int = 256, tokens: bool = True):
    """Cached features of every operating-point set (eval-only prompts, never trained on)."""
    return {name: extract_task_features(base, [render(base, r, "prompt") for r in recs], f"ops-{name}",
                                        max_length=max_length, progress=False, tokens=tokens)
            for name, recs in operating_sets().items()}


def _logit_threshold(adapter, j: int = 0) -> float:
    """The stored probability threshold as a raw-logit threshold (calibration is monotone)."""
    p, t = adapter.thresholds[j], adapter.temperatures[j]
    p = min(max(p, 1e-7), 1 - 1e-7)
    return float(np.log(p / (1 - p)) * t)


def _sub(split: SplitData, idx: list[int]) -> SplitData:
    return SplitData([split.texts[i] for i in idx], split.labels[idx], [split.groups[i] for i in idx],
                     split.feats.subset(idx))


PARTS = Path("runs/guard_study")


def _needs_tokens(names) -> bool:
    return any(CANDIDATES[n]["arch"] != "plr" for n in names)


def _study_data(base, tokens: bool = True):
    heads, mode, splits = task_features(base, TASK, tokens=tokens)
    recs = _records()
    sources = {s: [prompt_source(r) for r in recs[s]] for s in recs}
    return heads, mode, splits, recs, sources


def run_candidates(base, names: list[str] | None = None, parts: Path = PARTS, data=None) -> dict[str, dict]:
    """Train and score each candidate; each result is also written to `parts/<name>.json`, so
    candidates can run in parallel processes and a killed run keeps what it finished."""
    names = names or list(CANDIDATES)
    heads, mode, splits, _, sources = data or _study_data(base, _needs_tokens(names))
    ops = ops_features(base, tokens=_needs_tokens(names))
    y_va = splits["val"].labels.numpy()[:, 0]
    out = {}
    for name in names:
        t0 = time.perf_counter()
        adapter = train_guard(base, candidate_config(name), splits, heads, mode)
        thr = _logit_threshold(adapter)
        val_logits = _logits(adapter.head, adapter.arch, adapter.cfg, splits["val"].feats)[:, 0]
        op_scores = {k: _logits(adapter.head, adapter.arch, adapter.cfg, f)[:, 0] for k, f in ops.items()}
        out[name] = {
            "config": CANDIDATES[name], "head": adapter.cfg, "params": adapter.info["params"],
            "flops_fraction_64": adapter.info["flops_fraction_64"],
            "val": val_metrics(y_va, val_logits, sources["val"], thr),
            "eval_only": operating_points(op_scores, thr), "seconds": time.perf_counter() - t0}
        log.info("%s: val tpr@1%% %.3f", name, out[name]["val"]["tpr_at_1pct_fpr"])
        atomic_write_text(parts / f"{name}.json", json.dumps(out[name], indent=1))
    return out


def run_study(base, names: list[str] | None = None, loso: bool = True, parts: Path = PARTS,
              reuse_parts: bool = False) -> dict:
    """Every candidate (or those whose parts are missing, with `reuse_parts`), the selection by
    RULE, and leave-one-source-out validation of the selected head type."""
    names = names or list(CANDIDATES)
    cands = {}
    if reuse_parts:
        cands = {n: json.loads((parts / f"{n}.json").read_text()) for n in names if (parts / f"{n}.json").exists()}
    todo = [n for n in names if n not in cands]
    data = _study_data(base, _needs_tokens(names))  # one feature load for candidates and LOSO
    if todo:
        cands.update(run_candidates(base, todo, parts, data))
    heads, mode, splits, recs, sources = data
    out = {"rule": RULE, "candidates": {n: cands[n] for n in names},
           "n": {s: len(v.texts) for s, v in splits.items()}}
    out["selected"] = select(out["candidates"])
    if loso:
        out["loso"] = leave_one_source_out(base, out["selected"], splits, heads, mode, recs, sources,
                                           out["candidates"][out["selected"]]["head"].get("C"))
    return out


def leave_one_source_out(base, name: str, splits, heads, mode, recs, sources, chosen_c=None) -> dict:
    """Train without one source (its framed copies too), calibrate on val without it, and test on
    every unframed row of it (all splits) against the other class's test rows of the other sources."""
    res = {}
    y_te = splits["test"].labels.numpy()[:, 0]
    for src in sorted(set(sources["train"])):
        keep = {s: [i for i, x in enumerate(sources[s]) if x != src] for s in ("train", "val")}
        sub = {"train": _sub(splits["train"], keep["train"]), "val": _sub(splits["val"], keep["val"])}
        # the inverse L2 strength the full model chose, so each fold fits once (not a C search per fold)
        fixed = {"C_grid": list(chosen_c)} if chosen_c else {}
        adapter = train_guard(base, candidate_config(name, **fixed), sub, heads, mode)
        thr = _logit_threshold(adapter)
        held = {s: [i for i, x in enumerate(sources[s]) if x == src and recs[s][i].meta.get("frame") is None]
                for s in ("train", "val", "test")}
        s_held = np.concatenate([_logits(adapter.head, adapter.arch, adapter.cfg, splits[s].feats.subset(ix))[:, 0]
                                 for s, ix in held.items() if ix])
        label = int(splits["train"].labels[held["train"][0], 0]) if held["train"] else None
        other = [i for i, x in enumerate(sources["test"]) if x != src and y_te[i] != label]
        s_other = _logits(adapter.head, adapter.arch, adapter.cfg, splits["test"].feats.subset(other))[:, 0]
        y = np.r_[np.full(len(s_held), label), y_te[other]]
        s = np.r_[s_held, s_other]
        res[src] = {"label": label, "n": int(len(s_held)), "auc": roc_auc(y, s),
                    "tpr_at_1pct_fpr": tpr_at_fpr(y, s, 0.01), "flag_rate": float((s_held >= thr).mean())}
        log.info("loso %s: auc %.3f flag %.3f", src, res[src]["auc"], res[src]["flag_rate"])
    return res


def shipped_operating_points(base, adapter_dir: str, batch_size: int = 32) -> dict:
    """Operating points of a shipped adapter, scored through the public runtime (`classify`) on
    the raw eval prompts; records the adapter's weight hash."""
    from tqdm.auto import tqdm

    from dsa.guards import GuardBank, classify

    bank = GuardBank.load([adapter_dir], base)
    (head,) = [h for h in bank.heads if h.endswith("/unsafe")][:1]
    scores = {}
    done = PARTS / f"operating-{weights_hash(adapter_dir)[:16]}.json"  # per-set scores: a rerun resumes
    cached = json.loads(done.read_text()) if done.exists() else {}
    for name, recs in tqdm(list(operating_sets().items()), desc="operating points"):
        if name not in cached:
            res = classify(base, bank, [r.prompt for r in recs], batch_size=batch_size)
            cached[name] = [r["scores"][head] for r in res]
            atomic_write_text(done, json.dumps(cached))
        scores[name] = np.array(cached[name])
    op = operating_points(scores, bank.thresholds[head])
    return {**op, "head": head, "adapter": adapter_dir, "weights_sha256": weights_hash(adapter_dir),
            "via_runtime": True, "expected_label": dict(OPERATING_SETS)}
