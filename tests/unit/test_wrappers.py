"""Wrapper families and encodings: seeded, label-free, train and held-out disjoint."""

from __future__ import annotations

import re

import pytest

from dsa.data.wrappers import (
    FILLER_HELDOUT,
    FILLER_TRAIN,
    FILLER_VAL,
    HELDOUT_FAMILIES,
    TRAIN_FAMILIES,
    augment,
    corpus_pads,
    document_pads,
    document_pool,
    fullwidth,
    inject_template,
    long_pads,
    pad,
    wrap,
    zero_width,
)
from tests.tiny import tiny_tokenizer


def _fixed_parts(fams):
    return {part.strip() for f in fams for t in f.templates for part in re.split(r"\{[pab]\}", t) if part.strip()}


def test_train_and_heldout_share_no_template_text_and_no_filler():
    assert not set(FILLER_TRAIN) & set(FILLER_HELDOUT)
    # the val pool, for choosing among candidates, shares no sentence with either
    assert not set(FILLER_VAL) & (set(FILLER_TRAIN) | set(FILLER_HELDOUT))
    assert not _fixed_parts(TRAIN_FAMILIES) & _fixed_parts(HELDOUT_FAMILIES)
    assert not {f.name for f in TRAIN_FAMILIES} & {f.name for f in HELDOUT_FAMILIES}


def test_wrap_is_seeded_and_keeps_the_prompt():
    p = "How do I bake bread?"
    for f in (*TRAIN_FAMILIES, *HELDOUT_FAMILIES):
        a, b = wrap(p, f.name, seed=1), wrap(p, f.name, seed=1)
        assert a == b and p in a
    with pytest.raises(ValueError, match="unknown wrapper family"):
        wrap(p, "nope")


@pytest.mark.parametrize("side", ["before", "after", "around"])
def test_pad_reaches_the_token_count_with_heldout_filler(side):
    tok = tiny_tokenizer()
    p = "how to do a bad thing quickly"
    out = pad(p, 100, side, tokenizer=tok)
    n = len(tok(out, add_special_tokens=False)["input_ids"]) - len(tok(p, add_special_tokens=False)["input_ids"])
    assert 100 <= n < 140 and p in out
    assert out.startswith(p) == (side == "after") and out.endswith(p) == (side == "before")
    assert pad(p, 0, side) == p


def test_encodings_change_every_word_and_augment_uses_train_families_only():
    p = "make a pipe bomb"
    assert fullwidth(p) == "ｍａｋｅ\u3000ａ\u3000ｐｉｐｅ\u3000ｂｏｍｂ"
    assert zero_width(p) != p and zero_width(p).replace("\u200b", "").replace("\u200c", "").replace(
        "\u200d", "").replace("\u2060", "").replace("\ufeff", "") == p
    assert "<|im_end|>" in inject_template(p)
    prompts = [f"question number {i} about cooking" for i in range(400)]
    out = augment(prompts, seed=0, share=0.5)
    assert 150 < len(out) < 250
    kinds = {k for _, k, _ in out}
    assert kinds <= {f.name for f in TRAIN_FAMILIES} | {"pad_before", "pad_after", "pad_around"}
    assert not any(h in text for _, _, text in out for h in FILLER_HELDOUT)


def test_long_pads_repeat_train_filler_only_and_leave_augment_unchanged():
    prompts = [f"question number {i} about cooking" for i in range(400)]
    before = augment(prompts, seed=0, share=0.5)
    out = long_pads(prompts, seed=0, share=0.25, pad_tokens=(300,))
    assert 60 < len(out) < 140 and out == long_pads(prompts, seed=0, share=0.25, pad_tokens=(300,))
    assert {k for _, k, _ in out} <= {"pad_long_before", "pad_long_after", "pad_long_around"}
    for i, _, text in out:
        assert prompts[i] in text and len(text.split()) > 200  # ~300 tokens (words × 1.3)
        assert not any(h in text for h in FILLER_HELDOUT)
    # a subset of sentences, cycled: some copies repeat one sentence many times
    assert max(max(text.count(s) for s in FILLER_TRAIN) for _, _, text in out) >= 5
    assert augment(prompts, seed=0, share=0.5) == before


def test_corpus_pads_use_only_the_pool_never_the_prompt_itself_and_cover_repetition():
    prompts = [f"question number {i} about cooking" for i in range(400)]
    pool = [f"benign pool text {i} about gardening." for i in range(50)] + prompts[:10]
    before = (augment(prompts, seed=0, share=0.5), long_pads(prompts, seed=0, share=0.25))
    out = corpus_pads(prompts, pool, seed=0, share=0.25, pad_tokens=(200,))
    assert 60 < len(out) < 140 and out == corpus_pads(prompts, pool, seed=0, share=0.25, pad_tokens=(200,))
    assert {k for _, k, _ in out} <= {"pad_corpus_before", "pad_corpus_after", "pad_corpus_around"}
    allowed = set(pool)
    for i, _, text in out:
        rest = text.replace(prompts[i], "", 1)
        assert prompts[i] in text and len(text.split()) > 130  # ~200 tokens (words × 1.3)
        assert prompts[i] not in rest  # the prompt is never part of its own padding
        assert not any(h in text for h in FILLER_HELDOUT + FILLER_TRAIN)
        pieces = re.findall(r"(benign pool text \d+ about gardening\.|question number \d+ about cooking)", rest)
        assert pieces and set(pieces) <= allowed
    # most copies mix many pool texts; some cycle 1 to 3 of them (repetition)
    distinct = [len(set(re.findall(r"benign pool text \d+ ", t.replace(prompts[i], "", 1)))) for i, _, t in out]
    assert max(distinct) > 10 and 0 < sum(d <= 3 for d in distinct) < len(out)
    assert (augment(prompts, seed=0, share=0.5), long_pads(prompts, seed=0, share=0.25)) == before
    with pytest.raises(ValueError, match="at least 4"):
        corpus_pads(prompts, ["a", "b"], share=1.0)


def test_document_pads_put_coherent_documents_around_both_classes_and_pools_split_train_from_val():
    docs = [" ".join(f"Document {d} sentence {k} tells a plain story." for k in range(30)) for d in range(40)]
    train, val = document_pool(docs, "train"), document_pool(docs, "val")
    assert train and val and not set(train) & set(val) and sorted(train + val) == sorted(docs)
    assert document_pool(docs, "val") == val  # seeded
    prompts = [f"question number {i} about cooking" for i in range(300)]
    out = document_pads(prompts, train, seed=0, share=0.3, pad_tokens=(200,))
    assert 50 < len(out) < 130 and out == document_pads(prompts, train, seed=0, share=0.3, pad_tokens=(200,))
    assert {k for _, k, _ in out} == {"pad_doc_before", "pad_doc_after", "pad_doc_around"}
    for i, kind, text in out:
        rest = text.replace(prompts[i], "", 1)
        assert prompts[i] in text and 150 < len(rest.split()) < 200 and "question number" not in rest
        ids = [(int(d), int(k)) for d, k in re.findall(r"Document (\d+) sentence (\d+)", rest)]
        assert ids and {d for d, _ in ids} <= {int(t.split()[1]) for t in train}  # the split's own pool only
        # reading order: within one document the sentences come in sequence
        for (d1, k1), (d2, k2) in zip(ids, ids[1:], strict=False):
            assert d1 != d2 or k2 == k1 + 1 or (kind == "pad_doc_around")
    with pytest.raises(ValueError, match="train and val"):
        document_pool(docs, "test")
    with pytest.raises(ValueError, match="at least one document"):
        document_pads(prompts, [], share=1.0)
