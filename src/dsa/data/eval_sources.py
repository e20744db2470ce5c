"""Loaders of the over-refusal, preference-pair and utility-eval sources (XSTest, CoCoNot, PHTest,
IFEval, HH-RLHF, MMLU, MT-Bench, Vicuna bench, AlpacaEval, GSM8K); the eval-only ones get split "eval"."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dsa.data.records import DataError, Record, content_id
from dsa.data.source_rows import int_field, make_record, registrar, table_rows
from dsa.data.user_files import need

LOADERS: dict = {}  # name -> loader, in catalogue order
source = registrar(LOADERS)


@source("xstest")
def _xstest(root: Path) -> list[Record]:
    """XSTest prompts (eval only): label 1 = unsafe prompt, 0 = safe prompt."""
    return [make_record(loc, "xstest", id=f"xstest:{r['id']}", split="eval", prompt=need(r, "prompt", loc),
                        label={"unsafe": 1, "safe": 0}[need(r, "label", loc)],
                        meta={"type": r["type"], "focus": r.get("focus") or None, "note": r.get("note") or None})
            for loc, r in table_rows(root / "xstest" / "xstest_prompts.csv")]


@source("xstest_completions")
def _xstest_completions(root: Path) -> list[Record]:
    """Five models' XSTest completions: label 1 = full or partial refusal, 0 = full compliance."""
    out = []
    for path in sorted((root / "xstest" / "model_completions_human_labeled").glob("*.csv")):
        model = path.stem.removeprefix("xstest_v2_completions_")
        for loc, r in table_rows(path):
            final = need(r, "final_label", loc)
            out.append(make_record(loc, "xstest_completions", id=f"xstest_completions:{model}:{r['id']}",
                                   prompt=r["prompt"], response=need(r, "completion", loc),
                                   label=int(final.startswith(("2_", "3_"))),
                                   meta={"model": model, "type": r["type"], "final_label": final}))
    return out


