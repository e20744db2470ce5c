"""Bring your own data: a guard from a user's labelled CSV, timed on a fresh feature store and
again on the cached one, and the architectures whose taps add up -> results/byo.json.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/byo.py [--limit 2000]
    OMP_NUM_THREADS=1 .venv/bin/python scripts/byo.py --archs-only   # only the two checks below

The file is ToxiGen's human-annotated CSV read as a user would: `text` column, `label` column of
class names (`--positive hate`), nothing cleaned. The first run extracts every text's features
(one base forward each) into a new store under runs/; the second run reads them all from it.

"architectures_tested" lists the entries of `dsa.taps.ARCHITECTURES` for which
`dsa.taps.check_identity` passed just now on a tiny random fp32 model of that architecture
(tests/tiny.py): embed + Σ(attn_out + mlp_out) = resid_post at every layer.
"accelerate_processes" is the number of processes that took part in a tiny guard-head training
launched just now by `accelerate launch --multi_gpu --num_processes 2` on the CPU (gloo), counted
only when every rank ended with the same parameters as one process (`tests.ddp_smoke.check_processes`;
details under "accelerate").
Each run updates only its own keys of the file and keeps the others.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from dsa.adapter_io import atomic_write_text
from dsa.base import load_base
from dsa.data.sources import data_dir
from dsa.guards.config import GuardTrainConfig
from dsa.recipes.guard_train import train_guard
from dsa.taps import ARCHITECTURES, check_identity

ROOT = Path(__file__).resolve().parents[1]


def architectures_tested() -> list[str]:
    """The table's architectures whose taps add up on a tiny random fp32 model (failures are printed)."""
    sys.path.insert(0, str(ROOT))
    from tests.tiny import tiny_model

    passed = []
    for name in sorted(ARCHITECTURES):
        try:
            error = check_identity(tiny_model(name))
        except (AssertionError, ValueError) as err:
            print(f"{name:12s} FAILED: {err}")
            continue
        print(f"{name:12s} ok (largest relative error {error:.1e})")
        passed.append(name)
    return passed


def accelerate_check(n: int = 2) -> dict:
    """Launch the n-process smoke training; the process count only if the ranks agreed."""
    sys.path.insert(0, str(ROOT))
    from tests.ddp_smoke import check_processes

    r = check_processes(n)
    ok = r.get("params_equal_across_ranks") and set(r.get("world_sizes") or []) == {n}
    print(f"accelerate launch: {r}")
    return {"accelerate_processes": r["accelerate_processes"] if ok else 0, "accelerate": r}


def update(path: Path, entries: dict) -> dict:
    """Merge `entries` into the JSON object at `path` (other keys kept), written atomically."""
    old = json.loads(path.read_text()) if path.exists() else {}
    atomic_write_text(path, json.dumps(old | entries, indent=1) + "\n")
    return old | entries


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "byo.json")
    ap.add_argument("--cached-only", action="store_true",
                    help="keep the store of an earlier run and time the cached run again (first_run_s kept)")
    ap.add_argument("--archs-only", action="store_true",
                    help="only run the taps identity on every architecture and the accelerate launch "
                         "(architectures_tested, accelerate_processes)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    archs = {"architectures_tested": architectures_tested(), **accelerate_check(2)}
    if args.archs_only:
        update(args.out, archs)
        print(json.dumps(archs))
        return 0
    csv = data_dir() / "toxigen" / "annotated" / "toxigen_annotated_train.csv"
    store = ROOT / "runs" / "byo_store"
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.cached_only and not (store.is_dir() and "user_csv_guard" in old):
        raise SystemExit("--cached-only needs an earlier full run (runs/byo_store and results/byo.json)")
    if not args.cached_only:
        shutil.rmtree(store, ignore_errors=True)
    cfg = GuardTrainConfig(data=str(csv), map={"text": "text", "label": "label"}, positive="hate",
                           limit=args.limit, task="toxigen_user_csv", out=str(ROOT / "runs" / "byo_guard"))
    base = load_base()
    import sklearn.linear_model  # noqa: F401 - imported before the clock starts, as in a warm process
    runs = []
    for _ in range(1 if args.cached_only else 2):
        t0 = time.perf_counter()
        adapter = train_guard(base, cfg, feature_root=store)
        runs.append((time.perf_counter() - t0, adapter))
    cached_s, second = runs[-1]
    second.save(cfg.out, base.fingerprint, base.name)
    rows = second.info["data"]["rows"]
    first = old["user_csv_guard"] if args.cached_only else {
        "first_run_s": round(runs[0][0], 2), "first_run_feature_s": round(runs[0][1].info["feature_seconds"], 2)}
    res = {"user_csv_guard": {"file": csv.name, "rows": sum(rows.values()), "rows_per_split": rows,
                              "first_run_s": first["first_run_s"], "cached_run_s": round(cached_s, 2),
                              "first_run_feature_s": first["first_run_feature_s"],
                              "cached_run_feature_s": round(second.info["feature_seconds"], 2),
                              "test_auc": second.info["test_auc"], "val_auc": second.info["val_auc"],
                              "arch": cfg.arch, "base": base.name},
           "command": f"OMP_NUM_THREADS=1 .venv/bin/python scripts/byo.py --limit {args.limit}"
                      + (" (then --cached-only)" if args.cached_only else "")}
    update(args.out, res | archs)
    print(json.dumps(res | archs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
