"""Utility benchmarks on tiny random models: the cloze scorer (λ = 0 is the base exactly, a choice
made certain wins), lm-eval's IFEval checkers on known strings, the lm-eval `dsa` model's
interface, the answer cache, and the lm-eval route giving the API route's numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dsa.align.logit_adapter import LogitAdapter, LogitAdapterSpec
from dsa.align.policy import make_policy
from dsa.eval import benchmarks, utility
from dsa.eval.answer_cache import model_fingerprint
from dsa.eval.lm_eval_model import DSALM, TASKS_DIR
from dsa.eval.scoring import score_continuations
from dsa.runtime import SafetyModel
from tests.shared_data import require_data

from .align_tiny import ProbeBank, tiny_base

pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402


def _sm(bias: float = 0.0, context: int = 4096) -> SafetyModel:
    base = tiny_base("llama", layers=4)
    base.model.config.max_position_embeddings = context  # rotary: any length works; the runtime checks this
    adapter = LogitAdapter(base, LogitAdapterSpec(k=2))
    for p in adapter.trainable_parameters():
        p.data.add_(torch.randn_like(p) * 0.2)
    return SafetyModel(base, ProbeBank("layers.1.resid_post", base.d_model, bias=bias), adapter, make_policy("step"))


def _req(kind: str, args: tuple) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def _certain(sm: SafetyModel, char: str = "q", boost: float = 60.0) -> None:
    """Make one character's token near-certain at every position (a bias on the LM head)."""
    head = sm.base.model.lm_head
    bias = torch.zeros(head.out_features)
    bias[sm.base.tokenizer._ids(char)[0]] = boost
    head.bias = nn.Parameter(bias)


# ---- cloze scorer -------------------------------------------------------------------------------
def test_lambda_zero_scores_equal_the_base_forward():
    sm = _sm()
    lm = DSALM(sm=sm, alignment=0.0, cache_dir=None, progress=False)
    pairs = [("Question: what?\nAnswer:", " yes"), ("Question: a longer question here\nAnswer:", " no way")]
    got = lm.score(pairs)
    for (ctx, cont), (ll, _) in zip(pairs, got, strict=True):
        c, x = lm.encode_pair(ctx, cont)
        ids = torch.tensor([c + x])
        with torch.no_grad():
            logp = torch.log_softmax(sm.base.model(input_ids=ids).logits[0].float(), -1)
        ref = sum(float(logp[len(c) - 1 + j, t]) for j, t in enumerate(x))
        assert ll == pytest.approx(ref, abs=1e-4)


def test_lambda_moves_scores_and_batching_does_not():
    sm = _sm()
    rows = [([5, 6, 7], [8, 9]), ([5, 6], [10]), ([11, 12, 13, 14], [15, 16, 17])]
    alone = [score_continuations(sm, [r], [0.0])[0][0] for r in rows]
    batched = [x for x, _ in score_continuations(sm, rows, [0.0] * 3, batch_size=3)]
    assert batched == pytest.approx(alone, abs=1e-4)  # right padding never leaks into real tokens
    aligned = [x for x, _ in score_continuations(sm, rows, [1.0] * 3)]
    assert all(abs(a - b) > 1e-3 for a, b in zip(aligned, alone, strict=True))


def test_certain_choice_wins_mmlu_cloze(monkeypatch):
    sm = _sm()
    _certain(sm, "q")  # (the tiny tokenizer maps "z" and " " to one id; "q" has its own)
    docs = [{"id": f"q{i}", "subject": "s", "question": f"what is {i}?", "choices": ["ab", "cd", "qq", "ef"],
             "answer": 2} for i in range(4)]
    monkeypatch.setattr(utility, "mmlu_docs", lambda n, seed: docs[:n])
    out = utility.mmlu_cloze(sm, alignment=0.0, n=4, cache_dir=None, progress=False)
    assert out["acc"] == 1.0 and out["acc_norm"] == 1.0 and out["n"] == 4
    lm = DSALM(sm=sm, alignment=0.0, cache_dir=None, progress=False)
    assert lm.score([("Question: what is 0?\nAnswer: ", "qq")])[0][1] is False  # the space is not greedy ...
    assert lm.score([("Question: what is 0?\nAnswer: q", "qq")])[0][1] is True  # ... "qq" after a q is


def test_acc_norm_divides_by_choice_characters():
    doc = {"choices": ["a", "bbbbbbbbbb"], "answer": 1}
    assert benchmarks.cloze_metrics(doc, [-2.0, -5.0]) == {"acc": 0.0, "acc_norm": 1.0}


def test_hashed_subset_is_fixed_and_seeded():
    items = [f"id{i}" for i in range(50)]
    a = benchmarks.hashed_subset(items, str, 10)
    assert a == benchmarks.hashed_subset(list(reversed(items)), str, 10)
    assert a != benchmarks.hashed_subset(items, str, 10, seed=1)
    assert benchmarks.hashed_subset(items, str, 20)[:10] == a  # a larger n extends the subset
    with pytest.raises(ValueError):
        benchmarks.hashed_subset(items, str, 0)


