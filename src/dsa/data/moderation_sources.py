"""Loaders of the moderation, toxicity and benign-prompt sources (OpenAI moderation, ToxicChat,
WildChat, Alpaca, ToxiGen, SummEdits)."""

from __future__ import annotations

import ast
from pathlib import Path

from dsa.data.records import DataError, Record, content_id
from dsa.data.source_rows import int_field, make_record, registrar, table_rows
from dsa.data.user_files import need

OPENAI_MODERATION_HEADS = ("S", "H", "V", "HR", "SH", "S3", "H2", "V2")
LOADERS: dict = {}  # name -> loader, in catalogue order
source = registrar(LOADERS)


@source("openai_moderation")
def _openai_moderation(root: Path) -> list[Record]:
    """labels S,H,V,HR,SH,S3,H2,V2 (absent = None); label = any flag, None if unknown."""
    out = []
    for loc, r in table_rows(root / "openai_moderation" / "samples-1680.jsonl.gz"):
        labels = {k: r.get(k) for k in OPENAI_MODERATION_HEADS}
        known = [v for v in labels.values() if v is not None]
        label = 1 if 1 in known else (0 if len(known) == len(labels) else None)
        out.append(make_record(loc, "openai_moderation", prompt=need(r, "prompt", loc), labels=labels, label=label))
    return out


@source("toxicchat")
def _toxicchat(root: Path) -> list[Record]:
    return [make_record(loc, "toxicchat", id=f"toxicchat:{r['conv_id'][:16]}", prompt=need(r, "user_input", loc),
                        label=int_field(loc, r, "toxicity"), meta={"jailbreaking": int_field(loc, r, "jailbreaking")})
            for loc, r in table_rows(root / "toxicchat" / "toxicchat.csv")]


@source("wildchat_benign")
def _wildchat_benign(root: Path) -> list[Record]:
    return [make_record(loc, "wildchat_benign", prompt=need(r, "prompt", loc), label=0,
                        meta={"model": r.get("model"), "language": r.get("language")})
            for loc, r in table_rows(root / "wildchat_benign" / "wildchat_benign.csv")]


@source("alpaca_instructions")
def _alpaca_instructions(root: Path) -> list[Record]:
    """The official harmless_{train,val,test}.json files (alpaca_all.json is their union)."""
    return [make_record(loc, "alpaca_instructions", split=split, prompt=need(r, "instruction", loc), label=0)
            for split in ("train", "val", "test")
            for loc, r in table_rows(root / "alpaca_instructions" / f"harmless_{split}.json")]


def _decode_bytes_literal(s: str, loc: str) -> str:
    """ToxiGen stores text as a Python bytes literal ("b'...'"): evaluate it and decode UTF-8."""
    if not (len(s) >= 3 and s[0] == "b" and s[1] in "'\"" and s[-1] == s[1]):
        return s
    try:
        return ast.literal_eval(s).decode("utf-8", errors="replace")
    except (ValueError, SyntaxError):
        raise DataError(f"{loc}: field 'text': not a valid bytes literal: {s[:60]!r}") from None


@source("toxigen")
def _toxigen(root: Path, keep_unsure: bool = False) -> list[Record]:
    """Human-annotated ToxiGen: label 1 if toxicity_human >= 4, 0 if <= 2; 2 < x < 4 dropped
    (kept with label None when keep_unsure)."""
    out = []
    for loc, r in table_rows(root / "toxigen" / "annotated" / "toxigen_annotated_train.csv"):
        try:
            score = float(need(r, "toxicity_human", loc))
        except ValueError:
            raise DataError(f"{loc}: field 'toxicity_human': expected a number 1-5, "
                            f"got {r['toxicity_human']!r}") from None
        label = 1 if score >= 4 - 1e-6 else 0 if score <= 2 + 1e-6 else None
        if label is None and not keep_unsure:
            continue
        out.append(make_record(loc, "toxigen", text=_decode_bytes_literal(need(r, "text", loc), loc).strip(),
                               label=label, meta={"toxicity_human": score, "target_group": r.get("target_group"),
                                                  "prompt_label": r.get("label"), "method": r.get("actual_method")}))
    return out


@source("summedits")
def _summedits(root: Path) -> list[Record]:
    """(document, summary) pairs of every domain file; label 1 = consistent, 0 = inconsistent."""
    out = []
    for path in sorted((root / "summedits").glob("summedits_*.json")):
        domain = path.stem.removeprefix("summedits_")
        for loc, r in table_rows(path):
            doc = need(r, "doc", loc)
            out.append(make_record(loc, "summedits", id=f"summedits:{r['id']}", document=doc,
                                   summary=need(r, "summary", loc), label=int_field(loc, r, "label"),
                                   meta={"domain": domain, "doc_id": content_id("doc", doc).split(":")[1],
                                         "edit_types": r.get("edit_types"), "upstream_split": r.get("split")}))
    if not out:
        raise DataError(f"{root / 'summedits'}: no summedits_*.json files")
    return out
