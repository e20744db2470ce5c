"""Run the subspace analysis of several updates against one base, streaming module by module.

    results = analyze_updates(base_dir, {"refusal-lora": path_a, "full-ft": path_b}, ks=[1, 4, 16, 64])

For each base weight touched by any update, W0 is read and decomposed once; each update's ΔW is
then read (one matrix), compared and dropped. A dense ΔW (full fine-tune) is scored twice: on its
top-r singular subspace ("top_r", r = the LoRA rank, comparable with a rank-r LoRA) and whole
("full": every bit of the change). Interference uses second moments recorded beforehand.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dsa.analysis.interference import lowrank_output_energy, output_energy
from dsa.analysis.subspace import module_stats, svd
from dsa.analysis.updates import Update, WeightReader, module_of, open_update

MODULE_ORDER = ["q", "k", "v", "o", "gate", "up", "down"]
DEFAULT_KS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def _order(key: str) -> tuple:
    layer, mod = module_of(key)
    return (layer if layer is not None else -1,
            MODULE_ORDER.index(mod) if mod in MODULE_ORDER else len(MODULE_ORDER), key)


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def summarise(per_module: list[dict], view: str) -> dict:
    """Unweighted means over modules (each module one vote) of every per-k measure of `view`."""
    out: dict = {}
    for field in ("proj_energy", "proj_energy_right", "random_energy", "random_baseline",
                  "random_baseline_right"):
        by_k: dict[int, list[float]] = defaultdict(list)
        for row in per_module:
            for k, v in row[view][field].items():
                by_k[int(k)].append(v)
        out[f"{field}_k"] = {k: _mean(v) for k, v in sorted(by_k.items())}
    by_k = defaultdict(list)
    for row in per_module:
        for k, v in row[view]["angles"].items():
            by_k[int(k)].append(v["mean_cos2"])
    out["angle_mean_cos2_k"] = {k: _mean(v) for k, v in sorted(by_k.items())}
    by_type: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in per_module:
        for k, v in row[view]["proj_energy"].items():
            by_type[row["module"]][int(k)].append(v)
    out["proj_energy_by_module_k"] = {m: {k: _mean(v) for k, v in sorted(d.items())}
                                      for m, d in by_type.items()}
    out["n_modules"] = len(per_module)
    return out


def analyze_updates(
    base: str | Path | WeightReader,
    adapters: dict[str, str | Path | Update],
    *,
    ks: list[int] | None = None,
    rank: int | None = None,
    moments: dict[str, tuple[dict[str, torch.Tensor], int]] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Overlap of every update with the base's singular subspaces, per module and overall.

    Args:
        base: the base model's weights (dir, or an open `WeightReader`).
        adapters: name -> PEFT/dsa LoRA dir, full fine-tuned model dir, or an opened `Update`.
        ks: subspace sizes k (clipped per module to rank(W0)).
        rank: r for the "top_r" view of dense updates (default: the largest LoRA rank given, else 16).
        moments: prompt set -> (input second moments per module, tokens), from
            `input_second_moments`, keyed by module name ("model.layers.0.self_attn.q_proj").
        seed: seed of the random-subspace draws.
    Returns:
        {adapter name: {"kind", "info", "overall", "overall_full_delta"?, "per_layer", "interference"}}.
    """
    ks = sorted(set(ks or DEFAULT_KS))
    reader = base if isinstance(base, WeightReader) else WeightReader(base)
    updates = {n: (a if isinstance(a, Update) else open_update(a, reader)) for n, a in adapters.items()}
    if rank is None:
        ranks = [int(u.info["r"]) for u in updates.values() if u.kind == "lora" and u.info.get("r")]
        rank = max(ranks) if ranks else 16
    keys = sorted({k for u in updates.values() for k in u.keys()}, key=_order)
    gen = torch.Generator().manual_seed(seed)
    rows: dict[str, list[dict]] = {n: [] for n in updates}
    inter: dict[str, dict[str, list[tuple[float, float]]]] = {n: defaultdict(list) for n in updates}
    for key in tqdm(keys, desc="modules", disable=not progress):
        W0 = reader.get(key).to(torch.float64)
        w0 = svd(W0)
        layer, mod = module_of(key)
        module_name = key.removesuffix(".weight")
        inputs = {s: mom[module_name] for s, (mom, _n) in (moments or {}).items() if module_name in mom}
        base_energy = {s: output_energy(W0, C) for s, C in inputs.items()}
        for name, upd in updates.items():
            if key not in upd.keys():
                continue
            delta = upd.delta(key)
            if tuple(delta.shape) != tuple(W0.shape):
                raise ValueError(f"{name}: ΔW {tuple(delta.shape)} does not match W0 {tuple(W0.shape)} at {key}")
            f = delta.svd()
            row = {"key": key, "layer": layer, "module": mod,
                   "top_r": module_stats(w0, f.top(rank), ks, generator=gen)}
            if not delta.low_rank:
                row["full"] = module_stats(w0, f, ks, generator=gen, angles=False)
                row["top_r_energy_share"] = f.top(rank).energy / f.energy if f.energy else float("nan")
                # bf16-saved fine-tunes round small changes to 0 and the rest to a coarse grid
                row["zero_fraction"] = float((delta.dense_ == 0).double().mean())
            for set_name, C in inputs.items():
                e = (lowrank_output_energy(delta.B, delta.A, delta.scale, C) if delta.low_rank
                     else output_energy(delta.dense(), C))
                row.setdefault("interference", {})[set_name] = e / base_energy[set_name]
                inter[name][set_name].append((e, base_energy[set_name]))  # pooled over modules later
            rows[name].append(row)
    out = {}
    for name, upd in updates.items():
        per = rows[name]
        res = {"kind": upd.kind, "path": str(getattr(upd, "path", "")), "info": upd.info, "rank": rank,
               "overall": summarise(per, "top_r")}
        if upd.kind == "full":
            res["overall_full_delta"] = summarise(per, "full")
            res["overall"]["top_r_energy_share"] = _mean([r["top_r_energy_share"] for r in per])
            res["overall"]["zero_fraction"] = _mean([r["zero_fraction"] for r in per])
        res["interference"] = {
            s: {"mean_module": _mean([r["interference"][s] for r in per if s in r.get("interference", {})]),
                "pooled": sum(a for a, _ in v) / sum(b for _, b in v) if v else float("nan")}
            for s, v in inter[name].items()}
        res["per_layer"] = per
        out[name] = res
    return out
