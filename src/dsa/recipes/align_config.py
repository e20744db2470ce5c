"""Typed configs for `dsa align train` and `dsa align eval` (`dsa.config.Config`: YAML files in
configs/, `key=value` overrides on the command line, unknown keys rejected, every field documented)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dsa.adapter_io import SHIPPED_ADAPTER, SHIPPED_GUARD
from dsa.config import Config


class AlignTrainConfig(Config):
    """One alignment training job (a LoRA refusal patch, a DSA adapter or a full fine-tune)."""

    method: Literal["lora_patch", "dsa_adapter", "full_ft"] = Field(
        "dsa_adapter", description="what to train")
    base: str = Field("smollm2-135m-instruct", description="base model (embedded name, hub id or dir)")
    out: str = Field(SHIPPED_ADAPTER, description="output directory")
    n_harmful: int = Field(256, description="harmful training prompts (refusal targets)", ge=1)
    n_benign: int = Field(256, description="benign training prompts (base self-distillation); 0 = safety data only",
                          ge=0)
    contrast_share: float = Field(0.0, description="share of the benign prompts drawn from edgy-but-safe "
                                  "contrast data (CoCoNot preference prompts, PHTest harmless; training split)",
                                  ge=0, le=1)
    care_refusals: bool = Field(False, description="refuse self-harm requests with care and a pointer to help "
                                "(train_data.care_refusal_for); off reproduces the adapters trained before it")
    min_self_harm: int = Field(0, description="at least this many self-harm requests among the harmful prompts "
                               "(from the training pool; they get refusals that carry care)", ge=0)
    self_harm_repeat: int = Field(1, description="rows per self-harm request: the extra ones are copies wrapped by a "
                                  "TRAIN family / train filler (seeded), so the care refusal, a minority target, "
                                  "is learnt", ge=1)
    wrap_share: float = Field(0.0, description="seeded share of the harmful AND of the benign prompts replaced by a "
                              "copy wrapped by a TRAIN wrapper family or padded with train filler (same share on "
                              "both sides, so a wrapper is never a label cue)", ge=0, le=1)
    wrap_pad_tokens: list[int] = Field([24, 48, 96], description="filler lengths (tokens) of the padded copies; "
                                       "short enough that the request survives `max_len`")
    hard_negatives: str = Field("", description="guard adapter dir: this share of the benign prompts are the "
                                "benign training prompts it scores highest ('' = none)")
    hard_share: float = Field(0.0, description="share of the benign prompts mined by `hard_negatives`", ge=0, le=1)
    dpo: bool = Field(False, description="add DPO pairs: refusal vs the base's compliance, and hh_rlhf harmless pairs")
    n_hh: int = Field(128, description="hh_rlhf harmless pairs used when dpo is on", ge=0)
    beta: float = Field(0.1, description="DPO inverse temperature", gt=0)
    kl_weight: float = Field(1.0, description="weight of the KL-to-base self-distillation loss", ge=0)
    epochs: int = Field(2, description="passes over the training rows", ge=1)
    batch_size: int = Field(8, description="rows per optimiser step", ge=1)
    lr: float = Field(2e-4, description="peak learning rate (warmup then cosine)", gt=0)
    max_len: int = Field(160, description="token limit of one training transcript", ge=16)
    lora_r: int = Field(8, description="LoRA rank (lora_patch)", ge=1)
    lora_alpha: float = Field(16.0, description="LoRA scaling numerator: scale = lora_alpha / r")
    lora_layers: list[int] | None = Field(None, description="decoder layers that get LoRA (None = all)")
    k: int = Field(4, description="decoder layers the DSA adapter copies (dsa_adapter)", ge=1)
    seed: int = Field(0, description="shuffle seed")
    bf16_autocast: bool = Field(False,
                                description="train under bf16 autocast (fp32 was ~12x faster on the CPU we measured)")
    threads: int = Field(2, description="torch CPU threads", ge=1)


class AlignEvalConfig(Config):
    """The safety/utility evaluation of every configuration."""

    base: str = Field("smollm2-135m-instruct", description="base model")
    lora_patch: str = Field("adapters/align/lora_patch", description="LoRA refusal patch dir ('' = skip)")
    dsa_adapter: str = Field(SHIPPED_ADAPTER, description="DSA adapter dir ('' = skip)")
    dsa_dpo: str = Field("runs/dsa_adapter_dpo",
                         description="DSA adapter trained with DPO added ('' = skip), configurations dsa_dpo@λ")
    dpo_lambdas: list[float] = Field([1.0], description="strengths of the DPO-trained DSA adapter to evaluate")
    full_ft: str = Field("runs/full_ft", description="full fine-tune model dir ('' = skip)")
    guards: list[str] = Field([SHIPPED_GUARD],
                              description="guard adapter dirs for context-dependent alignment")
    response_guard: str = Field("adapters/guards/response_harm",
                                description="response guard dir: share of StrongREJECT answers it flags ('' = skip)")
    alphas: list[float] = Field([0.5, 1.0, 1.5], description="LoRA patch strengths to evaluate")
    lambdas: list[float] = Field([0.5, 1.0], description="DSA adapter strengths to evaluate (generation)")
    policies: list[str] = Field(["step", "linear", "sigmoid"], description="context-dependent policies")
    n_ifeval: int = Field(541, description="IFEval prompts (first N in sha256 order; 0 = skip)", ge=0)
    ifeval_max_new_tokens: int = Field(256, description="IFEval answer budget (tokens)", ge=1)
    n_mmlu_cloze: int = Field(1000, description="MMLU cloze questions (fixed hashed subset; 0 = skip)", ge=0)
    max_new_tokens: int = Field(32, description="greedy answer length judged for refusal and identity", ge=1)
    batch_size: int = Field(48, description="generation batch size", ge=1)
    configs: list[str] = Field([], description="only these configuration names (empty = all)")
    limit: int = Field(0, description="a fixed hashed-order subset of N prompts per generation set (0 = all)", ge=0)
    out: str = Field("results/alignment.json", description="results file")
    threads: int = Field(2, description="torch CPU threads", ge=1)
