"""docs/results-precision.md, generated from results/guard-precision.json (the study) and the
shipped guard's operating points in results/guard.json. Every number on the page comes from them.

    python -m dsa.guards.precision_doc
"""

from __future__ import annotations

import json
from pathlib import Path

from dsa.adapter_io import atomic_write_text

STUDY, GUARD, DOC = Path("results/guard-precision.json"), Path("results/guard.json"), Path("docs/results-precision.md")
PROBE = Path("results/guard-pooling-probe.json")
THREE = Path("results/guard-three-level-probe.json")
ATTN = Path("results/guard-attention-probe.json")
JUDGE = Path("results/guard-judge-suffix-probe.json")
SETS = ("strongreject", "xstest_unsafe", "coconot_eval_safety", "xstest_safe", "coconot_contrast_eval",
        "alpaca_eval")
# issue targets for the shipped guard at its threshold: (set, "≥"/"≤", value)
TARGETS = (("strongreject", "≥", 0.97), ("xstest_unsafe", "≥", 0.85), ("xstest_safe", "≤", 0.10),
           ("coconot_contrast_eval", "≤", 0.10), ("alpaca_eval", "≤", 0.03))
AUC_TARGET = 0.93


def _f(x, d=3) -> str:
    return "–" if x is None or x != x else f"{x:.{d}f}"


def candidates_table(study: dict) -> list[str]:
    head = ("| candidate | params | val AUC | val TPR@1%FPR | val TPR@5%FPR | XSTest AUC | "
            + " | ".join(f"flag {s}" for s in SETS) + " |")
    lines = [head, "|" + "---|" * (6 + len(SETS))]
    for name, c in study["candidates"].items():
        mark = " **(selected)**" if name == study["selected"] else ""
        ev = c["eval_only"]
        lines.append(f"| {name}{mark} | {c['params']:,} | {_f(c['val']['auc'])} | {_f(c['val']['tpr_at_1pct_fpr'])} | "
                     f"{_f(c['val']['tpr_at_5pct_fpr'])} | {_f(ev.get('auc_xstest'))} | "
                     + " | ".join(_f(ev["flag_rate"].get(s)) for s in SETS) + " |")
    return lines


def loso_table(loso: dict) -> list[str]:
    lines = ["| held-out source | class | n | AUC vs the other class | TPR@1%FPR | flag rate at its threshold |",
             "|---|---|---|---|---|---|"]
    for src, r in sorted(loso.items(), key=lambda kv: (kv[1]["label"], kv[0])):
        kind = "harmful" if r["label"] == 1 else "benign"
        lines.append(f"| {src} | {kind} | {r['n']} | {_f(r['auc'])} | {_f(r['tpr_at_1pct_fpr'])} | "
                     f"{_f(r['flag_rate'])} |")
    return lines


def shipped_section(op: dict) -> list[str]:
    fr = op["flag_rate"]
    lines = [f"Adapter `{op['adapter']}` (head `{op['head']}`, weights sha256 `{op['weights_sha256'][:16]}…`), "
             f"threshold {_f(op['threshold'])}, scored through `dsa.guards.classify` on the raw prompts "
             f"(`{op.get('command', 'dsa guard operating-points')}`).", "",
             "| set | should be | n | flag rate | target | met |", "|---|---|---|---|---|---|"]
    targets = {s: (op_, v) for s, op_, v in TARGETS}
    for s in SETS:
        if s not in fr:
            continue
        want = "flagged" if op["expected_label"].get(s) == 1 else "answered"
        t = targets.get(s)
        met = "–" if t is None else ("yes" if (fr[s] >= t[1] if t[0] == "≥" else fr[s] <= t[1]) else
                                     f"**no** (by {abs(fr[s] - t[1]):.3f})")
        lines.append(f"| {s} | {want} | {op['n'][s]} | {_f(fr[s])} | "
                     f"{'' if t is None else t[0] + ' ' + str(t[1])} | {met} |")
    auc = op.get("auc_xstest")
    lines += ["", f"XSTest AUC (safe vs unsafe prompts) {_f(auc)} (target ≥ {AUC_TARGET}: "
              f"{'met' if auc is not None and auc >= AUC_TARGET else f'missed by {AUC_TARGET - auc:.3f}'}); "
              f"TPR at 1 % / 5 % FPR on XSTest {_f(op.get('tpr_at_1pct_fpr_xstest'))} / "
              f"{_f(op.get('tpr_at_5pct_fpr_xstest'))}; pooled over all "
              f"eval-only sets: AUC {_f(op.get('auc_pooled'))}, TPR at 1 % FPR {_f(op.get('tpr_at_1pct_fpr'))}."]
    return lines


