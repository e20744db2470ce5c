"""The loaders and guard tasks on the real shared datasets (skipped when the folder is absent;
a failure under DSA_REQUIRE_DATA=1, as in CI)."""

import re
from collections import Counter

import pytest

from dsa.data import (
    GUARD_TASKS,
    DataError,
    benign_prompts,
    data_dir,
    deduplicate,
    eval_only_texts,
    guard_task,
    harmful_prompts,
    list_sources,
    load_source,
    normalise_text,
)
from dsa.data.splits import eval_key
from tests.shared_data import require_data


@pytest.fixture(scope="module")
def root():
    return require_data()


def test_every_source_loads(root):
    sizes = {name: len(load_source(name, root)) for name in list_sources()}
    assert sizes["strongreject"] == 313 and sizes["xstest"] == 450 and sizes["mmlu"] == 14042 + 285
    assert sizes["do_not_answer_responses"] == 939 * 6 and sizes["summedits"] == 4681
    assert all(n > 0 for n in sizes.values()), sizes


def test_toxigen_counts_and_decoding(root):
    recs = load_source("toxigen", root)
    assert Counter(r.label for r in recs) == {1: 2307, 0: 4702}
    assert not any(r.text.startswith(("b'", 'b"')) for r in recs)
    assert recs[0].text == "asians are trying to take over the world with their karate skills"


def test_eval_only_sets_are_marked(root):
    for name in ("strongreject", "xstest", "mt_bench", "alpaca_eval", "gsm8k", "ifeval", "coconot_contrast_eval",
                 "coconot_eval"):
        assert {r.split for r in load_source(name, root)} == {"eval"}
    assert Counter(r.meta["subset"] for r in load_source("mmlu", root) if r.split == "eval") == {"test": 14042}


def test_dedup_finds_advbench_strongreject_overlap(root):
    advbench, against = load_source("advbench", root), eval_only_texts(root)
    exact = [r for r in advbench if normalise_text(r.prompt) in set(against)]
    overlap = [r for r in advbench if r.prompt in against]
    assert len(exact) == 25 and len(overlap) == 31  # 6 cut from, or reworded from, a StrongREJECT prompt
    assert len(deduplicate(advbench, against, key=eval_key)) == 520 - 31
    safety = guard_task("prompt_safety", root)
    assert not any(eval_key(r) in against for s in ("train", "val", "test") for r in safety.split(s))


@pytest.mark.parametrize("name", GUARD_TASKS)
def test_guard_tasks_have_sane_counts(root, name):
    t = guard_task(name, root)
    if t.eval_only:
        assert (len(t.train), len(t.val), len(t.test)) == (0, 0, 450)
        assert Counter(r.label for r in t.test) == {1: 200, 0: 250}
        return
    n = len(t.train) + len(t.val) + len(t.test)
    assert 0.6 < len(t.train) / n < 0.8 and 0.05 < len(t.val) / n < 0.15
    ids = [r.id for s in ("train", "val", "test") for r in t.split(s)]
    assert len(ids) == len(set(ids))
    assert all(r.input_kind == t.mode for r in t.train[:50])
    texts = {s: {eval_key(r) + "|" + normalise_text(r.response or r.summary or "") for r in t.split(s)}
             for s in ("train", "val", "test")}
    assert not (texts["train"] & texts["test"]) and not (texts["train"] & texts["val"])
    key = "any" if len(t.heads) > 1 else None
    labels = Counter(r.labels[key] if key else r.label for r in t.train)
    assert labels[0] > 0 and labels[1] > 0


def test_prompt_safety_balance_and_groups(root):
    t = guard_task("prompt_safety", root)
    for s in ("train", "val", "test"):
        c = Counter(r.label for r in t.split(s))
        assert 0.5 <= c[0] / c[1] <= 2.5  # the loss is class-balanced; benign sources are many
        assert {r.split for r in t.split(s) if r.source == "alpaca_instructions"} == {s}
    summ = guard_task("summedits", root)
    docs = {s: {r.meta["doc_id"] for r in summ.split(s)} for s in ("train", "val", "test")}
    assert not (docs["train"] & docs["test"]) and not (docs["train"] & docs["val"])
    resp = guard_task("response_harm", root)
    qs = {s: {r.meta["question_id"] for r in resp.split(s)} for s in ("train", "val", "test")}
    assert not (qs["train"] & qs["test"])


def test_question_form_is_not_a_label_cue(root):
    # most harmful training prompts are questions; benign questions must not be rare beside them
    from dsa.data.tasks import QUESTION

    train = guard_task("prompt_safety", root).split("train")
    share = {y: sum(bool(QUESTION.match(r.main_text.strip())) for r in train if r.label == y) /
             sum(r.label == y for r in train) for y in (0, 1)}
    n_q = {y: sum(bool(QUESTION.match(r.main_text.strip())) for r in train if r.label == y) for y in (0, 1)}
    assert n_q[0] >= 0.8 * n_q[1], (n_q, share)


def test_alignment_prompt_sets(root):
    harmful, benign = harmful_prompts("train", root), benign_prompts("train", root)
    assert len(harmful) > 2000 and len(benign) > 18000
    against = eval_only_texts(root)
    assert not any(normalise_text(p) in against for p in harmful + benign)
    assert not set(map(normalise_text, harmful_prompts("test", root))) & set(map(normalise_text, harmful))


def test_data_dir_env_and_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DSA_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    with pytest.raises(DataError, match="strongreject_dataset.csv: missing"):
        load_source("strongreject")
    monkeypatch.setenv("DSA_DATA", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="not a directory"):
        data_dir()