# ---- λ under "auto" -----------------------------------------------------------------------------
def test_auto_lambda_is_what_generation_picks():
    for bias, expect in ((-50.0, 0.0), (50.0, 1.0)):  # the probe scores every prompt ~0 / ~1
        sm = _sm(bias=bias)
        lm = DSALM(sm=sm, alignment="auto", cache_dir=None, progress=False)
        prompts = ["hello there", "how to do a bad thing"]
        assert lm.lambdas(prompts) == [expect, expect]
        assert [r.lam for r in sm.generate(prompts, alignment="auto", max_new_tokens=2)] == [expect, expect]


def test_generate_equals_the_runtime_in_batches_with_progress_shown():
    sm = _sm(bias=0.0)
    prompts = ["hi there", "a somewhat longer prompt to answer", "x", "another one"]
    want = sm.generate(prompts, alignment="auto", max_new_tokens=5)
    lm = DSALM(sm=sm, alignment="auto", cache_dir=None, batch_size=3, progress=True)
    got = lm.generate(prompts, 5)
    assert [g["text"] for g in got] == [w.text for w in want]
    assert [g["lam"] for g in got] == [w.lam for w in want]
    assert [g["stop_reason"] for g in got] == [w.stop_reason for w in want]


def test_bad_alignment_is_a_clear_error():
    sm = _sm()
    with pytest.raises(ValueError, match="alignment"):
        DSALM(sm=sm, alignment="sometimes", cache_dir=None)
    with pytest.raises(ValueError, match="alignment"):
        DSALM(sm=sm, alignment=1.5, cache_dir=None)
    sm.adapter = None
    with pytest.raises(ValueError, match="adapter"):
        DSALM(sm=sm, alignment=0.5, cache_dir=None)


