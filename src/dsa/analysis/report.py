"""Subspace results -> slim JSON, PNG plots (layer × module heatmaps, curves over k) and markdown."""

from __future__ import annotations

import json
import math
from pathlib import Path

from dsa.analysis.compare import MODULE_ORDER
from dsa.extras import pyplot

_ROW_FIELDS = ("proj_energy", "proj_energy_right", "random_baseline", "random_baseline_right")


def _r(x: float, digits: int = 5) -> float:
    return float(f"{x:.{digits}g}") if isinstance(x, float) and math.isfinite(x) else x


def _slim_view(view: dict) -> dict:
    out = {f: {str(k): _r(v) for k, v in view[f].items()} for f in _ROW_FIELDS}
    out["angle_mean_cos2"] = {str(k): _r(v["mean_cos2"]) for k, v in view["angles"].items()}
    out["delta_norm"], out["delta_rank"] = _r(view["delta_norm"]), view["delta_rank"]
    return out


def _slim_overall(o: dict) -> dict:
    return {k: ({str(kk): (_r(vv) if not isinstance(vv, dict) else {str(a): _r(b) for a, b in vv.items()})
                 for kk, vv in v.items()} if isinstance(v, dict) else _r(v)) for k, v in o.items()}


def to_json(results: dict, meta: dict | None = None) -> dict:
    """The `results/subspace.json` layout: {adapter: {overall, per_layer, interference, ...}}."""
    meta = dict(meta or {})
    descriptions = meta.pop("descriptions", {})
    out: dict = {}
    for name, res in results.items():
        per = []
        for row in res["per_layer"]:
            item = {"layer": row["layer"], "module": row["module"], "key": row["key"],
                    "w0_norm": _r(row["top_r"]["w0_norm"]), **_slim_view(row["top_r"])}
            if "full" in row:
                item["full_delta"] = _slim_view(row["full"])
                item["top_r_energy_share"] = _r(row["top_r_energy_share"])
            if "interference" in row:
                item["interference"] = {k: _r(v) for k, v in row["interference"].items()}
            per.append(item)
        entry = {"kind": res["kind"], "path": res["path"], "description": descriptions.get(name, ""),
                 "info": res["info"], "rank": res["rank"], "meta": meta,
                 "overall": _slim_overall(res["overall"])}
        if "overall_full_delta" in res:
            entry["overall_full_delta"] = _slim_overall(res["overall_full_delta"])
        entry["interference"] = {s: _r(v["pooled"]) for s, v in res["interference"].items()}
        entry["interference_mean_module"] = {s: _r(v["mean_module"]) for s, v in res["interference"].items()}
        entry["per_layer"] = per
        out[name] = entry
    return out


def write_json(results: dict, path: str | Path, meta: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(results, meta), indent=1) + "\n")
    return path


def _enrichment(row_view: dict, k: int) -> float:
    """log2(E(k) / (k/d_out)): 0 = like a random subspace, < 0 = more orthogonal than random."""
    e, b = row_view["proj_energy"].get(str(k)), row_view["random_baseline"].get(str(k))
    if e is None or not b:
        return float("nan")
    return math.log2(max(e, 1e-6) / b)


def _updates(data: dict) -> dict:
    return {k: v for k, v in data.items() if not k.startswith("_")}


