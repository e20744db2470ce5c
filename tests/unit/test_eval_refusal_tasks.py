"""The refusal benchmarks as data: StrongREJECT, XSTest safe / unsafe and CoCoNot contrast as
documents (`dsa.eval.benchmarks.refusal_docs`) and as lm-eval tasks (dsa_strongreject, …, group
dsa_refusal) scored by the refusal judge; `eval_prompt_sets` reads the same documents, unchanged."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from dsa.align.logit_adapter import LogitAdapter, LogitAdapterSpec
from dsa.eval import benchmarks
from dsa.eval.lm_eval_model import DSALM, TASKS_DIR
from dsa.recipes.train_data import EVAL_MAX_NEW_TOKENS, eval_prompt_sets
from dsa.runtime import SafetyModel
from tests.shared_data import require_data

from .align_tiny import tiny_base

pytest.importorskip("lm_eval")

SETS = {"strongreject": (313, "refuse"), "xstest_safe": (250, "comply"), "xstest_unsafe": (200, "refuse"),
        "coconot_contrast": (379, "comply")}
# sha256 of json.dumps(eval_prompt_sets()) before the refusal sets moved to dsa.eval.benchmarks:
# results/alignment.json's answer caches are keyed by these prompt lists and their order
EVAL_PROMPT_SETS_SHA256 = "2741a1613a1526aa3646a9d7c7ca3dbcee4ad7b4edacd388ff99e1e08b1283bc"


@pytest.fixture
def need_data():
    require_data("the refusal sets and the judge's XSTest completions")


def _task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


def test_eval_prompt_sets_unchanged(need_data):
    sets = eval_prompt_sets()
    assert hashlib.sha256(json.dumps(sets).encode()).hexdigest() == EVAL_PROMPT_SETS_SHA256
    for name in ("strongreject", "xstest_safe", "coconot_contrast"):
        assert sets[name] == benchmarks.refusal_prompts(name)


def test_refusal_docs(need_data):
    for name, (size, expected) in SETS.items():
        docs = benchmarks.refusal_docs(name)
        assert len(docs) == size and {d["expected"] for d in docs} == {expected} and {d["set"] for d in docs} == {name}
        assert len({d["id"] for d in docs}) == size and all(d["prompt"] and d["category"] for d in docs)
    xstest = {d["prompt"] for d in benchmarks.refusal_docs("xstest_safe") + benchmarks.refusal_docs("xstest_unsafe")}
    assert len(xstest) == 450
    with pytest.raises(ValueError, match="unknown refusal set"):
        benchmarks.refusal_docs("advbench")


def test_subset_is_fixed_and_is_the_align_eval_limit_subset(need_data):
    for name in SETS:
        docs = benchmarks.refusal_docs(name, n=8)
        assert docs == benchmarks.refusal_docs(name)[:8] == benchmarks.refusal_docs(name, n=8)
        # `dsa align eval limit=8` cuts sorted(prompts, key=sha256(prompt))[:8]
        limit_cut = sorted(benchmarks.refusal_prompts(name), key=lambda p: hashlib.sha256(p.encode()).hexdigest())[:8]
        assert [d["prompt"] for d in docs] == limit_cut
        assert benchmarks.refusal_docs(name, n=8, seed=1) != docs


def test_tasks_load_through_lm_eval(need_data):
    tm = _task_manager()
    tasks = tm.load([f"dsa_{n}" for n in SETS])["tasks"]
    for name, (size, expected) in SETS.items():
        task = tasks[f"dsa_{name}"]
        gen = task.config.generation_kwargs
        assert task.OUTPUT_TYPE == "generate_until" and len(task.eval_docs) == size
        assert gen["max_gen_toks"] == EVAL_MAX_NEW_TOKENS and gen["until"] == [] and not gen["do_sample"]
        assert [m["metric"] for m in task.config.metric_list] == ["refusal_rate"]
        assert task.higher_is_better()["refusal_rate"] is (expected == "refuse")
        assert task.doc_to_text(task.eval_docs[0]) == benchmarks.refusal_docs(name)[0]["prompt"]
    group = tm.load(["dsa_refusal"])
    assert sorted(group["group_map"]["dsa_refusal"]) == sorted(group["tasks"]) == sorted(f"dsa_{n}" for n in SETS)
    # --metadata '{"n": 5}' picks the fixed subset
    from lm_eval.tasks import TaskManager

    small = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"n": 5})
    task = small.load(["dsa_xstest_safe"])["tasks"]["dsa_xstest_safe"]
    assert [d["id"] for d in task.eval_docs] == [d["id"] for d in benchmarks.refusal_docs("xstest_safe", n=5)]


def test_refusal_scores_one_and_compliance_zero(need_data):
    from dsa.eval.tasks import utils

    for name in SETS:
        doc = benchmarks.refusal_docs(name, n=1)[0]
        assert utils.refusal_results(doc, ["I'm sorry, but I can't help with that."]) == {"refusal_rate": 1.0}
        assert utils.refusal_results(doc, ["Sure! Here is a short overview of the topic:"]) == {"refusal_rate": 0.0}


def test_xstest_answers_are_judged_out_of_fold(need_data, monkeypatch):
    from dsa.eval.refusal import train_refusal_judge

    judge, seen = train_refusal_judge(), []
    monkeypatch.setattr(type(judge), "judge", lambda self, texts, prompts=None: seen.append(prompts) or [False])
    doc = benchmarks.refusal_docs("xstest_safe", n=1)[0]
    benchmarks.refusal_check(doc, "Here you go.")
    assert seen == [[doc["prompt"]]] and judge.fold(doc["prompt"]) is not None


def test_lm_eval_route_matches_the_judge_on_generated_answers(need_data, tmp_path, monkeypatch):
    """simple_evaluate over the dsa_refusal group gives, per set, the judge's refusal rate of the
    model's own greedy 16-token answers to the same fixed subset, each judged with its prompt. The
    tiny model's answers are random characters (no refusal), so a stand-in judge reads their bytes."""
    import lm_eval

    from dsa.eval.refusal import RefusalJudge

    calls = []

    def judge(self, texts, prompts=None):
        calls.append((list(texts), list(prompts)))
        return [sum(map(ord, t)) % 2 == 0 for t in texts]

    monkeypatch.setattr(RefusalJudge, "judge", judge)
    base = tiny_base("llama", layers=3)
    base.model.config.max_position_embeddings = 4096  # rotary: any length works; the runtime checks this
    adapter = LogitAdapter(base, LogitAdapterSpec(k=2))
    for p in adapter.trainable_parameters():
        p.data.add_(torch.randn_like(p) * 0.2)
    lm = DSALM(sm=SafetyModel(base, adapter=adapter), alignment=0.5, cache_dir=str(tmp_path), progress=False)
    res = lm_eval.simple_evaluate(model=lm, tasks=["dsa_refusal"], task_manager=_task_manager(), limit=3)["results"]
    rates = []
    for name in SETS:
        prompts = [d["prompt"] for d in benchmarks.refusal_docs(name, n=3)]
        answers = [a["text"] for a in lm.generate(prompts, EVAL_MAX_NEW_TOKENS)]  # from the cache
        assert all(([a], [p]) in calls for a, p in zip(answers, prompts, strict=True))
        rates.append(sum(judge(None, answers, prompts)) / 3)
        assert res[f"dsa_{name}"]["refusal_rate,none"] == pytest.approx(rates[-1])
    assert 0 < sum(rates) < len(rates)  # the check can tell refusals from answers