def _probe_header(first: str, *extra: str) -> list[str]:
    cols = [first, "val AUC", "val TPR@1 %FPR", "XSTest AUC", "pooled eval AUC", "flagged: StrongREJECT",
            "XSTest-safe", "CoCoNot contrast", "AlpacaEval", *extra]
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]


def _probe_row(name: str, r: dict, *extra: float) -> str:
    """One probe read-out: validation numbers, then eval-only ones (reported, never used to choose)."""
    e, fr = r["eval_only"], r["eval_only"]["flag_rate"]
    cells = [_f(r["val_auc"], 4), _f(r["val_tpr_at_1pct_fpr"]), _f(e["auc_xstest"]), _f(e["auc_pooled"]),
             *(_f(fr[k]) for k in ("strongreject", "xstest_safe", "coconot_contrast_eval", "alpaca_eval")),
             *(_f(x) for x in extra)]
    return f"| {name} | " + " | ".join(cells) + " |"


def pooling_probe_section(probe: dict) -> list[str]:
    """The user-turn pooling probe (scripts/probe_pooling.py)."""
    lines = ["## Does the system prompt dilute mean pooling?", "",
             f"Generated from `{PROBE}` (`{probe['command']}`). Every prompt starts with the same "
             f"{probe['system_block_tokens']}-token system block, whose states are identical for every prompt "
             "under causal attention. The probe reads layers " + ", ".join(map(str, probe["layers"])) +
             " with the shipped head type (standardised, balanced logistic regression, C chosen on validation "
             f"AUC, threshold at {probe['threshold']}); `turn_mean` averages the cached per-token states of the last "
             f"{probe['window']} tokens that come after the system block.", "",
             *_probe_header("view")]
    lines += [_probe_row(name, r) for name, r in probe["views"].items()]
    shipped, turn = probe["views"].get("mean+last (shipped)"), probe["views"].get("turn_mean+last")
    if shipped and turn:
        d = turn["eval_only"]["auc_xstest"] - shipped["eval_only"]["auc_xstest"]
        lines += ["", f"Leaving the system block out changes XSTest AUC by {d:+.3f} and validation TPR at 1 % FPR by "
                      f"{turn['val_tpr_at_1pct_fpr'] - shipped['val_tpr_at_1pct_fpr']:+.3f}"
                      + (": within 0.01, so pooling over the user's turn alone is not where precision is lost."
                         if abs(d) < 0.01 else ".")]
    return lines


def three_level_section(probe: dict) -> list[str]:
    """The three-level (safe / controversial / unsafe) probe (scripts/probe_three_level.py)."""
    n = probe["n"]
    lines = ["## Does a third class (PHTest `controversial`) help?", "",
             f"Generated from `{THREE}` (`{probe['command']}`). PHTest's controversial prompts "
             f"({n['controversial_train']:,} train, {n['controversial_val']:,} val, "
             f"{n['controversial_test']:,} test by "
             "the same seeded hash as every source) are left out of the shipped guard's labels. Here the shipped "
             "head's features (layers " + ", ".join(map(str, probe["layers"])) + f"; {probe['features']}) are read out "
             "with them as safe, or as a third class of a multinomial logistic regression scored as unsafe against "
             "the rest or against safe only (the latter is linear, so it would fit the shipped head format). C is "
             f"chosen on validation AUC (safe vs unsafe), the threshold is at {probe['threshold']}; eval-only sets "
             "are reported, never used to choose. `controversial flagged` is the held-out controversial prompts' "
             "flag rate (no target: the data gives them no right answer).", "",
             *_probe_header("read-out", "controversial flagged")]
    lines += [_probe_row(name, r, r["flag_controversial_test"]) for name, r in probe["readouts"].items()]
    ref = probe["readouts"].get("binary (shipped recipe)")
    if ref:
        best = max(probe["readouts"].items(), key=lambda kv: kv[1]["val_tpr_at_1pct_fpr"])
        others = [r["eval_only"]["auc_xstest"] - ref["eval_only"]["auc_xstest"]
                  for k, r in probe["readouts"].items() if k != "binary (shipped recipe)"]
        lines += ["", f"By the study's rule (validation TPR at 1 % FPR) the best read-out is `{best[0]}`. Against the "
                      f"shipped recipe the other read-outs move XSTest AUC by {min(others):+.3f} to {max(others):+.3f}"
                      + (": all within 0.01, so where the controversial prompts go (left out, safe, or a class of "
                         "their own) does not separate harmful intent from sensitive topics on these features."
                         if max(abs(x) for x in others) < 0.01 else ".")]
    return lines


