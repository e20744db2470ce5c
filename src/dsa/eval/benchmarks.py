"""The utility benchmarks as data: local documents, fixed subsets, and their scoring rules.

    ifeval_docs(n=40)          IFEval prompts from `<data>/ifeval/input_data.jsonl`
    mmlu_docs(n=1000)          MMLU test questions (`load_source("mmlu")`, split "eval")
    ifeval_check(doc, answer)  lm-eval's IFEval checkers (strict and loose) on one answer
    cloze_requests(doc)        MMLU cloze: ("Question: …\\nAnswer:", " choice") per choice
    cloze_metrics(doc, lls)    acc and acc_norm of one question, as lm-eval's multiple_choice
    refusal_docs(name, n)      StrongREJECT, XSTest safe / unsafe, CoCoNot contrast prompts
    refusal_prompts(name)      the same prompts in source order (`eval_prompt_sets`, `dsa align eval`)
    refusal_check(doc, answer) refusal_rate (1.0 / 0.0) of one answer, by the refusal judge

Subsets are fixed: the first `n` documents in sha256 order of their id (seed 0: sha256(id);
seed s > 0: sha256(f"{s}:{id}")); a refusal set's id for this order is its prompt text, so its
subset is the one `dsa align eval limit=N` judges. The lm-eval task YAMLs in `dsa/eval/tasks/`,
the Python API in `dsa.eval.utility` and the alignment eval read documents and score answers
through these functions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

from dsa.extras import needs_extra

CLOZE_TEMPLATE = "Question: {question}\nAnswer:"


def hashed_subset(items: Sequence, ident: Callable[[object], str], n: int | None, seed: int = 0) -> list:
    """The first `n` items in sha256 order of their id (all of them, in that order, for n=None)."""
    def h(x) -> str:
        s = ident(x) if seed == 0 else f"{seed}:{ident(x)}"
        return hashlib.sha256(s.encode()).hexdigest()

    if n is not None and n < 1:
        raise ValueError(f"n must be a positive number of documents, got {n}")
    ordered = sorted(items, key=h)
    return ordered if n is None else ordered[:n]


# ---- IFEval -------------------------------------------------------------------------------------
def ifeval_docs(n: int | None = None, seed: int = 0) -> list[dict]:
    """IFEval documents (key, prompt, instruction_id_list, kwargs); eval-only."""
    from dsa.data.records import DataError
    from dsa.data.sources import data_dir

    path = data_dir() / "ifeval" / "input_data.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: missing (is the data folder complete?)")
    docs = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            doc = json.loads(line)
            missing = {"key", "prompt", "instruction_id_list", "kwargs"} - set(doc)
            if missing:
                raise DataError(f"{path.name}: line {i}: missing {sorted(missing)}")
            docs.append(doc)
    return hashed_subset(docs, lambda d: f"ifeval:{d['key']}", n, seed)


def _ifeval_utils():
    """lm-eval's IFEval module, once NLTK's punkt_tab is known to be there (its import would
    otherwise try to download it)."""
    from dsa.eval.punkt_data import punkt_available

    if not punkt_available():
        raise RuntimeError("NLTK punkt_tab (English) is missing, needed by the IFEval checkers: "
                           "run `python -m dsa.eval.punkt_data` (scripts/setup.sh does)")
    with needs_extra("eval", "IFEval checking"):
        import langdetect
        from lm_eval.tasks.ifeval import utils

    langdetect.DetectorFactory.seed = 0  # the language checkers give the same verdict every run

    return utils


def ifeval_check(doc: dict, response: str) -> dict:
    """lm-eval's `process_results` for IFEval: prompt_level_{strict,loose}_acc (bool) and
    inst_level_{strict,loose}_acc (one bool per instruction)."""
    return _ifeval_utils().process_results(doc, [response])


def ifeval_metrics(checks: Sequence[dict]) -> dict:
    """Prompt- and instruction-level accuracy, strict and loose, over checked answers."""
    if not checks:
        raise ValueError("no IFEval answers to aggregate")
    inst_s = [x for c in checks for x in c["inst_level_strict_acc"]]
    inst_l = [x for c in checks for x in c["inst_level_loose_acc"]]
    return {
        "prompt_strict": sum(c["prompt_level_strict_acc"] for c in checks) / len(checks),
        "inst_strict": sum(inst_s) / len(inst_s),
        "prompt_loose": sum(c["prompt_level_loose_acc"] for c in checks) / len(checks),
        "inst_loose": sum(inst_l) / len(inst_l),
        "n_prompts": len(checks), "n_instructions": len(inst_s),
    }


# ---- MMLU cloze ---------------------------------------------------------------------------------
def mmlu_docs(n: int | None = 1000, seed: int = 0) -> list[dict]:
    """MMLU test questions (id, subject, question, choices, answer index)."""
    from dsa.data.sources import load_source

    rows = [r for r in load_source("mmlu") if r.split == "eval"]
    return [{"id": r.id, "subject": r.meta["subject"], "question": r.main_text, "choices": list(r.meta["choices"]),
             "answer": int(r.meta["answer"])} for r in hashed_subset(rows, lambda r: r.id, n, seed)]


def cloze_context(doc: dict) -> str:
    return CLOZE_TEMPLATE.format(question=doc["question"].strip())


def cloze_requests(doc: dict) -> list[tuple[str, str]]:
    """(context, " " + choice text) per choice: lm-eval's mmlu continuation format, zero-shot."""
    return [(cloze_context(doc), f" {c}") for c in doc["choices"]]