def _jsonl(root: Path, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from table_rows(root / "coconot" / f"{name}.jsonl")


SAFETY_CONCERNS = "Requests with safety concerns"


@source("coconot_pref")
def _coconot_pref(root: Path) -> list[Record]:
    """CoCoNot preference prompts: every one should be complied with (label 0 = benign); the
    "Requests with safety concerns" rows look refusable and are the edgy ones. meta has the
    chosen (compliant) and rejected (refusing) answers."""
    return [make_record(loc, "coconot_pref", id=f"coconot_pref:{r['id']}", prompt=need(r, "prompt", loc), label=0,
                        meta={"category": r.get("category"), "subcategory": r.get("subcategory"),
                              "chosen": r.get("chosen"), "rejected": r.get("rejected")})
            for loc, r in _jsonl(root, "coconot_pref")]


@source("coconot_contrast_eval")
def _coconot_contrast_eval(root: Path) -> list[Record]:
    """CoCoNot contrast test set (eval only): benign prompts that look refusable (label 0)."""
    return [make_record(loc, "coconot_contrast_eval", id=f"coconot_contrast_eval:{r['id']}", split="eval",
                        prompt=need(r, "prompt", loc), label=0,
                        meta={"category": r.get("category"), "subcategory": r.get("subcategory")})
            for loc, r in _jsonl(root, "coconot_contrast_eval")]


@source("coconot_eval")
def _coconot_eval(root: Path) -> list[Record]:
    """CoCoNot test set (eval only): requests a model should not comply with. label 1 for the
    "Requests with safety concerns" rows (harmful requests); None for the other categories
    (incomplete, unsupported, indeterminate, humanizing: not harmful, but not plain benign)."""
    return [make_record(loc, "coconot_eval", id=f"coconot_eval:{r['id']}", split="eval", prompt=need(r, "prompt", loc),
                        label=1 if r.get("category") == SAFETY_CONCERNS else None,
                        meta={"category": r.get("category"), "subcategory": r.get("subcategory")})
            for loc, r in _jsonl(root, "coconot_eval")]


@source("phtest")
def _phtest(root: Path) -> list[Record]:
    """PHTest pseudo-harmful prompts: `harmless` rows label 0; `controversial` rows label None
    (a refusal may be reasonable: kept out of the benign label), meta harmfulness."""
    out = []
    for loc, r in table_rows(root / "phtest" / "dataset_v0.1.csv"):
        kind = need(r, "Harmfulness", loc)
        if kind not in ("harmless", "controversial"):
            raise DataError(f"{loc}: field 'Harmfulness': expected harmless or controversial, got {kind!r}")
        out.append(make_record(loc, "phtest", prompt=need(r, "Request", loc), label=0 if kind == "harmless" else None,
                               meta={"harmfulness": kind, "phtest_id": r.get("ID")}))
    return out


@source("ifeval")
def _ifeval(root: Path) -> list[Record]:
    """IFEval (eval only): prompts with verifiable instructions (ids + kwargs for the checkers)."""
    return [make_record(loc, "ifeval", id=f"ifeval:{r['key']}", split="eval", prompt=need(r, "prompt", loc),
                        meta={"key": r["key"], "instruction_id_list": need(r, "instruction_id_list", loc),
                              "kwargs": r.get("kwargs")})
            for loc, r in table_rows(root / "ifeval" / "input_data.jsonl")]


@source("hh_rlhf")
def _hh_rlhf(root: Path) -> list[Record]:
    """Harmless-base test pairs: prompt = dialogue up to the last shared "Assistant:"; meta chosen/rejected."""
    out, marker = [], "\n\nAssistant:"
    for loc, r in table_rows(root / "hh_rlhf" / "harmless-base_test.jsonl.gz"):
        chosen, rejected = need(r, "chosen", loc), need(r, "rejected", loc)
        common = os.path.commonprefix([chosen, rejected])
        cut = common.rfind(marker) + len(marker)
        if cut < len(marker):
            raise DataError(f"{loc}: chosen and rejected share no 'Assistant:' turn")
        out.append(make_record(loc, "hh_rlhf", id=content_id("hh_rlhf", chosen, rejected), prompt=chosen[:cut],
                               meta={"chosen": chosen[cut:].strip(), "rejected": rejected[cut:].strip()}))
    return out


@source("mmlu")
def _mmlu(root: Path) -> list[Record]:
    """Test (split "eval") and dev (split "train", the few-shot pool); answer index in meta."""
    out = []
    for subset, split in (("test", "eval"), ("dev", "train")):
        for path in sorted((root / "mmlu" / subset).glob("*.csv")):
            subject = path.stem.removesuffix(f"_{subset}")
            for i, (loc, r) in enumerate(table_rows(path)):
                choices = [need(r, f"choice{k}", loc) for k in range(4)]
                out.append(make_record(loc, "mmlu", id=f"mmlu:{subset}:{subject}:{i}", split=split,
                                       prompt=need(r, "question", loc),
                                       meta={"subject": subject, "subset": subset, "choices": choices,
                                             "answer": int_field(loc, r, "answer")}))
    return out


def _turn_questions(path: Path, source: str, references: dict | None = None) -> list[Record]:
    return [make_record(loc, source, id=f"{source}:{r['question_id']}", split="eval", prompt=need(r, "turns", loc)[0],
                        meta={"question_id": r["question_id"], "category": r.get("category"), "turns": r["turns"],
                              "reference": (references or {}).get(r["question_id"])})
            for loc, r in table_rows(path)]


@source("mt_bench")
def _mt_bench(root: Path) -> list[Record]:
    refs = {r["question_id"]: r["choices"][0]["turns"]
            for _, r in table_rows(root / "mt_bench" / "reference_answer_gpt-4.jsonl")}
    return _turn_questions(root / "mt_bench" / "question.jsonl", "mt_bench", refs)


@source("vicuna_bench")
def _vicuna_bench(root: Path) -> list[Record]:
    return _turn_questions(root / "mt_bench" / "vicuna_bench" / "question.jsonl", "vicuna_bench")


@source("alpaca_eval")
def _alpaca_eval(root: Path) -> list[Record]:
    return [make_record(loc, "alpaca_eval", split="eval", prompt=need(r, "instruction", loc), response=r.get("output"),
                        meta={"dataset": r.get("dataset"), "generator": r.get("generator")})
            for loc, r in table_rows(root / "alpaca_eval" / "gpt4_1106_preview_model_outputs.json")]


@source("gsm8k")
def _gsm8k(root: Path) -> list[Record]:
    out = []
    for loc, r in table_rows(root / "gsm8k" / "gsm8k_test.jsonl"):
        turns = {m["role"]: m["content"] for m in need(r, "messages", loc)}
        solution = turns.get("assistant")
        answer = solution.rsplit("####", 1)[-1].strip() if solution and "####" in solution else None
        out.append(make_record(loc, "gsm8k", split="eval", prompt=turns.get("user"), response=solution,
                               meta={"answer": answer}))
    return out