def attention_probe_section(probe: dict, study: dict) -> list[str]:
    """The attention-pooling probe (scripts/probe_attention.py) beside the shipped recipe."""
    r, t = probe["attention_probe"], probe["training"]
    e = r["eval_only"]
    lines = ["## Does learned attention over the tokens read intent better than the mean?", "",
             f"Generated from `{ATTN}` (`{probe['command']}`). Per text, weights softmax(q · u_t) over the per-token "
             f"states u_t of layers {', '.join(map(str, probe['token_layers']))} (the store's last {probe['window']} "
             "tokens, standardised); the attention-pooled state is read out linearly beside the shipped head's "
             f"features (mean + last token of layers {', '.join(map(str, probe['pooled_layers']))}). "
             f"{probe['params']:,} parameters, {t['optimizer']}, {t['loss']}, epoch chosen on validation AUC "
             f"(epoch {r['epoch']} of {t['epochs']}); threshold at {probe['threshold']}.", "",
             *_probe_header("read-out"), _probe_row("attention + mean/last", r)]
    ref = study.get("candidates", {}).get(study.get("selected", ""))
    if ref:
        re_, rf = ref["eval_only"], ref["eval_only"]["flag_rate"]
        lines.append(f"| {study['selected']} (shipped type, from the study) | {_f(ref['val']['auc'], 4)} | "
                     f"{_f(ref['val']['tpr_at_1pct_fpr'])} | {_f(re_['auc_xstest'])} | {_f(re_['auc_pooled'])} | "
                     f"{_f(rf['strongreject'])} | {_f(rf['xstest_safe'])} | {_f(rf['coconot_contrast_eval'])} | "
                     f"{_f(rf['alpaca_eval'])} |")
        d = e["auc_xstest"] - re_["auc_xstest"]
        lines += ["", f"XSTest AUC {d:+.3f} against the shipped head type, validation TPR at 1 % FPR "
                      f"{r['val_tpr_at_1pct_fpr'] - ref['val']['tpr_at_1pct_fpr']:+.3f}"
                      + (": choosing tokens does not help: reading the token states fits "
                         "validation as well and transfers worse." if d < 0 else ".")]
    return lines


def judge_suffix_section(probe: dict) -> list[str]:
    """The judge-question probe (scripts/probe_judge_suffix.py): the base asked about the request."""
    n, rows = probe["n"], probe["readouts"]
    lines = ["## Does asking the base about the request change what its states say?", "",
             f"Generated from `{JUDGE}` (`{probe['command']}`). After the served text (chat template and generation "
             f"prompt) one more user turn asks \"{probe['question']}\"; the states at its last token are read. Because "
             "the question comes after the served prompt, a runtime could run it on the prompt's KV cache and drop it "
             "again. The question was written once and not tuned. Every read-out is trained on the same seeded "
             f"subsample of {n['train']:,} of the {probe['n_train_full']:,} training prompts (so only the features "
             f"differ; C chosen on validation AUC, threshold at {probe['threshold']}); `zero-shot yes − no` is the "
             "base's own logit of \"Yes\" minus \"No\" there, with no training. Prompt layers "
             + ", ".join(map(str, probe["prompt_layers"])) + " (mean + last token); judge layers "
             + ", ".join(map(str, probe["judge_layers"])) + " (last token).", "",
             *_probe_header("read-out"), *(_probe_row(name, r) for name, r in rows.items())]
    ref = rows.get("prompt states (shipped features)")
    if ref:
        def delta(auc: str) -> str:
            return ", ".join(f"{k} {r['eval_only'][auc] - ref['eval_only'][auc]:+.3f}"
                             for k, r in rows.items() if r is not ref)

        best = max(rows, key=lambda k: rows[k]["val_tpr_at_1pct_fpr"])
        lines += ["", "Against the prompt states on the same subsample, XSTest AUC: " + delta("auc_xstest")
                  + "; pooled eval AUC: " + delta("auc_pooled")
                  + f". By the study's rule (validation TPR at 1 % FPR) the best read-out is `{best}`."]
    return lines


