"""Functions the dsa task YAMLs call (`!function utils.NAME`): local documents and scoring, shared
with `dsa.eval.utility` through `dsa.eval.benchmarks`."""

from __future__ import annotations

from dsa.eval.benchmarks import cloze_context, ifeval_check, ifeval_docs, mmlu_docs, refusal_check, refusal_docs


def _datasets(docs: list[dict]) -> dict:
    import datasets

    return {"test": datasets.Dataset.from_list(docs)}


def ifeval_dataset(n: int | None = None, seed: int = 0, **_) -> dict:
    """IFEval from `<data>/ifeval/input_data.jsonl` (task metadata `n`, `seed`: a fixed subset)."""
    return _datasets(ifeval_docs(n, seed))


def mmlu_dataset(n: int | None = 1000, seed: int = 0, **_) -> dict:
    """The fixed MMLU test subset (first `n` by sha256 of the id; n=None: all 14,042)."""
    return _datasets(mmlu_docs(n, seed))


def process_results(doc: dict, results: list[str]) -> dict:
    return ifeval_check(doc, results[0])


def agg_inst_level_acc(items: list[list[bool]]) -> float:
    flat = [x for sub in items for x in sub]
    return sum(flat) / len(flat)


def doc_to_text(doc: dict) -> str:
    return cloze_context(doc)


def doc_to_choice(doc: dict) -> list[str]:
    return list(doc["choices"])


def refusal_dataset(name: str, n: int | None = None, seed: int = 0, **_) -> dict:
    """A refusal set (task `dataset_kwargs.name`) in sha256(prompt) order; metadata `n`, `seed`:
    a fixed subset."""
    return _datasets(refusal_docs(name, n, seed))


def refusal_results(doc: dict, results: list[str]) -> dict:
    return refusal_check(doc, results[0])
