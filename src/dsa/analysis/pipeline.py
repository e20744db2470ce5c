"""One call from a base + updates to results/subspace.json, plots and docs/results-subspace.md."""

from __future__ import annotations

import gc
import json
import logging
import time
from pathlib import Path

from dsa.analysis.compare import analyze_updates
from dsa.analysis.interference import input_second_moments
from dsa.analysis.report import (
    CAVEATS,
    METHOD_NOTES,
    plot_curves,
    plot_heatmaps,
    plot_module_types,
    to_json,
    write_markdown,
)
from dsa.analysis.updates import Update, WeightReader, open_update

log = logging.getLogger(__name__)


def describe(update: Update) -> str:
    """A one-line provenance of an update, from the dsa_training.json our training script writes."""
    f = Path(getattr(update, "path", "")) / "dsa_training.json"
    if not f.exists():
        return ""
    t = json.loads(f.read_text())
    epochs = t.get("epochs")
    held = t.get("held_out_losses") or []
    held_text = (f", held-out loss ({t.get('n_held_out')} ex.) " + "→".join(f"{x:.2f}" for x in held)
                 if len(held) > 1 else "")
    losses = t.get("losses") or []
    if epochs and epochs > 1 and len(losses) >= epochs:  # where the training loss settles, epoch by epoch
        per = len(losses) // epochs
        means = [sum(losses[i * per:(i + 1) * per]) / per for i in range(epochs)]
        held_text = f", epoch-mean loss {', '.join(f'{m:.2f}' for m in means)}" + held_text
    return (f"{t.get('task')} ({t.get('n_examples')} ex., {epochs} epoch{'s' if epochs != 1 else ''}"
            f"{f', {s} steps' if (s := t.get('steps')) else ''}, lr {t.get('lr')}, "
            f"loss {t.get('first_loss', 0):.2f}→{t.get('last_loss', 0):.2f}{held_text}; {t.get('label', '')})")


KEPT = "kept from an earlier run of this analysis, not re-analysed"


def kept_entries(adapters: dict[str, str | Path], ks: list[int], n_prompts: int) -> dict[str, dict]:
    """Entries carried unchanged from a stored results JSON: an update given as NAME=FILE.json.

    For updates whose weights are no longer at hand (e.g. an expensive full fine-tune): the row is
    copied as it was computed, with the ks and prompt count checked against this run, and says so."""
    out = {}
    for name, path in adapters.items():
        if not str(path).endswith(".json"):
            continue
        stored = json.loads(Path(path).read_text())
        if name not in stored:
            raise ValueError(f"{path} has no entry {name!r} to keep (it has {sorted(stored)})")
        entry = json.loads(json.dumps(stored[name]))
        meta = entry.get("meta", {})
        if meta.get("ks") != ks or meta.get("n_prompts") != n_prompts:
            raise ValueError(f"kept entry {name!r} was computed with ks {meta.get('ks')} and n_prompts "
                             f"{meta.get('n_prompts')}, not {ks} / {n_prompts}")
        if KEPT not in entry.get("description", ""):
            entry["description"] = f"{entry.get('description', '')} — {KEPT} (`{path}`)"
        out[name] = entry
    return out


def default_roles(updates: dict[str, Update], first: str) -> dict[str, str]:
    """safety_lora = the --adapter; full_ft / task_lora = the first full / LoRA update compared."""
    roles = {"safety_lora": first}
    for name, u in updates.items():
        if name == first:
            continue
        roles.setdefault("full_ft" if u.kind == "full" else "task_lora", name)
    return roles


def prompt_moments(base_name: str, module_names: list[str], n_prompts: int, batch_size: int = 8) -> dict:
    """Input second moments of every module on n benign and n harmful test prompts."""
    from dsa.base import load_base
    from dsa.data import benign_prompts, harmful_prompts

    base = load_base(base_name, dtype="fp32")
    sets = {"benign": benign_prompts("test")[:n_prompts], "harmful": harmful_prompts("test")[:n_prompts]}
    out = {}
    for name, prompts in sets.items():
        texts = [base.chat_text(p) for p in prompts]
        out[name] = input_second_moments(base.model, base.tokenizer, texts, module_names,
                                         batch_size=batch_size, desc=f"{name} inputs")
    del base
    gc.collect()
    return out


def run_subspace_analysis(
    base: str,
    adapters: dict[str, str | Path],
    *,
    first: str,
    ks: list[int],
    k_ref: int,
    rank: int | None = None,
    n_prompts: int = 64,
    interference: bool = True,
    out_json: str | Path = "results/subspace.json",
    doc: str | Path | None = "docs/results-subspace.md",
    img_dir: str | Path = "docs/img",
    roles: dict[str, str] | None = None,
    command: str = "",
    notes: str = "",
) -> dict:
    """Analyse every update, then write the JSON, the plots and (if `doc`) the markdown report."""
    from dsa.adapter_io import atomic_write_text
    from dsa.base import resolve_base_path

    t0 = time.perf_counter()
    reader = WeightReader(resolve_base_path(base))
    kept = kept_entries(adapters, ks, n_prompts if interference else 0)  # read before out_json is rewritten
    updates = {n: open_update(p, reader) for n, p in adapters.items() if n not in kept}  # validates first
    moments = None
    if interference:
        modules = sorted({k.removesuffix(".weight") for u in updates.values() for k in u.keys()})
        moments = prompt_moments(base, modules, n_prompts)
    results = analyze_updates(reader, updates, ks=ks, rank=rank, moments=moments)
    del moments
    r = next(iter(results.values()))["rank"]
    meta = {"base": base, "rank": r, "ks": ks, "k_ref": k_ref, "n_prompts": n_prompts if interference else 0,
            "descriptions": {n: describe(u) for n, u in updates.items()}, "command": command,
            "kept": sorted(kept),
            "seconds": round(time.perf_counter() - t0, 1)}
    fresh = to_json(results, meta)
    data = {n: kept[n] if n in kept else fresh[n] for n in adapters}  # the order given on the command line
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out_json), json.dumps(data, indent=1) + "\n")
    if doc:
        render_report(data, doc, img_dir=img_dir, roles=roles or default_roles(updates, first), k_ref=k_ref,
                      command=command, notes=notes)
    log.info("subspace analysis done in %.0f s", time.perf_counter() - t0)
    return data


def render_report(data: dict, doc: str | Path, *, img_dir: str | Path, roles: dict[str, str], k_ref: int,
                  command: str, notes: str = "") -> Path:
    """Plots + markdown from `results/subspace.json` data (re-renderable without re-analysing)."""
    img_dir = Path(img_dir)
    images = {
        "Layer × module heatmap": plot_heatmaps(data, k_ref, img_dir / "subspace-heatmap.png"),
        "Projection energy over k": plot_curves(data, img_dir / "subspace-curves.png"),
        "Per module type": plot_module_types(data, k_ref, img_dir / "subspace-modules.png"),
    }
    rel = {t: str(Path(p).relative_to(Path(doc).parent)) if Path(p).is_relative_to(Path(doc).parent)
           else str(Path("img") / Path(p).name) for t, p in images.items()}
    return write_markdown(data, doc, command=command, images=rel, roles=roles, k_ref=k_ref,
                          notes=METHOD_NOTES + "\n" + CAVEATS + (notes or ""))