def write_precision_doc(path: Path = DOC) -> Path | None:
    if not STUDY.exists():
        return None
    study = json.loads(STUDY.read_text())
    guard = json.loads(GUARD.read_text()) if GUARD.exists() else {}
    op = guard.get("operating_points", {}).get("prompt_safety")
    lines = ["# Prompt-guard precision: harmful intent, not sensitive topics", "",
             "Generated by `python -m dsa.guards.precision_doc` from `results/guard-precision.json` "
             f"(`{study.get('command', 'dsa guard study')}`) and `results/guard.json` "
             "(`dsa guard operating-points`). Base: the embedded SmolLM2-135M-Instruct.", "",
             "The study and the probes below compare read-outs of the PLR kind on the task as it was when "
             "they ran; \"shipped\" in their tables means the PLR head that was shipped then (kept as "
             "`adapters/baselines/prompt_safety_plr_v1`). The prompt guard shipped now is a window head "
             "(max of rolling means over the prompt's tokens, trained with padded and wrapped copies and "
             "the project's contrast prompts): its operating points are in *The shipped prompt guard* "
             "below, its robustness in [results-robustness.md](results-robustness.md).", "",
             "## Training data (of the study)", "",
             "Harmful requests (AdvBench, HarmfulQA, CatQA-en, DangerousQA, Do-Not-Answer, ToxicChat) against "
             "benign prompts that share their topics: CoCoNot preference prompts, PHTest `harmless`, WildChat, "
             "OpenAI-moderation prompts with no flag, Alpaca instructions that use harm words, Alpaca instructions "
             "phrased as questions (most harmful prompts are questions; without benign ones question form itself "
             "read as harm), and plain Alpaca. "
             "PHTest `controversial` is kept out of the labels. 30 % of the training prompts of both classes are "
             "also framed (polite, fictional, hypothetical, academic, step-by-step), so a framing is never a label "
             "cue. Splits are seeded (70/10/20 by content hash); every eval-only set (StrongREJECT, XSTest, "
             "CoCoNot's two test files, AlpacaEval, IFEval, MMLU, MT-Bench, GSM8K) is removed from training "
             "by normalised text. Rows per split: "
             + ", ".join(f"{k} {v:,}" for k, v in study["n"].items()) + ".", "",
             "## Candidates and the selection rule", "",
             f"Rule (validation data only): {study['rule']}. Selected: **{study['selected']}**. The eval-only "
             "columns are reported for every candidate but were not used to choose; flag rates are at each "
             "candidate's own threshold (5 % FPR on validation).", "", *candidates_table(study), ""]
    for name, why in study.get("not_measured", {}).items():
        lines += [f"Not measured: `{name}` — {why}.", ""]
    if study.get("assembled"):
        lines += [f"How this file was made: {study['assembled']}.", ""]
    if "loso" in study:
        lines += ["## Leave-one-source-out", "",
                  f"The selected head type ({study['selected']}) retrained without one source (its framed copies "
                  "too), calibrated on validation without it, then tested on every row of that source against the "
                  "other class's test rows from the remaining sources.", "", *loso_table(study["loso"]), ""]
    if op:
        lines += ["## The shipped prompt guard", "", *shipped_section(op), ""]
    if PROBE.exists():
        lines += [*pooling_probe_section(json.loads(PROBE.read_text())), ""]
    if THREE.exists():
        lines += [*three_level_section(json.loads(THREE.read_text())), ""]
    if ATTN.exists():
        lines += [*attention_probe_section(json.loads(ATTN.read_text()), study), ""]
    if JUDGE.exists():
        lines += [*judge_suffix_section(json.loads(JUDGE.read_text())), ""]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    print(write_precision_doc())
