"""Train one alignment artefact from an `AlignTrainConfig`: setup → data → train → save.

    lora_patch   LoRA on attention + MLP projections, refusal-SFT on safety data only
    dsa_adapter  tail-copy logit adapter: refusal-SFT + KL-to-base on benign (+ DPO)
    full_ft      every base weight, refusal-SFT + the base's own benign answers (standard safety FT)
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from dsa.adapter_io import atomic_write_text
from dsa.align.lora import LoRASpec, patch_lora
from dsa.base import Base, load_base
from dsa.data.tasks import SENSITIVE_WORDS
from dsa.recipes.align_config import AlignTrainConfig
from dsa.recipes.answers import base_answers
from dsa.recipes.sft import AdapterStudent, Example, ModelStudent, train
from dsa.recipes.train_data import (
    TRAIN_MAX_NEW_TOKENS,
    contrast_prompts,
    guard_hard_negatives,
    is_self_harm,
    refusal_for,
    training_prompts,
)
from dsa.train import process_state

log = logging.getLogger(__name__)


def hh_pairs(n: int) -> list[Example]:
    """hh_rlhf harmless-base pairs as DPO rows (first human turn only, answers cut to 400 chars)."""
    from dsa.data import load_source

    rows = []
    for r in load_source("hh_rlhf"):
        turns = r.prompt.split("\n\nHuman:")
        if len(turns) != 2:  # single-turn dialogues only: they fit one chat message
            continue
        prompt = turns[1].split("\n\nAssistant:")[0].strip()
        chosen, rejected = r.meta["chosen"][:400], r.meta["rejected"][:400]
        if prompt and chosen and rejected and chosen != rejected:
            rows.append(Example(prompt, chosen, "dpo", rejected))
        if len(rows) >= n:
            break
    return rows


def advbench_targets() -> dict[str, str]:
    from dsa.data import load_source

    return {r.main_text: r.meta["target"] for r in load_source("advbench") if r.meta.get("target")}


def wrapped_copies(base: Base, prompts: list[str], cfg: AlignTrainConfig) -> dict[int, tuple[str, str]]:
    """{index: (wrapper kind, text)}: the seeded `cfg.wrap_share` of `prompts` that training sees
    wrapped by a TRAIN family or padded with train filler (`dsa.data.wrappers.augment`; the held-out
    families, filler and encodings stay for evaluation). Pad lengths are counted in base tokens."""
    from dsa.data.wrappers import augment, token_counter

    if cfg.wrap_share <= 0 or not prompts:
        return {}
    count = token_counter(base.tokenizer)
    return {i: (kind, text) for i, kind, text in augment(prompts, seed=cfg.seed, share=cfg.wrap_share,
                                                          pad_tokens=cfg.wrap_pad_tokens, count=count)}


def self_harm_copies(base: Base, harmful: list[str], cfg: AlignTrainConfig) -> list[Example]:
    """`cfg.self_harm_repeat` − 1 extra SFT rows per self-harm request, each a copy wrapped by a TRAIN
    family or train filler (seeded apart from `wrapped_copies`), with the plain prompt's care refusal."""
    from dsa.data.wrappers import augment, token_counter

    sh = [p for p in harmful if is_self_harm(p)]
    return [Example(text, refusal_for(sh[i], cfg.care_refusals), "sft", wrapper=kind, plain=sh[i])
            for k in range(1, cfg.self_harm_repeat)
            for i, kind, text in augment(sh, seed=cfg.seed + 7919 * k, share=1.0, pad_tokens=cfg.wrap_pad_tokens,
                                         count=token_counter(base.tokenizer))]


