"""ROC and PR curves as PNG (matplotlib Agg, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsa.extras import pyplot
from dsa.metrics import auprc, pr_curve, roc_auc, roc_curve


def plot_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "") -> Path:
    """One PNG with a ROC panel and a PR panel; `curves` maps a method name to (labels, scores)."""
    plt = pyplot()

    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, (y, s) in curves.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax_roc.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(y, s):.3f})", lw=1.4)
        prec, rec, _ = pr_curve(y, s)
        ax_pr.plot(rec, prec, label=f"{name} (AP {auprc(y, s):.3f})", lw=1.4)
    ax_roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax_roc.set(xlabel="false-positive rate", ylabel="true-positive rate", title=f"ROC {title}")
    ax_pr.set(xlabel="recall", ylabel="precision", title=f"PR {title}", ylim=(0, 1.02))
    for ax in (ax_roc, ax_pr):
        ax.legend(fontsize=7, loc="lower right" if ax is ax_roc else "lower left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
