"""Prompt-guard (window) candidates chosen on validation data only: val AUC, val flag rates by kind
of padding, and guard_val_filler.py's rule, all from cached per-token states
→ results/guard-window-candidates.json.

    OMP_NUM_THREADS=1 python scripts/window_candidates.py [--n 60]

Why: the shipped guard and the tail-drop guard differ in how they read a request, and the tail-drop
one flags benign prompts behind long filler it never saw (results/guard-val-filler.json). This fits
each candidate below on the augmented train split (the shipped config with the candidate's
overrides), calibrates it on val (temperature, threshold at the config's val FPR, as `dsa guard
train` does), and reads it on:
- val (augmented with train filler and documents, as training calibrates): AUC, flag rates per kind;
- the first `--n` benign and harmful val prompts plain and behind 300 / 1,000 tokens of the VAL
  filler pool (`FILLER_VAL`) before and after, exactly the texts of scripts/guard_val_filler.py, read
  from token states (`predict_window`, every token of them) instead of through `classify`; the shipped and the tail-drop
  adapters are read the same way as a check that this agrees with guard_val_filler.py.
The rule a candidate must pass: benign under every val-filler padding ≤ plain + 0.05. Among those,
the best val AUC. Nothing here reads an eval-only set; held-out filler and wrapper families stay
for the robustness report.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "guard-window-candidates.json"
BENIGN_TOL = 0.05  # as scripts/guard_val_filler.py
# Overrides of the shipped config, all on its training texts (cached states, no new forwards): hiding
# the template's end from a smaller share of the loss, and weighting the long padded copies' loss.
CANDIDATES = {
    "tail 0.25": {"tail_drop_share": 0.25},
    "long x4": {"long_copy_weight": 4.0},
    "tail 0.5, long x4": {"tail_drop_share": 0.5, "long_copy_weight": 4.0},
    "long x8": {"long_copy_weight": 8.0},
    "tail 0.5, long x8": {"tail_drop_share": 0.5, "long_copy_weight": 8.0},
}
SAVE = ROOT / "runs" / "window_candidates"  # each fitted candidate as a guard adapter (not shipped)
ADAPTERS = {"shipped": "adapters/guards/prompt_safety",
            "tail drop 0.5 (measured, not shipped)": "adapters/baselines/prompt_safety_window_tail_drop"}


def filler_rates(probs: np.ndarray, keys: list[tuple[str, str]], threshold: float) -> dict:
    rates: dict[str, dict] = {}
    for (name, c), p in zip(keys, probs, strict=True):
        rates.setdefault(c, {}).setdefault(name, []).append(p >= threshold)
    rates = {c: {k: float(np.mean(v)) for k, v in r.items()} for c, r in rates.items()}
    rise = max(r["benign"] - rates["plain"]["benign"] for c, r in rates.items() if c != "plain")
    return {"rates": rates, "largest_benign_rise": round(rise, 4), "passes": rise <= BENIGN_TOL}


def main() -> int:
    from dsa.adapter_io import atomic_write_text, weights_hash
    from dsa.base import load_base
    from dsa.features.text import render_input, template_tail_tokens
    from dsa.guards.bank import GuardAdapter
    from dsa.guards.calibrate import calibrated
    from dsa.guards.config import GuardTrainConfig
    from dsa.guards.train import calibrate
    from dsa.guards.window_train import (
        fit_window,
        flag_rates_by_kind,
        predict_window,
        token_states,
        val_filler_prompts,
        val_report,
        window_data,
    )
    from dsa.normalise import encode_rendered

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/guard-prompt_safety.yaml")
    ap.add_argument("--n", type=int, default=60, help="val prompts per class behind val filler")
    ap.add_argument("--only", default="", help="candidate names separated by semicolons (default: all)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = GuardTrainConfig.from_yaml(args.config)
    base = load_base(cfg.base)
    cfg = cfg.resolved(base.n_layers)
    layers = list(cfg.layer_sets[0])
    out = json.loads(OUT.read_text()) if OUT.exists() else {}
    out.update({"command": "python scripts/window_candidates.py" + (f" --n {args.n}" if args.n != 60 else ""),
                "config": args.config, "filler_pool": "dsa.data.wrappers.FILLER_VAL", "n": args.n,
                "benign_tolerance": BENIGN_TOL})
    rows = out.setdefault("rows", {})

    triples = val_filler_prompts(base.tokenizer, cfg.task, args.n)
    texts = [render_input(base, x) for _, _, x in triples]  # normalised there, as classify does
    keys = [(name, c) for name, c, _ in triples]
    # whole texts, as classify reads them: those longer than training's 1,024 tokens in their own states
    n_tok = [len(x) for x in encode_rendered(base.tokenizer, texts)]
    parts = [[i for i, n in enumerate(n_tok) if n <= 1024], [i for i, n in enumerate(n_tok) if n > 1024]]
    states = [token_states(base, [texts[i] for i in ix], layers, max_length=m, desc="val filler tokens")
              for ix, m in zip(parts, (1024, 2048), strict=True)]

    def filler_probs(head, temperature: float) -> np.ndarray:
        out = np.empty(len(texts))
        for ix, st in zip(parts, states, strict=True):
            if ix:
                out[ix] = calibrated(predict_window(head, st)[:, 0], temperature)
        return out

    for name, path in ADAPTERS.items():
        ad = GuardAdapter.load(ROOT / path, base.fingerprint, base.d_model)
        probs = filler_probs(ad.head, ad.temperatures[0])
        rows[name] = {"adapter": path, "weights_sha256": weights_hash(ROOT / path), "threshold": ad.thresholds[0],
                      "val_auc": ad.info.get("val_auc"), "val_filler": filler_rates(probs, keys, ad.thresholds[0])}
        logging.info("%s: val filler rise %+.3f", name, rows[name]["val_filler"]["largest_benign_rise"])

    data = window_data(base, cfg.task, layers, **cfg.augmentation(), splits=("train", "val"))
    tail = template_tail_tokens(base)
    wanted = [c.strip() for c in args.only.split(";") if c.strip()] or list(CANDIDATES)
    for name in wanted:
        over = CANDIDATES[name]
        c = cfg.model_copy(update=over)
        t0 = time.perf_counter()
        head, info = fit_window(data, layers, c.windows[0], base.d_model, weight_decay=c.weight_decays[0],
                                epochs=c.epochs, lr=c.lr, batch_size=c.batch_size, seed=c.seed, patience=c.patience,
                                tail_drop_share=c.tail_drop_share, tail_tokens=tail if c.tail_drop_share else 0,
                                long_copy_weight=c.long_copy_weight)
        val_logits = predict_window(head, data.states["val"])
        temps, thresholds = calibrate(val_logits, data.y["val"][:, None].astype(float), c.target_fpr)
        probs = filler_probs(head, temps[0])
        rows[name] = {"overrides": over, "threshold": thresholds[0], "val_auc": info["val_auc"],
                      "epoch": info["epoch"], **{k: v for k, v in val_report(head, data).items() if k != "auc"},
                      "val_flag_rates": flag_rates_by_kind(data.kinds["val"], data.y["val"],
                                                           calibrated(val_logits[:, 0], temps[0]), thresholds[0]),
                      "val_filler": filler_rates(probs, keys, thresholds[0]),
                      "seconds": round(time.perf_counter() - t0, 1)}
        ad = GuardAdapter("window", cfg.task, "prompt", ["unsafe"], {"layers": layers, "window": c.windows[0]}, head,
                          temps, thresholds, max_length=int(getattr(base.model.config, "max_position_embeddings", 0)
                                                            or 8192), target_fpr=c.target_fpr,
                          info={"val_auc": info["val_auc"], "overrides": over, "languages": ["en"]})
        rows[name]["saved"] = str(ad.save(SAVE / name.replace(",", "").replace(" ", "_"), base.fingerprint,
                                          base.name).relative_to(ROOT))
        logging.info("%s: val AUC %.4f, val filler rise %+.3f", name, info["val_auc"],
                     rows[name]["val_filler"]["largest_benign_rise"])
        atomic_write_text(OUT, json.dumps(out, indent=1) + "\n")
    passing = [k for k in CANDIDATES if k in rows and rows[k]["val_filler"]["passes"]]
    out["chosen"] = max(passing, key=lambda k: rows[k]["val_auc"]) if passing else None
    atomic_write_text(OUT, json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: {"val_auc": r.get("val_auc"), **r["val_filler"]} for k, r in rows.items()}, indent=1))
    print("chosen:", out["chosen"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
