"""Loaders for the datasets under `data_dir()` (the shared `data/` folder): one function per source.

`load_source(name)` returns that source's Records; label 1 always means the unsafe / positive
class of the source (harmful request, toxic text, consistent summary, refusal — see each loader).
Eval-only sets (strongreject, xstest, mmlu test, mt_bench, vicuna_bench, alpaca_eval, gsm8k, ifeval and
CoCoNot's two test files) get
split "eval"; alpaca_instructions keeps its official train/val/test files; the rest have split None.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dsa.data.records import DataError, Record, content_id, unique_ids
from dsa.data.user_files import need, read_table

log = logging.getLogger(__name__)
_LOADERS: dict[str, Callable[..., list[Record]]] = {}
OPENAI_MODERATION_HEADS = ("S", "H", "V", "HR", "SH", "S3", "H2", "V2")


def data_dir() -> Path:
    """$DSA_DATA, else the first existing of <cwd>/../shared/data and <repo root>/../shared/data."""
    if env := os.environ.get("DSA_DATA"):
        if not Path(env).is_dir():
            raise DataError(f"DSA_DATA={env} is not a directory")
        return Path(env)
    repo_root = Path(__file__).resolve().parents[3]
    for cand in (Path.cwd() / ".." / "shared" / "data", repo_root / ".." / "shared" / "data"):
        if cand.is_dir():
            return cand.resolve()
    raise DataError("no dataset folder found: set DSA_DATA=/path/to/data, or place the shared data "
                    f"folder at ../shared/data (looked in {Path.cwd().parent} and {repo_root.parent})")


def list_sources() -> list[str]:
    """Names accepted by `load_source`, in catalogue order."""
    return list(_LOADERS)


def load_source(name: str, root: str | Path | None = None, **options: Any) -> list[Record]:
    """All Records of one source (cached per process; Records are frozen, the list is a copy)."""
    if name not in _LOADERS:
        raise DataError(f"unknown source {name!r}: expected one of {', '.join(_LOADERS)}")
    root = Path(root) if root is not None else data_dir()
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))
    return list(_cached(name, str(root), frozen))


@functools.lru_cache(maxsize=64)
def _cached(name: str, root: str, options: tuple) -> tuple[Record, ...]:
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist")
    records = _LOADERS[name](folder, **dict(options))
    ids = unique_ids(r.id for r in records)
    return tuple(r if r.id == i else r.model_copy(update={"id": i}) for r, i in zip(records, ids, strict=True))


def _source(name: str) -> Callable:
    def register(fn: Callable[..., list[Record]]) -> Callable[..., list[Record]]:
        _LOADERS[name] = fn
        return fn
    return register


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    if not path.is_file():
        raise DataError(f"{path}: missing (is the data folder complete?)")
    yield from read_table(path).rows


def _record(loc: str, source: str, **fields: Any) -> Record:
    fields.setdefault("id", content_id(source, fields.get("prompt") or fields.get("text"), fields.get("response")))
    try:
        return Record(source=source, **fields)
    except ValidationError as err:
        e = err.errors()[0]
        raise DataError(f"{loc}: field {'.'.join(map(str, e['loc'])) or 'record'!r}: {e['msg']}") from None


def _int(loc: str, row: dict, column: str) -> int:
    try:
        return int(float(need(row, column, loc)))
    except (TypeError, ValueError):
        raise DataError(f"{loc}: field {column!r}: expected a number, got {row[column]!r}") from None


# --- harmful requests -----------------------------------------------------------------------

@_source("strongreject")
def _strongreject(root: Path) -> list[Record]:
    return [_record(loc, "strongreject", split="eval", prompt=need(r, "forbidden_prompt", loc), label=1,
                    meta={"category": r["category"], "origin": r.get("source")})
            for loc, r in _rows(root / "strongreject" / "strongreject_dataset.csv")]


@_source("advbench")
def _advbench(root: Path) -> list[Record]:
    return [_record(loc, "advbench", prompt=need(r, "goal", loc), label=1, meta={"target": r.get("target")})
            for loc, r in _rows(root / "advbench" / "harmful_behaviors.csv")]


@_source("advbench_strings")
def _advbench_strings(root: Path) -> list[Record]:
    return [_record(loc, "advbench_strings", text=need(r, "target", loc), label=1)
            for loc, r in _rows(root / "advbench" / "harmful_strings.csv")]


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


@_source("red_instruct_harmful_questions")
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
            out.append(_record(path.name, "red_instruct_harmful_questions", prompt=q, label=1, meta=meta))
    return out


@_source("do_not_answer")
def _do_not_answer(root: Path) -> list[Record]:
    return [_record(loc, "do_not_answer", id=f"do_not_answer:{r['id']}", prompt=need(r, "question", loc),
                    label=1, meta={"question_id": int(r["id"]), "risk_area": r["risk_area"],
                                   "types_of_harm": r["types_of_harm"], "specific_harms": r["specific_harms"]})
            for loc, r in _rows(root / "do_not_answer" / "do_not_answer_en.csv")]


@_source("do_not_answer_responses")
def _do_not_answer_responses(root: Path) -> list[Record]:
    """One record per (question, model): label = human `<model>_harmful` (1 = harmful response)."""
    out = []
    for loc, r in _rows(root / "do_not_answer" / "data_en.csv"):
        for model in (c.removesuffix("_harmful") for c in r if c.endswith("_harmful")):
            out.append(_record(
                loc, "do_not_answer_responses", id=f"do_not_answer_responses:{r['id']}:{model}",
                prompt=r["question"], response=need(r, f"{model}_response", loc),
                label=_int(loc, r, f"{model}_harmful"),
                meta={"question_id": int(r["id"]), "model": model, "risk_area": r["risk_area"],
                      "action": _int(loc, r, f"{model}_action")}))
    return out


# --- moderation, toxicity and benign prompts --------------------------------------------------

@_source("openai_moderation")
def _openai_moderation(root: Path) -> list[Record]:
    """labels S,H,V,HR,SH,S3,H2,V2 (absent = None); label = any flag, None if unknown."""
    out = []
    for loc, r in _rows(root / "openai_moderation" / "samples-1680.jsonl.gz"):
        labels = {k: r.get(k) for k in OPENAI_MODERATION_HEADS}
        known = [v for v in labels.values() if v is not None]
        label = 1 if 1 in known else (0 if len(known) == len(labels) else None)
        out.append(_record(loc, "openai_moderation", prompt=need(r, "prompt", loc), labels=labels, label=label))
    return out


@_source("toxicchat")
def _toxicchat(root: Path) -> list[Record]:
    return [_record(loc, "toxicchat", id=f"toxicchat:{r['conv_id'][:16]}", prompt=need(r, "user_input", loc),
                    label=_int(loc, r, "toxicity"), meta={"jailbreaking": _int(loc, r, "jailbreaking")})
            for loc, r in _rows(root / "toxicchat" / "toxicchat.csv")]


@_source("wildchat_benign")
def _wildchat_benign(root: Path) -> list[Record]:
    return [_record(loc, "wildchat_benign", prompt=need(r, "prompt", loc), label=0,
                    meta={"model": r.get("model"), "language": r.get("language")})
            for loc, r in _rows(root / "wildchat_benign" / "wildchat_benign.csv")]


@_source("alpaca_instructions")
def _alpaca_instructions(root: Path) -> list[Record]:
    """The official harmless_{train,val,test}.json files (alpaca_all.json is their union)."""
    return [_record(loc, "alpaca_instructions", split=split, prompt=need(r, "instruction", loc), label=0)
            for split in ("train", "val", "test")
            for loc, r in _rows(root / "alpaca_instructions" / f"harmless_{split}.json")]


def _decode_bytes_literal(s: str, loc: str) -> str:
    """ToxiGen stores text as a Python bytes literal ("b'...'"): evaluate it and decode UTF-8."""
    if not (len(s) >= 3 and s[0] == "b" and s[1] in "'\"" and s[-1] == s[1]):
        return s
    try:
        return ast.literal_eval(s).decode("utf-8", errors="replace")
    except (ValueError, SyntaxError):
        raise DataError(f"{loc}: field 'text': not a valid bytes literal: {s[:60]!r}") from None


@_source("toxigen")
def _toxigen(root: Path, keep_unsure: bool = False) -> list[Record]:
    """Human-annotated ToxiGen: label 1 if toxicity_human >= 4, 0 if <= 2; 2 < x < 4 dropped
    (kept with label None when keep_unsure)."""
    out = []
    for loc, r in _rows(root / "toxigen" / "annotated" / "toxigen_annotated_train.csv"):
        try:
            score = float(need(r, "toxicity_human", loc))
        except ValueError:
            raise DataError(f"{loc}: field 'toxicity_human': expected a number 1-5, "
                            f"got {r['toxicity_human']!r}") from None
        label = 1 if score >= 4 - 1e-6 else 0 if score <= 2 + 1e-6 else None
        if label is None and not keep_unsure:
            continue
        out.append(_record(loc, "toxigen", text=_decode_bytes_literal(need(r, "text", loc), loc).strip(),
                           label=label, meta={"toxicity_human": score, "target_group": r.get("target_group"),
                                              "prompt_label": r.get("label"), "method": r.get("actual_method")}))
    return out


@_source("summedits")
def _summedits(root: Path) -> list[Record]:
    """(document, summary) pairs of every domain file; label 1 = consistent, 0 = inconsistent."""
    out = []
    for path in sorted((root / "summedits").glob("summedits_*.json")):
        domain = path.stem.removeprefix("summedits_")
        for loc, r in _rows(path):
            doc = need(r, "doc", loc)
            out.append(_record(loc, "summedits", id=f"summedits:{r['id']}", document=doc,
                               summary=need(r, "summary", loc), label=_int(loc, r, "label"),
                               meta={"domain": domain, "doc_id": content_id("doc", doc).split(":")[1],
                                     "edit_types": r.get("edit_types"), "upstream_split": r.get("split")}))
    if not out:
        raise DataError(f"{root / 'summedits'}: no summedits_*.json files")
    return out


# --- over-refusal, preference pairs and utility evals -----------------------------------------

@_source("xstest")
def _xstest(root: Path) -> list[Record]:
    """XSTest prompts (eval only): label 1 = unsafe prompt, 0 = safe prompt."""
    return [_record(loc, "xstest", id=f"xstest:{r['id']}", split="eval", prompt=need(r, "prompt", loc),
                    label={"unsafe": 1, "safe": 0}[need(r, "label", loc)],
                    meta={"type": r["type"], "focus": r.get("focus") or None, "note": r.get("note") or None})
            for loc, r in _rows(root / "xstest" / "xstest_prompts.csv")]


@_source("xstest_completions")
def _xstest_completions(root: Path) -> list[Record]:
    """Five models' XSTest completions: label 1 = full or partial refusal, 0 = full compliance."""
    out = []
    for path in sorted((root / "xstest" / "model_completions_human_labeled").glob("*.csv")):
        model = path.stem.removeprefix("xstest_v2_completions_")
        for loc, r in _rows(path):
            final = need(r, "final_label", loc)
            out.append(_record(loc, "xstest_completions", id=f"xstest_completions:{model}:{r['id']}",
                               prompt=r["prompt"], response=need(r, "completion", loc),
                               label=int(final.startswith(("2_", "3_"))),
                               meta={"model": model, "type": r["type"], "final_label": final}))
    return out