def plot_heatmaps(data: dict, k_ref: int, path: str | Path) -> Path:
    """One layer × module heatmap per update of log2(E(k_ref) / random baseline), from `to_json` data."""
    import numpy as np

    plt = pyplot()

    results = _updates(data)
    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names) + 1, 6), squeeze=False,
                             gridspec_kw={"wspace": 0.35})
    im = None
    for ax, name in zip(axes[0], names, strict=True):
        rows = results[name]["per_layer"]
        layers = sorted({r["layer"] for r in rows})
        mods = [m for m in MODULE_ORDER if any(r["module"] == m for r in rows)]
        grid = np.full((len(layers), len(mods)), np.nan)
        for r in rows:
            if r["module"] in mods:
                grid[layers.index(r["layer"]), mods.index(r["module"])] = _enrichment(r, k_ref)
        im = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3)
        ax.set_xticks(range(len(mods)), mods)
        ax.set_yticks(range(0, len(layers), max(1, len(layers) // 10)),
                      [layers[i] for i in range(0, len(layers), max(1, len(layers) // 10))])
        ax.set_xlabel("module")
        ax.set_ylabel("layer")
        ax.set_title(name, fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), label=f"log2( E(k={k_ref}) / random k/d )")
    fig.suptitle(f"Share of ΔW energy in W0's top-{k_ref} left singular subspace vs random (blue = more orthogonal)",
                 fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_curves(data: dict, path: str | Path) -> Path:
    """Overall E(k) / random baseline over k for every update (left and right sides)."""
    results = _updates(data)
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, side in ((axes[0], ""), (axes[1], "_right")):
        for name, res in results.items():
            o = res["overall"]
            ks = sorted(o[f"proj_energy{side}_k"], key=int)
            x = [int(k) for k in ks]
            line, = ax.plot(x, [_ratio(o, int(k), side) for k in ks], marker="o", ms=3, label=f"{name} (top-r)")
            if "overall_full_delta" in res:
                f = res["overall_full_delta"]
                ax.plot(x, [_ratio(f, int(k), side) for k in ks], ls="--", color=line.get_color(),
                        label=f"{name} (full ΔW)")
        ax.axhline(1.0, color="black", ls=":", label="random subspace (k/d)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (top-k singular vectors of W0)")
        ax.set_ylabel("E(k) / (k/d)")
        ax.set_title("left: ‖U_kᵀ ΔW‖²/‖ΔW‖² (output space)" if not side else
                     "right: ‖ΔW V_k‖²/‖ΔW‖² (input space)", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle("Share of ΔW energy in W0's top-k singular subspace, relative to a random subspace "
                 "(< 1: more orthogonal than random)", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_module_types(data: dict, k_ref: int, path: str | Path) -> Path:
    """Mean log2(E/baseline) at k_ref per module type, one bar group per update."""
    results = _updates(data)
    import numpy as np

    plt = pyplot()

    names = list(results)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = []
        for m in MODULE_ORDER:
            rows = [r for r in results[name]["per_layer"] if r["module"] == m]
            vals.append(float(np.nanmean([_enrichment(r, k_ref) for r in rows])) if rows else np.nan)
        ax.bar(np.arange(len(MODULE_ORDER)) + i * width, vals, width, label=name)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(MODULE_ORDER)) + 0.4 - width / 2, MODULE_ORDER)
    ax.set_ylabel(f"mean log2(E(k={k_ref}) / random)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _ratio(o: dict, k: int, side: str = "") -> float:
    e, b = o.get(f"proj_energy{side}_k", {}).get(str(k)), o.get(f"random_baseline{side}_k", {}).get(str(k))
    return e / b if e is not None and b else float("nan")


def _fmt(x: float, pct: bool = False, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{100 * x:.{digits}g}%" if pct else f"{x:.{digits}g}"


def random_scatter(res: dict, k: int) -> float:
    """How far one random draw per module, averaged over modules, lands from k/d (max over updates):
    the size of an E/random difference that a random subspace alone would produce."""
    gaps = [abs(_ratio({"proj_energy_k": r["overall"]["random_energy_k"],
                        "random_baseline_k": r["overall"]["random_baseline_k"]}, k) - 1)
            for r in res.values() if "random_energy_k" in r["overall"]]
    return max(gaps) if gaps else float("nan")


def claims(data: dict, roles: dict[str, str], k_ref: int) -> list[str]:
    """One line per claim of 2510.09004 that the roles allow checking, with the numbers."""
    res = _updates(data)
    lines = []

    def ratio_of(name: str, full: bool = False) -> float:
        return _ratio(res[name]["overall_full_delta" if full else "overall"], k_ref)

    ks = sorted(res[next(iter(res))]["overall"]["proj_energy_k"], key=int)
    safety, full, task = roles.get("safety_lora"), roles.get("full_ft"), roles.get("task_lora")
    if safety in res:
        r = ratio_of(safety)
        below = [k for k in ks if _ratio(res[safety]["overall"], int(k)) < 1]
        lines.append(f"**Safety LoRA below the random baseline** ({safety}): E(k={k_ref}) is {_fmt(r, digits=4)}× the "
                     f"random k/d share — {'holds' if r < 1 else 'does not hold'} at k={k_ref}; below random at "
                     f"{len(below)}/{len(ks)} of k ∈ {{{', '.join(ks)}}}.")
    if safety in res and full in res:
        a, b, c = ratio_of(safety), ratio_of(full), ratio_of(full, full=True)
        noise = random_scatter(res, k_ref)
        so, fo, ff = res[safety]["overall"], res[full]["overall"], res[full]["overall_full_delta"]
        wins = sum(_ratio(so, int(k)) < min(_ratio(fo, int(k)), _ratio(ff, int(k))) for k in ks)
        wins_r = sum(_ratio(so, int(k), "_right") < min(_ratio(fo, int(k), "_right"), _ratio(ff, int(k), "_right"))
                     for k in ks)
        lines.append(f"**LoRA more orthogonal than full fine-tuning** ({safety} vs {full}): E/random at k={k_ref} "
                     f"is {_fmt(a, digits=4)} for the LoRA vs {_fmt(b, digits=4)} for the full fine-tune's top-r ΔW "
                     f"and {_fmt(c, digits=4)} for "
                     f"its whole ΔW — output side: {'holds' if a < min(b, c) else 'does not hold'}"
                     f"{' (within the ' + _fmt(noise, True, 2) + ' a random subspace scatters at this k)' if abs(a - min(b, c)) < noise else ''} "  # noqa: E501
                     f"(LoRA lower than both at {wins}/{len(ks)} k); input side: right E({k_ref})/random "
                     f"{_fmt(_ratio(so, k_ref, '_right'))} vs {_fmt(_ratio(fo, k_ref, '_right'))} / "
                     f"{_fmt(_ratio(ff, k_ref, '_right'))} — LoRA lower at {wins_r}/{len(ks)} k.")
    if safety in res and task in res:
        a, b = ratio_of(safety), ratio_of(task)
        so, to = res[safety]["overall"], res[task]["overall"]
        wins = sum(_ratio(so, int(k)) < _ratio(to, int(k)) for k in ks)
        wins_r = sum(_ratio(so, int(k), "_right") < _ratio(to, int(k), "_right") for k in ks)
        noise = random_scatter(res, k_ref)
        small = [k for k in ks if int(k) <= 8]
        lines.append(f"**Safety update more orthogonal than a non-safety task** ({safety} vs {task}): E/random at "
                     f"k={k_ref} is {_fmt(a, digits=4)} vs {_fmt(b, digits=4)} — "
                     f"{'holds' if a < b else 'does not hold'}"
                     f"{' but within the ' + _fmt(noise, True, 2) + ' a random subspace scatters at this k' if abs(a - b) < noise else ''} "  # noqa: E501
                     f"(safety lower at {wins}/{len(ks)} k on the output side, {wins_r}/{len(ks)} on the input side); "
                     f"at k ≤ 8: " + ", ".join(f"{_fmt(_ratio(so, int(k)))} vs {_fmt(_ratio(to, int(k)))}"
                                               for k in small) +
                     " — both above random there.")
    if safety in res and res[safety].get("interference"):
        i = res[safety]["interference"]
        if "benign" in i and "harmful" in i:
            lines.append(f"**The safety patch speaks louder on harmful prompts** ({safety}): ‖ΔW x‖²/‖W0 x‖² is "
                         f"{_fmt(i['harmful'], True)} on harmful vs {_fmt(i['benign'], True)} on benign prompts "
                         f"(×{_fmt(i['harmful'] / i['benign'])}).")
    return lines


def write_markdown(data: dict, path: str | Path, *, command: str, images: dict[str, str], roles: dict[str, str],
                   k_ref: int, notes: str = "") -> Path:
    """docs/results-subspace.md: the command, claims with numbers, tables and plots."""
    res = _updates(data)
    meta = next(iter(res.values())).get("meta", {})
    ks = sorted(res[next(iter(res))]["overall"]["proj_energy_k"], key=int)
    show = [k for k in ks if int(k) in (1, 4, 16, 64, 256)] or ks
    L = ["# Safety-patch subspace analysis (2510.09004 on our base)", "",
         f"Generated by {command if '`' in command else f'`{command}`'} — do not edit by hand; numbers in "
         "`results/subspace.json`.", "",
         f"Base: `{meta.get('base', '?')}`. Subspace sizes k = {', '.join(ks)}; headline k = {k_ref}; "
         f"top-r view with r = {meta.get('rank', '?')}. Interference on {meta.get('n_prompts', '?')} benign "
         "(alpaca_instructions test split) and harmful (prompt_safety test positives) prompts, chat template applied.",
         "", "## What holds on this base", ""]
    L += [f"- {c}" for c in claims(data, roles, k_ref)] + [""]
    L += ["## Updates compared", "",
          "| name | kind | where | trained on | rank | modules |", "|---|---|---|---|---|---|"]
    for name, r in res.items():
        L.append(f"| {name} | {r['kind']} | `{r['path']}` | {r.get('description', '')} | "
                 f"{r['info'].get('r', '–')} | {r['overall']['n_modules']} |")
    L += ["", "## Overall projection energy (mean over modules)", "",
          "E(k) = ‖U_kᵀ ΔW‖²/‖ΔW‖² with U_k the top-k left singular vectors of W0 (output space); "
          "random = k/d_out, what a random k-dimensional subspace captures on average (the empirical "
          "draw is in the JSON as `random_energy_k`). Ratio < 1: ΔW avoids W0's principal directions.", "",
          "| update | view | " + " | ".join(f"E({k}) / random" for k in show)
          + f" | right E({k_ref}) / random | cos² angles (k={k_ref}) |",
          "|---|---|" + "---|" * (len(show) + 2)]
    for name, r in res.items():
        views = [("top-r", r["overall"])] + (
            [("full ΔW", r["overall_full_delta"])] if "overall_full_delta" in r else [])
        for label, o in views:
            cells = [f"{_fmt(o['proj_energy_k'][k])} / {_fmt(o['random_baseline_k'][k])}" for k in show]
            L.append(f"| {name} | {label} | " + " | ".join(cells) +
                     f" | {_fmt(_ratio(o, k_ref, '_right'))}× | {_fmt(o['angle_mean_cos2_k'].get(str(k_ref)))} |")
    fulls = [n for n, r in res.items() if "overall_full_delta" in r]
    if fulls:
        L += ["", "Top-r share of a full fine-tune's ΔW energy (‖ΔW_r‖²/‖ΔW‖², mean over modules): " +
              ", ".join(f"{n}: {_fmt(res[n]['overall'].get('top_r_energy_share'), True)}" for n in fulls) + ". "
              "Entries of ΔW that are exactly 0 (a bf16-saved fine-tune rounds small changes away): " +
              ", ".join(f"{n}: {_fmt(res[n]['overall'].get('zero_fraction'), True)} (stored as "
                        f"{', '.join(res[n]['info'].get('dtypes', []))})" for n in fulls) + "."]
    L += ["", f"### Per module type: E(k={k_ref}) / random", "",
          "| update | " + " | ".join(MODULE_ORDER) + " |", "|---|" + "---|" * len(MODULE_ORDER)]
    for name, r in res.items():
        by = r["overall"]["proj_energy_by_module_k"]
        cells = []
        for m in MODULE_ORDER:
            rows = [x for x in r["per_layer"] if x["module"] == m]
            e = by.get(m, {}).get(str(k_ref))
            b = rows[0]["random_baseline"].get(str(k_ref)) if rows else None
            cells.append(_fmt(e / b) if e is not None and b else "–")
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    L += ["", "## Interference on real inputs", "",
          "‖ΔW X‖²_F / ‖W0 X‖²_F summed over all modules and prompt tokens (pooled), and the mean of the "
          "per-module ratios.", "",
          "| update | benign | harmful | harmful / benign | mean-module benign | mean-module harmful |",
          "|---|---|---|---|---|---|"]
    for name, r in res.items():
        i, m = r.get("interference", {}), r.get("interference_mean_module", {})
        if i:
            L.append(f"| {name} | {_fmt(i.get('benign'), True)} | {_fmt(i.get('harmful'), True)} | "
                     f"{_fmt(i['harmful'] / i['benign']) if i.get('benign') else '–'} | "
                     f"{_fmt(m.get('benign'), True)} | {_fmt(m.get('harmful'), True)} |")
    L += ["", "## Plots", ""]
    for title, rel in images.items():
        L += [f"### {title}", "", f"![{title}]({rel})", ""]
    if notes:
        L += [notes.rstrip(), ""]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(L) + "\n")
    return path


METHOD_NOTES = """## Method and choices

- **Per module.** For every adapted weight W0 (q, k, v, o, gate, up, down of every decoder layer) and
  its update ΔW we take thin SVDs (float64). E(k) uses W0's top-k *left* singular vectors (the
  output directions W0 writes most strongly); the right-side (input) version is in the JSON and
  the curve plot. Overall numbers are unweighted means over modules, so each matrix votes once.
- **Random baseline.** A random k-dimensional subspace of R^d captures k/d of any fixed ΔW's energy
  in expectation. The tables use k/d; one Haar-random draw per module is stored as
  `random_energy_k` and matches it. A ratio E/random < 1 means ΔW avoids W0's principal subspace.
- **Principal angles** between the top-k left subspace of W0 and the column space of ΔW (rank ≤ r):
  mean cos² = 1 nested, 0 orthogonal; for a random subspace it is k/d as well.
- **Full fine-tune: two views.** A full fine-tune's ΔW is (nearly) full-rank, and its tail is
  mostly optimiser noise spread over every direction, which pulls any overlap measure towards the
  random baseline regardless of what the update does. So we report (a) its top-r singular
  subspace ΔW_r, r = the LoRA rank — the like-for-like comparison with a rank-r LoRA, which is what
  the orthogonality claim is about — and (b) the whole ΔW, which is what the model actually
  applies (and what interference uses). The share of ΔW's energy in its top-r part says how
  low-rank the fine-tune really is.
- **Interference.** Forward pre-hooks on the base's Linear modules record C = Σ x xᵀ of each
  module's inputs over every prompt token (chat template with the generation prompt, no
  response) of the first N prompts of the benign test set (alpaca_instructions) and of the
  harmful test set (prompt_safety positives); then ‖ΔW X‖²/‖W0 X‖² = tr(ΔW C ΔWᵀ)/tr(W0 C W0ᵀ),
  summed over modules (pooled) or averaged per module. Only the base is ever in memory.
- **Streaming.** W0 and each ΔW are read one matrix at a time with safetensors `safe_open` (the
  full fine-tune from its own dir), so the analysis never holds two copies of a model.
"""

CAVEATS = """## Caveats

- **Scale.** One 135M-parameter base (d_model 576, 30 layers), small updates (tens of optimiser steps on
  tens to hundreds of short examples: see "trained on"). The paper's 7B-scale numbers need not carry
  over; the tool runs on any base.
- **Kept rows.** An update given as `NAME=results/subspace.json` is copied from the stored results
  (same ks and prompts, checked) instead of re-analysed — for fine-tunes whose weights are no longer
  at hand; its "trained on" cell says so.
- **LoRA's input side is partly its random init.** PEFT starts A with a random (Kaiming) matrix and
  B = 0; the row space of ΔW = B·A — the input side — keeps part of that random start and is pulled
  towards the random baseline by construction (the more so the shorter the run). The output side
  (B, trained from zero) carries only what the update learned. Part of "LoRA is more orthogonal than full fine-tuning" on the input side is
  this inheritance, not a property of safety data; compare the output side for the learned part.
- **Full fine-tunes must be saved in float32.** The base is bf16; a bf16-saved fine-tune rounds
  every weight back onto the bf16 grid, so ΔW becomes 0 wherever the change was below half a step
  and quantisation noise (spread evenly over all directions) elsewhere, which drags every overlap
  towards the random baseline. The report prints the share of exactly-zero ΔW entries.
- **Analysis-local artefacts** (label in the table) were trained by `scripts/subspace_train.py`
  for this analysis only; see `dsa_training.json` in each directory for the recipe and losses.
"""  # noqa: E501
