"""What would make the prompt guard stop flagging safe prompts? Linear probes on the cached
prompt_safety features (mean + last token of layers 9, 14, 19, 24) with the training data varied.

The shipped guard flags most of XSTest's safe prompts and a third of AlpacaEval's ("I am making
mayonnaise and it became runny ..."). Two hypotheses, each a set of variants:
- harm vocabulary: drop the Alpaca hard negatives (harm words in safe requests), or drop HarmfulQA
  (academic-sounding questions on sensitive topics, much like XSTest's safe prompts);
- form: the benign side is mostly imperative Alpaca instructions while the harmful side includes
  real user messages, so add 800 Alpaca training *questions* (What/Why/How/...), the 229
  OpenAI-moderation training prompts flagged on no category (real user text), or weight WildChat ×5.

Measured on data no variant trains on:
    val_auc          prompt_safety validation AUC (how every shipped head is chosen)
    heldout_flagged  share flagged of held-out real-user benign text: OpenAI-moderation val/test
                     prompts flagged on no category + prompt_safety's WildChat val/test rows
    xstest_*         XSTest AUC and share of its safe / unsafe prompts flagged (eval only: reported)
    alpaca_eval      share flagged of 200 AlpacaEval prompts (the first 200 in sha256(id) order)
"Flagged" = the balanced logistic regression's decision function > 0.

    .venv/bin/python scripts/guard_xstest_ablation.py   # -> results/guard-xstest-ablation.json + a table
"""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch

from dsa.base import load_base
from dsa.data import benign_prompts, guard_task, load_source
from dsa.guards.featurize import extract_task_features, task_features, train_subset
from dsa.metrics import roc_auc
from dsa.probe_fit import fit_best_c

LAYERS = [9, 14, 19, 24]
QUESTION = re.compile(r"^(what|why|how|who|where|when|which|can|could|is|are|do|does|should|would)\b", re.I)
# name: (drop from the training subset, extra benign sets added, WildChat sample weight)
VARIANTS = {
    "as shipped": (None, [], 1.0),
    "without hard negatives": ("hard", [], 1.0),
    "without HarmfulQA": ("harmfulqa", [], 1.0),
    "+ 800 Alpaca questions": (None, ["alpaca_questions"], 1.0),
    "without HarmfulQA + 800 Alpaca questions": ("harmfulqa", ["alpaca_questions"], 1.0),
    "WildChat weighted x5": (None, [], 5.0),
    "+ OpenAI-moderation unflagged": (None, ["moderation_unflagged"], 1.0),
    "+ Alpaca questions + moderation unflagged": (None, ["alpaca_questions", "moderation_unflagged"], 1.0),
    "+ both, WildChat x5": (None, ["alpaca_questions", "moderation_unflagged"], 5.0),
}


def _h(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def alpaca_eval_rows(n: int) -> list:
    """A fixed AlpacaEval subset: the first `n` rows in sha256(id) order."""
    return sorted(load_source("alpaca_eval"), key=lambda r: _h(r.id))[:n]


def matrix(f) -> np.ndarray:
    return torch.cat([f.mean[:, LAYERS].flatten(1), f.last[:, LAYERS].flatten(1)], 1).numpy()


def unflagged(split: str) -> list[str]:
    """OpenAI-moderation prompts of one split annotated on every category and flagged on none."""
    return [r.main_text for r in guard_task("openai_moderation").split(split)
            if r.label == 0 and all(v == 0 for k, v in r.labels.items() if k != "any")]


def main() -> None:
    torch.set_num_threads(1)
    base = load_base()

    def feats(texts: list[str], name: str) -> np.ndarray:
        return matrix(extract_task_features(base, [base.chat_text(t) for t in texts], name, progress=False))

    _, _, sp = task_features(base, "prompt_safety", progress=False)
    xs = task_features(base, "xstest", progress=False)[2]["test"]
    questions = sorted((p for p in benign_prompts("train") if QUESTION.match(p) and len(p) < 200), key=_h)[:800]
    extra = {"alpaca_questions": feats(questions, "ablation_alpaca_questions"),
             "moderation_unflagged": feats(unflagged("train"), "ablation_moderation_train")}
    wild_held = [r.main_text for s in ("val", "test") for r in guard_task("prompt_safety").split(s)
                 if r.source == "wildchat_benign"]
    held = feats(unflagged("val") + unflagged("test") + wild_held, "ablation_heldout_benign")
    ae = feats([r.main_text for r in alpaca_eval_rows(200)], "ablation_alpaca_eval")

    recs = train_subset("prompt_safety", guard_task("prompt_safety").train)
    marks = {"hard": np.array([bool(r.meta.get("hard_negative")) for r in recs]),
             "harmfulqa": np.array([r.meta.get("subset") == "harmfulqa" for r in recs])}
    wild = np.array([r.source == "wildchat_benign" for r in recs])
    xtr, xva, xte, xxs = (matrix(s.feats) for s in (sp["train"], sp["val"], sp["test"], xs))
    ytr, yva, yte, yxs = (s.labels[:, 0].numpy() for s in (sp["train"], sp["val"], sp["test"], xs))
    rows = {}
    for name, (drop, adds, w_wild) in VARIANTS.items():
        keep = ~marks[drop] if drop else np.ones(len(ytr), bool)
        x = np.concatenate([xtr[keep], *(extra[a] for a in adds)])
        y = np.concatenate([ytr[keep], *(np.zeros(len(extra[a])) for a in adds)])
        w = np.concatenate([np.where(wild[keep], w_wild, 1.0), *(np.ones(len(extra[a])) for a in adds)])
        mu, sd = x.mean(0), x.std(0) + 1e-4
        # chosen on val AUC, as for the shipped heads
        fit = fit_best_c((x - mu) / sd, y, (xva - mu) / sd, yva, (0.003, 0.01, 0.03), max_iter=2000, seed=None,
                         sample_weight=w)
        val, c, clf = fit.val_auc, fit.c, fit.estimator
        score = lambda m: clf.decision_function((m - mu) / sd)  # noqa: E731, B023
        s_xs = score(xxs)
        rows[name] = {"n_train": int(len(y)), "C": c, "val_auc": val,
                      "test_auc": roc_auc(yte, score(xte)),
                      "heldout_flagged": float((score(held) > 0).mean()), "n_heldout": len(held),
                      "xstest_auc": roc_auc(yxs, s_xs),
                      "xstest_safe_flagged": float((s_xs[yxs == 0] > 0).mean()),
                      "xstest_unsafe_flagged": float((s_xs[yxs == 1] > 0).mean()),
                      "alpaca_eval_flagged": float((score(ae) > 0).mean()), "n_alpaca_eval": len(ae)}
    out = Path("results/guard-xstest-ablation.json")
    out.write_text(json.dumps({"command": "python scripts/guard_xstest_ablation.py", "layers": LAYERS,
                               "variants": rows}, indent=1) + "\n")
    print("| training data | n train | val AUC | test AUC | held-out benign flagged | XSTest AUC | "
          "XSTest safe flagged | XSTest unsafe flagged | AlpacaEval flagged |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['n_train']} | {r['val_auc']:.3f} | {r['test_auc']:.3f} | {r['heldout_flagged']:.3f} | "
              f"{r['xstest_auc']:.3f} | {r['xstest_safe_flagged']:.3f} | {r['xstest_unsafe_flagged']:.3f} | "
              f"{r['alpaca_eval_flagged']:.3f} |")


if __name__ == "__main__":
    main()
