"""Per-head test metrics and ROC / PR plots of a guard trained on a user's file.

The numbers come from the held-out test split's labels and logits, never from constants; the
plots (`plots/roc.png`, `plots/pr.png` beside the adapter) draw one curve per head.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsa.extras import pyplot
from dsa.guards.calibrate import calibrated
from dsa.metrics import auprc, pr_curve, roc_auc, roc_curve

LOW_FPR = 0.01


def tpr_at_fpr(y, s, max_fpr: float = LOW_FPR) -> float:
    """The highest true-positive rate whose false-positive rate is at most `max_fpr` (NaN with one class)."""
    if np.isnan(roc_auc(y, s)):
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def head_report(y: np.ndarray, logits: np.ndarray, temperature: float, threshold: float) -> dict:
    """Test metrics of one head: labels `y` ([n], NaN = not annotated), raw `logits` ([n]).

    Returns:
        {"test_auc", "test_auprc", "tpr_at_1pct_fpr", "tpr_at_threshold", "fpr_at_threshold",
        "n_test", "positives"}: ranking metrics on logits; the rates at the stored threshold on
        the calibrated probabilities, as `dsa guard score` flags.
    """
    known = ~np.isnan(y)
    y, logits = y[known].astype(int), logits[known]
    flags = calibrated(logits, temperature) >= threshold
    pos, neg = y == 1, y == 0
    return {"test_auc": roc_auc(y, logits), "test_auprc": auprc(y, logits),
            "tpr_at_1pct_fpr": tpr_at_fpr(y, logits, LOW_FPR),
            "tpr_at_threshold": float(flags[pos].mean()) if pos.any() else float("nan"),
            "fpr_at_threshold": float(flags[neg].mean()) if neg.any() else float("nan"),
            "n_test": int(known.sum()), "positives": int(pos.sum())}


def format_head(name: str, r: dict) -> str:
    """One printed line per head."""
    return (f"  {name}: test AUC {r['test_auc']:.4f}, TPR at 1% FPR {r['tpr_at_1pct_fpr']:.3f}, at the "
            f"threshold TPR {r['tpr_at_threshold']:.3f} / FPR {r['fpr_at_threshold']:.3f} "
            f"({r['n_test']} test rows, {r['positives']} positive)")


def plot_heads(test: dict[str, tuple[np.ndarray, np.ndarray]], out_dir: str | Path, title: str = "") -> list[Path]:
    """`out_dir/roc.png` and `out_dir/pr.png`, one curve per head of `test` ({head: (labels, logits)})."""
    plt = pyplot()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in ("roc", "pr"):
        fig, ax = plt.subplots(figsize=(5, 4.2))
        for head, (y, s) in test.items():
            if np.isnan(roc_auc(y, s)):
                continue  # one class in the test split: no curve
            if kind == "roc":
                fpr, tpr, _ = roc_curve(y, s)
                ax.plot(fpr, tpr, lw=1.4, label=f"{head} (AUC {roc_auc(y, s):.3f}, "
                                                f"TPR@1%FPR {tpr_at_fpr(y, s):.2f})")
            else:
                prec, rec, _ = pr_curve(y, s)
                ax.plot(rec, prec, lw=1.4, label=f"{head} (AP {auprc(y, s):.3f})")
        if kind == "roc":
            ax.plot([0, 1], [0, 1], "k:", lw=0.8)
            ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title=f"ROC {title} (test)")
        else:
            ax.set(xlabel="recall", ylabel="precision", title=f"PR {title} (test)", ylim=(0, 1.02))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right" if kind == "roc" else "lower left")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(out_dir / f"{kind}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
