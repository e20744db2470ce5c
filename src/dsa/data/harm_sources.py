"""Loaders of the harmful-request sources (StrongREJECT, AdvBench, Red-Instruct, Do-Not-Answer)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dsa.data.records import DataError, Record
from dsa.data.source_rows import int_field, make_record, registrar, table_rows
from dsa.data.user_files import need

LOADERS: dict = {}  # name -> loader, in catalogue order
source = registrar(LOADERS)


@source("strongreject")
def _strongreject(root: Path) -> list[Record]:
    return [make_record(loc, "strongreject", split="eval", prompt=need(r, "forbidden_prompt", loc), label=1,
                        meta={"category": r["category"], "origin": r.get("source")})
            for loc, r in table_rows(root / "strongreject" / "strongreject_dataset.csv")]


@source("advbench")
def _advbench(root: Path) -> list[Record]:
    return [make_record(loc, "advbench", prompt=need(r, "goal", loc), label=1, meta={"target": r.get("target")})
            for loc, r in table_rows(root / "advbench" / "harmful_behaviors.csv")]


@source("advbench_strings")
def _advbench_strings(root: Path) -> list[Record]:
    return [make_record(loc, "advbench_strings", text=need(r, "target", loc), label=1)
            for loc, r in table_rows(root / "advbench" / "harmful_strings.csv")]


def _leaves(obj: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(topic path, question) for the nested {topic: {subtopic: [questions]}} red-instruct files."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k.rstrip(":").strip()))
    elif isinstance(obj, list):
        for x in obj:
            yield from _leaves(x, path)
    else:
        yield path, str(obj)


@source("red_instruct_harmful_questions")
def _red_instruct(root: Path, languages: tuple[str, ...] = ("english",)) -> list[Record]:
    """HarmfulQA, CatQA, DangerousQA, AdversarialQA (English; CatQA also chinese/vietnamese)."""
    folder, out = root / "red_instruct_harmful_questions", []
    subsets = [("harmfulqa", "english"), *((f"catqa_{lang}", lang) for lang in languages),
               ("dangerousqa", "english"), ("adversarialqa", "english")]
    for subset, lang in subsets:
        if lang not in languages:
            continue
        path = folder / f"{subset}.json"
        if not path.is_file():
            raise DataError(f"{path}: missing (is the data folder complete?)")
        for topics, q in _leaves(json.loads(path.read_text(encoding="utf-8"))):
            meta = {"subset": subset, "language": lang, "topic": topics[0] if topics else None,
                    "subtopic": topics[1] if len(topics) > 1 else None}
            out.append(make_record(path.name, "red_instruct_harmful_questions", prompt=q, label=1, meta=meta))
    return out


@source("do_not_answer")
def _do_not_answer(root: Path) -> list[Record]:
    return [make_record(loc, "do_not_answer", id=f"do_not_answer:{r['id']}", prompt=need(r, "question", loc),
                        label=1, meta={"question_id": int(r["id"]), "risk_area": r["risk_area"],
                                       "types_of_harm": r["types_of_harm"], "specific_harms": r["specific_harms"]})
            for loc, r in table_rows(root / "do_not_answer" / "do_not_answer_en.csv")]


@source("do_not_answer_responses")
def _do_not_answer_responses(root: Path) -> list[Record]:
    """One record per (question, model): label = human `<model>_harmful` (1 = harmful response)."""
    out = []
    for loc, r in table_rows(root / "do_not_answer" / "data_en.csv"):
        for model in (c.removesuffix("_harmful") for c in r if c.endswith("_harmful")):
            out.append(make_record(
                loc, "do_not_answer_responses", id=f"do_not_answer_responses:{r['id']}:{model}",
                prompt=r["question"], response=need(r, f"{model}_response", loc),
                label=int_field(loc, r, f"{model}_harmful"),
                meta={"question_id": int(r["id"]), "model": model, "risk_area": r["risk_area"],
                      "action": int_field(loc, r, f"{model}_action")}))
    return out