def build_examples(cfg: AlignTrainConfig, base: Base) -> list[Example]:
    harmful, benign = training_prompts(cfg.n_harmful, max(cfg.n_benign, 1), cfg.contrast_share, cfg.min_self_harm)
    benign = benign[: cfg.n_benign]
    if cfg.hard_negatives and cfg.hard_share > 0 and benign:
        # the guard's own false positives first: under context-dependent alignment the adapter only
        # ever sees prompts the guard flags, so that is where it must still answer safe requests
        n_hard = round(cfg.n_benign * cfg.hard_share)
        hard = guard_hard_negatives(base, cfg.hard_negatives, n_hard)
        seen = set(hard)
        benign = hard + [p for p in benign if p not in seen][: cfg.n_benign - len(hard)]
    # a wrapped harmful prompt keeps its plain prompt's refusal; a wrapped benign one is answered by
    # the base itself (its own answer to the wrapped text), so only the intent decides the target
    wrapped_h, wrapped_b = wrapped_copies(base, harmful, cfg), wrapped_copies(base, benign, cfg)
    care = cfg.care_refusals
    ex = [Example(wrapped_h[i][1], refusal_for(p, care), "sft", wrapper=wrapped_h[i][0], plain=p) if i in wrapped_h
          else Example(p, refusal_for(p, care), "sft") for i, p in enumerate(harmful)]
    ex += self_harm_copies(base, harmful, cfg)
    if benign:
        texts = [wrapped_b[i][1] if i in wrapped_b else p for i, p in enumerate(benign)]
        answers = base_answers(base, texts, "train_benign", TRAIN_MAX_NEW_TOKENS)
        ex += [Example(t, a, "distill", wrapper=wrapped_b[i][0] if i in wrapped_b else None,
                       plain=benign[i] if i in wrapped_b else None)
               for i, (t, a) in enumerate(zip(texts, answers, strict=True)) if a]
    if cfg.dpo:
        # rejected = a compliant answer: AdvBench's own affirmative target ("Sure, here is ...")
        targets = advbench_targets()
        ex += [Example(e.prompt, e.response, "dpo", targets[e.plain or e.prompt]) for e in ex
               if e.kind == "sft" and (e.plain or e.prompt) in targets]
        # and the other direction: on edgy-but-safe prompts the base's own answer beats a refusal
        edgy = set(contrast_prompts("train"))
        plain = lambda e: e.plain or e.prompt  # noqa: E731
        ex += [Example(e.prompt, e.response, "dpo", refusal_for(plain(e), care)) for e in ex
               if e.kind == "distill" and (SENSITIVE_WORDS.search(plain(e)) or plain(e) in edgy)]
        ex += hh_pairs(cfg.n_hh)
    return ex


def run(cfg: AlignTrainConfig) -> Path:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    base = load_base(cfg.base)
    state = process_state()  # under `accelerate launch`: the main process writes caches and adapters
    with state.main_process_first():
        examples = build_examples(cfg, base)
    out = Path(cfg.out)
    kw = dict(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, beta=cfg.beta,
              kl_weight=cfg.kl_weight, max_len=cfg.max_len, bf16_autocast=cfg.bf16_autocast)
    extra = {"train_config": cfg.model_dump(), "n_examples": {k: sum(e.kind == k for e in examples)
                                                              for k in ("sft", "distill", "dpo")},
             "n_wrapped": {k: sum(e.kind == k and e.wrapper is not None for e in examples) for k in ("sft", "distill")},
             "n_self_harm": sum(e.kind == "sft" and is_self_harm(e.plain or e.prompt) for e in examples)}
    if cfg.method == "lora_patch":
        examples = [e for e in examples if e.kind == "sft"]  # safety data only (Mou et al.)
        patch = patch_lora(base.model, LoRASpec(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, layers=cfg.lora_layers))
        base.model.train()
        history = train(ModelStudent(base.model, base, patch.parameters()), base, examples, **kw)
        base.model.eval()
        if not state.is_main_process:
            return out
        patch.save(out, base.fingerprint, base.name, extra | {"history": history})
        hub = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}.get(base.name, base.name)
        patch.export_peft(out / "peft", base_model_name_or_path=hub)
    elif cfg.method == "dsa_adapter":
        from dsa.align.logit_adapter import LogitAdapter, LogitAdapterSpec

        adapter = LogitAdapter(base, LogitAdapterSpec(k=cfg.k))
        adapter.tail.float().train()
        history = train(AdapterStudent(adapter, base), base, examples, **kw)
        adapter.tail.to(base.dtype).eval()
        if not state.is_main_process:
            return out
        adapter.save(out, base, extra | {"history": history})
    else:
        student_base = load_base(cfg.base, dtype="fp32")
        model = student_base.model
        model.train()
        params = [p for p in model.parameters()]
        history = train(ModelStudent(model, student_base, params), student_base,
                        [Example(e.prompt, e.response, "sft") for e in examples if e.kind != "dpo"], **kw)
        model.eval().to(torch.bfloat16)
        if not state.is_main_process:
            return out
        model.save_pretrained(out)
        base.tokenizer.save_pretrained(out)
        atomic_write_text(out / "dsa_train.json", json.dumps(extra | {"history": history}, indent=1) + "\n")
    log.warning("trained %s in %.0f s -> %s", cfg.method, time.perf_counter() - t0, out)
    return out