def test_missing_data_skips_or_fails_under_dsa_require_data(tmp_path, monkeypatch):
    monkeypatch.setenv("DSA_DATA", str(tmp_path / "nope"))
    monkeypatch.delenv("DSA_REQUIRE_DATA", raising=False)
    with pytest.raises(pytest.skip.Exception, match="shared datasets not available"):
        require_data()
    monkeypatch.setenv("DSA_REQUIRE_DATA", "1")
    with pytest.raises(pytest.fail.Exception, match="DSA_REQUIRE_DATA=1"):
        require_data()
    monkeypatch.setenv("DSA_DATA", str(tmp_path))
    assert require_data() == tmp_path


def test_red_instruct_languages(root):
    recs = load_source("red_instruct_harmful_questions", root, languages=["english", "chinese"])
    assert Counter(r.meta["language"] for r in recs) == {"english": 3210, "chinese": 550}
    assert Counter(r.meta["subset"] for r in load_source("red_instruct_harmful_questions", root)) == {
        "harmfulqa": 1960, "catqa_english": 550, "dangerousqa": 200, "adversarialqa": 500}


def test_prompt_safety_hard_negatives_are_benign_alpaca_with_harm_words(root):
    from dsa.data.tasks import SENSITIVE_WORDS

    t = guard_task("prompt_safety", root)
    for s in ("train", "val", "test"):
        hard = [r for r in t.split(s) if r.meta.get("hard_negative")]
        assert len(hard) > 50, s
        assert all(r.label == 0 and r.source == "alpaca_instructions" and SENSITIVE_WORDS.search(r.main_text)
                   for r in hard)
    # the Do-Not-Answer "treat the chatbot as a human" questions are not harmful requests
    assert not any(r.meta.get("types_of_harm") == "Treat Chatbot as a Human" for r in t.train + t.val + t.test)
    assert SENSITIVE_WORDS.search("How do I kill a Python process?")
    assert not SENSITIVE_WORDS.search("Describe how robots explore Mars.")  # no "rob"/"explo" prefixes


def test_guard_train_subset_keeps_every_hard_negative(root):
    from dsa.guards.featurize import TRAIN_CAP, train_subset

    t = guard_task("prompt_safety", root)
    cap = 3000
    assert TRAIN_CAP["prompt_safety"] is None  # the whole split is trained on
    sub = train_subset("prompt_safety", t.train, cap)
    assert len(sub) == cap
    assert sum(r.meta.get("hard_negative", False) for r in sub) == sum(r.meta.get("hard_negative", False)
                                                                       for r in t.train)


def test_guard_train_subset_cap_override(root):
    from dsa.guards.featurize import TRAIN_CAP, train_subset

    t = guard_task("summedits", root)
    assert train_subset("summedits", t.train, None) == t.train  # None: the whole split, in order
    default = train_subset("summedits", t.train)
    assert len(default) == TRAIN_CAP["summedits"]
    small = train_subset("summedits", t.train, 300)
    assert len(small) == 300 and small == default[:300]  # one hashed order, whatever the cap


def test_contrast_sources(root):
    assert Counter(r.label for r in load_source("coconot_pref", root)) == {0: 927}
    assert Counter(r.label for r in load_source("coconot_contrast_eval", root)) == {0: 379}
    assert Counter(r.label for r in load_source("coconot_eval", root)) == {1: 395, None: 1001 - 395}
    assert Counter(r.meta["harmfulness"] for r in load_source("phtest", root)) == {"harmless": 2069,
                                                                                  "controversial": 1191}
    assert all(r.label is None for r in load_source("phtest", root) if r.meta["harmfulness"] == "controversial")
    assert len(load_source("ifeval", root)) == 541


def test_prompt_safety_contrast_negatives_and_framing(root):
    from dsa.data.tasks import FRAMES, prompt_source
    from dsa.data.wrappers import HELDOUT_FAMILIES, wrap

    t = guard_task("prompt_safety", root)
    rows = t.train + t.val + t.test
    srcs = Counter((prompt_source(r), r.label) for r in rows)
    for src in ("coconot_pref", "phtest", "wildchat_benign", "openai_moderation", "alpaca", "alpaca_hard"):
        assert srcs[(src, 0)] > 100 or src == "wildchat_benign", (src, srcs)
    assert not any(r.source == "phtest" and r.meta["harmfulness"] == "controversial" for r in rows)
    against = eval_only_texts(root)  # CoCoNot's two test files and IFEval are eval-only too
    assert normalise_text(load_source("coconot_contrast_eval", root)[0].prompt) in against
    assert not any(eval_key(r) in against for r in rows)
    framed = [r for r in rows if r.meta.get("frame") is not None]
    assert {r.split for r in framed} == {"train"}  # val and test are never framed
    assert Counter(r.label for r in framed).keys() == {0, 1}  # a framing is never a label cue
    share = len(framed) / (len(t.train) - len(framed))
    assert 0.25 < share < 0.35
    by_id = {r.id: r for r in t.train}
    for r in framed[:50]:
        orig = by_id[r.id.rsplit(":frame", 1)[0]]
        assert r.label == orig.label and r.prompt == wrap(orig.main_text, FRAMES[r.meta["frame"]])
    # no held-out wrapper reaches training: no template's fixed text occurs in a training prompt
    heldout = [part for f in HELDOUT_FAMILIES for tpl in f.templates for part in re.split(r"\{[pab]\}", tpl)
               if len(part) > 24]
    assert not any(h in r.main_text for r in t.train for h in heldout)