def _jsonl(root: Path, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from _rows(root / "coconot" / f"{name}.jsonl")


SAFETY_CONCERNS = "Requests with safety concerns"


@_source("coconot_pref")
def _coconot_pref(root: Path) -> list[Record]:
    """CoCoNot preference prompts: every one should be complied with (label 0 = benign); the
    "Requests with safety concerns" rows look refusable and are the edgy ones. meta has the
    chosen (compliant) and rejected (refusing) answers."""
    return [_record(loc, "coconot_pref", id=f"coconot_pref:{r['id']}", prompt=need(r, "prompt", loc), label=0,
                    meta={"category": r.get("category"), "subcategory": r.get("subcategory"),
                          "chosen": r.get("chosen"), "rejected": r.get("rejected")})
            for loc, r in _jsonl(root, "coconot_pref")]


@_source("coconot_contrast_eval")
def _coconot_contrast_eval(root: Path) -> list[Record]:
    """CoCoNot contrast test set (eval only): benign prompts that look refusable (label 0)."""
    return [_record(loc, "coconot_contrast_eval", id=f"coconot_contrast_eval:{r['id']}", split="eval",
                    prompt=need(r, "prompt", loc), label=0,
                    meta={"category": r.get("category"), "subcategory": r.get("subcategory")})
            for loc, r in _jsonl(root, "coconot_contrast_eval")]


@_source("coconot_eval")
def _coconot_eval(root: Path) -> list[Record]:
    """CoCoNot test set (eval only): requests a model should not comply with. label 1 for the
    "Requests with safety concerns" rows (harmful requests); None for the other categories
    (incomplete, unsupported, indeterminate, humanizing: not harmful, but not plain benign)."""
    return [_record(loc, "coconot_eval", id=f"coconot_eval:{r['id']}", split="eval", prompt=need(r, "prompt", loc),
                    label=1 if r.get("category") == SAFETY_CONCERNS else None,
                    meta={"category": r.get("category"), "subcategory": r.get("subcategory")})
            for loc, r in _jsonl(root, "coconot_eval")]


@_source("phtest")
def _phtest(root: Path) -> list[Record]:
    """PHTest pseudo-harmful prompts: `harmless` rows label 0; `controversial` rows label None
    (a refusal may be reasonable: kept out of the benign label), meta harmfulness."""
    out = []
    for loc, r in _rows(root / "phtest" / "dataset_v0.1.csv"):
        kind = need(r, "Harmfulness", loc)
        if kind not in ("harmless", "controversial"):
            raise DataError(f"{loc}: field 'Harmfulness': expected harmless or controversial, got {kind!r}")
        out.append(_record(loc, "phtest", prompt=need(r, "Request", loc), label=0 if kind == "harmless" else None,
                           meta={"harmfulness": kind, "phtest_id": r.get("ID")}))
    return out


@_source("ifeval")
def _ifeval(root: Path) -> list[Record]:
    """IFEval (eval only): prompts with verifiable instructions (ids + kwargs for the checkers)."""
    return [_record(loc, "ifeval", id=f"ifeval:{r['key']}", split="eval", prompt=need(r, "prompt", loc),
                    meta={"key": r["key"], "instruction_id_list": need(r, "instruction_id_list", loc),
                          "kwargs": r.get("kwargs")})
            for loc, r in _rows(root / "ifeval" / "input_data.jsonl")]


@_source("hh_rlhf")
def _hh_rlhf(root: Path) -> list[Record]:
    """Harmless-base test pairs: prompt = dialogue up to the last shared "Assistant:"; meta chosen/rejected."""
    out, marker = [], "\n\nAssistant:"
    for loc, r in _rows(root / "hh_rlhf" / "harmless-base_test.jsonl.gz"):
        chosen, rejected = need(r, "chosen", loc), need(r, "rejected", loc)
        common = os.path.commonprefix([chosen, rejected])
        cut = common.rfind(marker) + len(marker)
        if cut < len(marker):
            raise DataError(f"{loc}: chosen and rejected share no 'Assistant:' turn")
        out.append(_record(loc, "hh_rlhf", id=content_id("hh_rlhf", chosen, rejected), prompt=chosen[:cut],
                           meta={"chosen": chosen[cut:].strip(), "rejected": rejected[cut:].strip()}))
    return out


@_source("mmlu")
def _mmlu(root: Path) -> list[Record]:
    """Test (split "eval") and dev (split "train", the few-shot pool); answer index in meta."""
    out = []
    for subset, split in (("test", "eval"), ("dev", "train")):
        for path in sorted((root / "mmlu" / subset).glob("*.csv")):
            subject = path.stem.removesuffix(f"_{subset}")
            for i, (loc, r) in enumerate(_rows(path)):
                choices = [need(r, f"choice{k}", loc) for k in range(4)]
                out.append(_record(loc, "mmlu", id=f"mmlu:{subset}:{subject}:{i}", split=split,
                                   prompt=need(r, "question", loc),
                                   meta={"subject": subject, "subset": subset, "choices": choices,
                                         "answer": _int(loc, r, "answer")}))
    return out


def _turn_questions(path: Path, source: str, references: dict | None = None) -> list[Record]:
    return [_record(loc, source, id=f"{source}:{r['question_id']}", split="eval", prompt=need(r, "turns", loc)[0],
                    meta={"question_id": r["question_id"], "category": r.get("category"), "turns": r["turns"],
                          "reference": (references or {}).get(r["question_id"])})
            for loc, r in _rows(path)]


@_source("mt_bench")
def _mt_bench(root: Path) -> list[Record]:
    refs = {r["question_id"]: r["choices"][0]["turns"]
            for _, r in _rows(root / "mt_bench" / "reference_answer_gpt-4.jsonl")}
    return _turn_questions(root / "mt_bench" / "question.jsonl", "mt_bench", refs)


@_source("vicuna_bench")
def _vicuna_bench(root: Path) -> list[Record]:
    return _turn_questions(root / "mt_bench" / "vicuna_bench" / "question.jsonl", "vicuna_bench")


@_source("alpaca_eval")
def _alpaca_eval(root: Path) -> list[Record]:
    return [_record(loc, "alpaca_eval", split="eval", prompt=need(r, "instruction", loc), response=r.get("output"),
                    meta={"dataset": r.get("dataset"), "generator": r.get("generator")})
            for loc, r in _rows(root / "alpaca_eval" / "gpt4_1106_preview_model_outputs.json")]


@_source("gsm8k")
def _gsm8k(root: Path) -> list[Record]:
    out = []
    for loc, r in _rows(root / "gsm8k" / "gsm8k_test.jsonl"):
        turns = {m["role"]: m["content"] for m in need(r, "messages", loc)}
        solution = turns.get("assistant")
        answer = solution.rsplit("####", 1)[-1].strip() if solution and "####" in solution else None
        out.append(_record(loc, "gsm8k", split="eval", prompt=turns.get("user"), response=solution,
                           meta={"answer": answer}))
    return out