def cloze_metrics(doc: dict, lls: Sequence[float]) -> dict:
    """acc: argmax of summed log-likelihoods; acc_norm: argmax of log-likelihood per character of
    the choice text (lm-eval's `acc_norm`)."""
    norm = [ll / max(1, len(c)) for ll, c in zip(lls, doc["choices"], strict=True)]
    gold = int(doc["answer"])
    return {"acc": float(max(range(len(lls)), key=lambda i: lls[i]) == gold),
            "acc_norm": float(max(range(len(norm)), key=lambda i: norm[i]) == gold)}


# ---- refusal sets -------------------------------------------------------------------------------
# set name: (source, XSTest label kept or None for all rows, the behaviour a safe model shows)
REFUSAL_SETS = {
    "strongreject": ("strongreject", None, "refuse"),
    "xstest_safe": ("xstest", 0, "comply"),
    "xstest_unsafe": ("xstest", 1, "refuse"),
    "coconot_contrast": ("coconot_contrast_eval", None, "comply"),
}


def _refusal_records(name: str) -> list:
    from dsa.data.sources import load_source

    if name not in REFUSAL_SETS:
        raise ValueError(f"unknown refusal set {name!r}: expected one of {', '.join(REFUSAL_SETS)}")
    source, label, _ = REFUSAL_SETS[name]
    return [r for r in load_source(source) if label is None or r.label == label]


def refusal_prompts(name: str) -> list[str]:
    """Every prompt of a refusal set, in source order (what `eval_prompt_sets` lists)."""
    return [r.main_text for r in _refusal_records(name)]


def refusal_docs(name: str, n: int | None = None, seed: int = 0) -> list[dict]:
    """Documents of a refusal set (id, prompt, set, expected "refuse" | "comply", category: the
    StrongREJECT category, XSTest type or CoCoNot category), in sha256 order of the prompt text
    (the order `dsa align eval limit=N` cuts); the first `n` of them when `n` is given."""
    rows = _refusal_records(name)
    docs = [{"id": r.id, "prompt": r.main_text, "set": name, "expected": REFUSAL_SETS[name][2],
             "category": r.meta.get("category") or r.meta.get("type")} for r in rows]
    return hashed_subset(docs, lambda d: d["prompt"], n, seed)


def refusal_check(doc: dict, response: str) -> dict:
    """refusal_rate of one answer: 1.0 when the refusal judge (keyword rules or the classifier,
    `dsa.eval.refusal`) calls it a refusal. The prompt is passed, so an answer to an XSTest
    prompt is judged by the classifier that never saw a completion of that prompt."""
    from dsa.eval.refusal import train_refusal_judge

    return {"refusal_rate": float(train_refusal_judge().judge([response], prompts=[doc["prompt"]])[0])}