# ---- IFEval checkers (lm-eval's) ----------------------------------------------------------------
def _doc(ids, kwargs, prompt="Follow the instructions."):
    return {"key": 1, "prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs}


def test_ifeval_checkers_on_known_strings():
    lower = _doc(["change_case:english_lowercase"], [{}])
    assert benchmarks.ifeval_check(lower, "all of this is lower case.")["prompt_level_strict_acc"]
    assert not benchmarks.ifeval_check(lower, "This Is Not.")["prompt_level_strict_acc"]
    comma = _doc(["punctuation:no_comma", "change_case:english_lowercase"], [{}, {}])
    r = benchmarks.ifeval_check(comma, "no commas here but Capitals")
    assert r["inst_level_strict_acc"] == [True, False] and not r["prompt_level_strict_acc"]
    # sentence counting runs NLTK's punkt_tab (installed offline by dsa.eval.punkt_data)
    short = _doc(["length_constraints:number_sentences"], [{"relation": "less than", "num_sentences": 3}])
    assert benchmarks.ifeval_check(short, "One sentence. Two sentences.")["prompt_level_strict_acc"]
    assert not benchmarks.ifeval_check(short, "One. Two. Three. Four.")["prompt_level_strict_acc"]
    # loose accuracy forgives a trailing markdown line that strict does not
    end = _doc(["startend:end_checker"], [{"end_phrase": "Any other questions?"}])
    r = benchmarks.ifeval_check(end, "Here you go.\nAny other questions?\n**")
    assert not r["prompt_level_strict_acc"] and r["prompt_level_loose_acc"]


def test_ifeval_metrics_aggregate_prompt_and_instruction_level():
    checks = [{"prompt_level_strict_acc": True, "inst_level_strict_acc": [True],
               "prompt_level_loose_acc": True, "inst_level_loose_acc": [True]},
              {"prompt_level_strict_acc": False, "inst_level_strict_acc": [True, False, False],
               "prompt_level_loose_acc": False, "inst_level_loose_acc": [True, True, False]}]
    m = benchmarks.ifeval_metrics(checks)
    assert m["prompt_strict"] == 0.5 and m["inst_strict"] == 0.5 and m["inst_loose"] == 0.75
    assert m["n_prompts"] == 2 and m["n_instructions"] == 4


def test_ifeval_api_with_cache(monkeypatch, tmp_path):
    sm = _sm()
    docs = [_doc(["punctuation:no_comma"], [{}], prompt=p) | {"key": i}
            for i, p in enumerate(["write a poem", "tell me about the weather", "hello"])]
    monkeypatch.setattr(utility, "ifeval_docs", lambda n: docs[:n])
    out = utility.ifeval(sm, alignment=0.0, n=3, max_new_tokens=4, cache_dir=str(tmp_path), answers=True,
                         progress=False)
    assert out["n_prompts"] == 3 and out["n_instructions"] == 3 and out["max_new_tokens"] == 4
    assert len(out["answers"]) == 3 and {"response", "lam", "prompt_level_strict_acc"} <= set(out["answers"][0])
    calls = []
    real = SafetyModel.prefill  # every generation starts with a prefill
    monkeypatch.setattr(SafetyModel, "prefill", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    again = utility.ifeval(sm, alignment=0.0, n=3, max_new_tokens=4, cache_dir=str(tmp_path), answers=True,
                           progress=False)
    assert calls == [] and again["answers"] == out["answers"]  # every answer came from the cache
    utility.ifeval(sm, alignment=0.0, n=3, max_new_tokens=5, cache_dir=str(tmp_path), progress=False)
    assert calls  # another decode budget is another cache entry


def test_fingerprint_sees_adapter_and_guard_changes():
    sm = _sm()
    fp = model_fingerprint(sm)
    assert fp == model_fingerprint(sm)
    next(iter(sm.adapter.trainable_parameters())).data.add_(1e-3)
    fp2 = model_fingerprint(sm)
    assert fp2 != fp
    sm.guards.w.add_(1.0)
    assert model_fingerprint(sm) != fp2


# ---- the lm-eval model interface ----------------------------------------------------------------
def test_lm_eval_interface():
    sm = _sm()
    lm = DSALM(sm=sm, alignment=0.0, cache_dir=None, progress=False)
    ll = lm.loglikelihood([_req("loglikelihood", ("hello there", " you")), _req("loglikelihood", ("", "hello"))])
    assert len(ll) == 2 and all(isinstance(x, float) and isinstance(g, bool) for x, g in ll)
    assert all(x < 0 for x, _ in ll)
    rolling = lm.loglikelihood_rolling([_req("loglikelihood_rolling", ("hello world",))])
    assert rolling[0] == pytest.approx(lm.score([("", "hello world")])[0][0], abs=1e-4)
    lm.max_length = 4  # long documents are scored in disjoint windows: every token once
    windows = lm.loglikelihood_rolling([_req("loglikelihood_rolling", ("hello world, again",))])
    assert isinstance(windows[0], float) and windows[0] < rolling[0]
    full = lm.generate_until([_req("generate_until", ("write a poem", {"until": [], "max_gen_toks": 6}))])[0]
    answer = sm.generate(["write a poem"], alignment=0.0, max_new_tokens=6)[0].text
    assert full == answer
    if len(answer) > 2:
        stop = answer[2]
        cut = lm.generate_until([_req("generate_until", ("write a poem", {"until": [stop], "max_gen_toks": 6}))])[0]
        assert cut == answer[:answer.index(stop)]
    with pytest.raises(NotImplementedError, match="chat"):
        lm.apply_chat_template([{"role": "user", "content": "hi"}])


def test_registered_as_dsa():
    from lm_eval.api.registry import get_model

    assert get_model("dsa") is DSALM
    assert (TASKS_DIR / "dsa_ifeval.yaml").is_file() and (TASKS_DIR / "dsa_mmlu_cloze.yaml").is_file()


def test_shipped_guard_and_adapter_fill_what_the_alignment_needs(tmp_path, monkeypatch):
    from dsa.eval.lm_eval_model import SHIPPED_ADAPTER, SHIPPED_GUARD, _shipped_defaults

    monkeypatch.chdir(tmp_path)
    assert _shipped_defaults("auto", None, None) == (None, None)  # none shipped here: the usual error follows
    (tmp_path / SHIPPED_GUARD).mkdir(parents=True)
    (tmp_path / SHIPPED_ADAPTER).mkdir(parents=True)
    assert _shipped_defaults("auto", None, None) == (SHIPPED_GUARD, SHIPPED_ADAPTER)
    assert _shipped_defaults(0.5, None, None) == (None, SHIPPED_ADAPTER)
    assert _shipped_defaults(0, None, None) == _shipped_defaults("0", None, None) == (None, None)
    assert _shipped_defaults("auto", "", "") == ("", "")  # `guards=,adapter=`: none
    assert _shipped_defaults("auto", "g", "a") == ("g", "a")


def test_lm_eval_route_matches_the_api(tmp_path):
    """`simple_evaluate` with the dsa_* task YAMLs gives the numbers of `dsa.eval.utility`
    (same documents, same requests, same checkers); needs the shared datasets."""
    require_data()
    import lm_eval
    from lm_eval.tasks import TaskManager

    sm = _sm()
    lm = DSALM(sm=sm, alignment=0.5, cache_dir=str(tmp_path), progress=False)
    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    res = lm_eval.simple_evaluate(model=lm, tasks=["dsa_mmlu_cloze", "dsa_ifeval"], task_manager=tm, limit=3,
                                  gen_kwargs="max_gen_toks=6")["results"]
    api_m = utility.mmlu_cloze(sm, alignment=0.5, n=3, cache_dir=str(tmp_path), progress=False)
    api_i = utility.ifeval(sm, alignment=0.5, n=3, max_new_tokens=6, cache_dir=str(tmp_path), progress=False)
    assert res["dsa_mmlu_cloze"]["acc,none"] == pytest.approx(api_m["acc"])
    assert res["dsa_mmlu_cloze"]["acc_norm,none"] == pytest.approx(api_m["acc_norm"])
    assert res["dsa_ifeval"]["prompt_level_strict_acc,none"] == pytest.approx(api_i["prompt_strict"])
    assert res["dsa_ifeval"]["inst_level_loose_acc,none"] == pytest.approx(api_i["inst_loose"])
