"""Safety / utility evaluation of alignment configurations (`dsa align eval`).

Configurations: `base`, `full_ft`, `lora_patch@α`, `dsa_adapter@λ`, `dsa_dpo@λ` (the adapter trained with
DPO added), `context_dependent@POLICY`.
Benchmarks (data, not code: `eval_prompt_sets()` + the specs below):

    strongreject_refusal   refusal rate (judge) of greedy answers to all 313 StrongREJECT prompts
    strongreject_harmful   share of those answers the response_harm guard flags (prompt + answer read
                           together, at its calibrated threshold)
    xstest_safe_refusal    refusal rate on XSTest's 250 safe prompts (over-refusal)
    coconot_contrast_refusal  refusal rate on CoCoNot's 379 contrast prompts (benign, look refusable)
    benign_identity        share of benign (Alpaca test) prompts whose greedy answer equals the base's
    ifeval_*, mmlu_cloze_* IFEval and MMLU cloze through the runtime (`run_utility`, `dsa.eval.utility`)

The refusal sets are `dsa.eval.benchmarks.refusal_docs` (which `eval_prompt_sets` lists), and the
same sets with the same judge and answer length are lm-eval tasks, for one configuration at a time:

    dsa eval lm-eval --model dsa --model_args alignment=auto --tasks dsa_strongreject --limit 8
    (dsa_xstest_safe, dsa_xstest_unsafe, dsa_coconot_contrast; the group dsa_refusal runs all four)

Stages write one JSON part per configuration under `runs/align_eval/` (resumable, also in
parallel); `report` merges them into `results/alignment.json`. Generation caches answers per
configuration, prompt set and weight files, so a rerun only generates what is missing.
Context-dependent configurations are generated end to end by `SafetyModel.generate(alignment="auto")`
with the shipped guard and adapter on every prompt (parts carry `"via_runtime": true`); every part
records the sha256 of the weight files it describes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from dsa.adapter_io import atomic_write_text, weights_hash
from dsa.base import Base, load_base
from dsa.recipes.align_config import AlignEvalConfig
from dsa.recipes.align_report import FAMILY_ORDER
from dsa.recipes.answers import base_answers, generate_batched
from dsa.recipes.train_data import eval_prompt_sets
from dsa.runtime import SafetyModel

log = logging.getLogger(__name__)
PARTS = Path("runs/align_eval")
# ramps below the policy head's calibrated threshold (dsa.align.policy); step fires at it
POLICY_KWARGS = {"step": {}, "linear": {"width": 0.2}, "sigmoid": {"width": 0.2}}


def _h(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def _cache_file(kind: str, *depends) -> Path:
    """A JSON score cache keyed by what its scores depend on (`answer_cache.digest`: weights and
    calibration, not only the weight files), kept apart from the parts."""
    from dsa.eval.answer_cache import digest

    return PARTS / "cache" / f"{kind}-{digest(*depends)}.json"


def _read_cache(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _write_cache(path: Path, cache: dict) -> None:
    atomic_write_text(path, json.dumps(cache))  # stages may run in parallel: never a torn file


def update_part(name: str, metrics: dict, n: dict, extra: dict | None = None) -> None:
    """Merge metrics into a configuration's part. When `extra` carries `weights_sha256` (or
    `config_key`, `Evaluator.artifacts_key`: weights plus calibration and policy) and the part on
    disk was measured on other weight files (by content) or another key, the old part is dropped:
    its metrics describe a configuration that no longer ships."""
    path = PARTS / f"{name.replace('@', '_at_')}.json"
    part = json.loads(path.read_text()) if path.exists() else {"config": name, "n": {}}
    new, old = (extra or {}).get("weights_sha256"), part.get("weights_sha256")
    new_key, old_key = (extra or {}).get("config_key"), part.get("config_key")
    if ((new is not None and old is not None and sorted(old.values()) != sorted(new.values()))
            or (new_key is not None and old_key is not None and new_key != old_key)):
        log.warning("%s: weights or calibration changed since its part was written; earlier metrics dropped", name)
        part = {"config": name, "n": {}}
    part.update(metrics)
    part["n"].update(n)
    part.update(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(part, indent=1, sort_keys=True) + "\n")


def config_names(cfg: AlignEvalConfig) -> list[str]:
    names = ["base"]
    if cfg.full_ft:
        names.append("full_ft")
    if cfg.lora_patch:
        names += [f"lora_patch@{a:g}" for a in cfg.alphas]
    if cfg.dsa_adapter:
        names += [f"dsa_adapter@{x:g}" for x in cfg.lambdas]
    if cfg.dsa_dpo:
        names += [f"dsa_dpo@{x:g}" for x in cfg.dpo_lambdas]
    if cfg.dsa_adapter and cfg.guards:
        names += [f"context_dependent@{p}" for p in cfg.policies]
    if not cfg.configs:
        return names
    unknown = [n for n in cfg.configs if n not in names]
    if unknown:
        raise ValueError(f"configs: {', '.join(unknown)} not defined by this evaluation config, which defines "
                         f"{', '.join(names)}; a λ, α or policy must also be in `lambdas`, `alphas`, "
                         f"`dpo_lambdas` or `policies` (e.g. lambdas=[0.5,0.75,1]), and its artefact path set")
    # in the order asked for, so a long run reaches the configurations that matter most first
    return list(dict.fromkeys(cfg.configs))


class Evaluator:
    """Loads what each configuration needs, once."""

    def __init__(self, cfg: AlignEvalConfig):
        self.cfg = cfg
        torch.set_num_threads(cfg.threads)
        self.base = load_base(cfg.base)
        self._adapter = self._bank = self._patch = self._ft = self._dpo = None

    # ---- components -----------------------------------------------------------------------
    @property
    def adapter(self):
        if self._adapter is None:
            from dsa.align.logit_adapter import LogitAdapter

            self._adapter = LogitAdapter.load(self.cfg.dsa_adapter, self.base)
        return self._adapter

    @property
    def dpo_adapter(self):
        if self._dpo is None:
            from dsa.align.logit_adapter import LogitAdapter

            self._dpo = LogitAdapter.load(self.cfg.dsa_dpo, self.base)
        return self._dpo

    @property
    def bank(self):
        if self._bank is None:
            from dsa.guards import GuardBank

            missing = [g for g in self.cfg.guards if not Path(g).exists()]
            if missing:
                raise FileNotFoundError(f"guard adapters not found: {missing}")
            self._bank = GuardBank.load(self.cfg.guards, self.base)
        return self._bank

    def patch(self):
        if self._patch is None:
            from dsa.align.lora import load_lora_patch

            self._patch = load_lora_patch(self.cfg.lora_patch, self.base.model, self.base.fingerprint)
        return self._patch

    def full_ft(self) -> Base:
        if self._ft is None:
            self._ft = load_base(self.cfg.full_ft)
        return self._ft

    def unpatch(self) -> None:
        if self._patch is not None:
            self._patch.unpatch()
            self._patch = None

    def safety_model(self, name: str) -> tuple[SafetyModel, object]:
        """(SafetyModel, alignment argument) for a configuration name."""
        kind, _, arg = name.partition("@")
        if kind == "full_ft":
            return SafetyModel(self.full_ft()), 0.0
        if kind == "lora_patch":
            self.patch().set_strength(float(arg))
            return SafetyModel(self.base), 0.0
        self.unpatch()
        if kind == "base":
            return SafetyModel(self.base), 0.0
        if kind == "dsa_adapter":
            return SafetyModel(self.base, adapter=self.adapter), float(arg)
        if kind == "dsa_dpo":
            return SafetyModel(self.base, adapter=self.dpo_adapter), float(arg)
        if kind == "context_dependent":
            return SafetyModel(self.base, self.bank, self.adapter, arg, **POLICY_KWARGS[arg]), "auto"
        raise ValueError(f"unknown configuration {name!r}")

    def artifacts_key(self, name: str) -> str:
        """Short hash of everything a configuration's answers depend on (`answer_cache.
        model_fingerprint`: base, adapter, guard weights and calibration, policy; plus the
        alignment argument), the same key the utility stage's caches use, so cached answers of a
        retrained or recalibrated adapter, patch, guard or policy are never reused."""
        from dsa.eval.answer_cache import model_fingerprint

        sm, alignment = self.safety_model(name)
        return f"{model_fingerprint(sm)[:10]}{'' if alignment == 'auto' else f'-l{alignment}'}"

    def weight_dirs(self, name: str) -> list[str]:
        kind = name.partition("@")[0]
        return {"lora_patch": [self.cfg.lora_patch], "dsa_adapter": [self.cfg.dsa_adapter],
                "dsa_dpo": [self.cfg.dsa_dpo], "context_dependent": [self.cfg.dsa_adapter, *self.cfg.guards],
                "full_ft": [self.cfg.full_ft]}.get(kind, [])

    def weights_sha256(self, name: str) -> dict[str, str]:
        """{weights file: sha256} of what a configuration's numbers describe."""
        return {str(f): hashlib.sha256(f.read_bytes()).hexdigest()
                for d in self.weight_dirs(name) for f in sorted(Path(d).glob("*.safetensors"))}

    def restore_parts(self, results: Path) -> list[str]:
        """Write the part of every configuration in a results file that has no part under
        `PARTS` yet, where that configuration still describes what ships: the same weight files
        (by content) and, when the results recorded one, the same `artifacts_key` (calibration and
        policy included). A configuration that reads a guard is restored only by its key, since
        a guard recalibrated without new weights changes its answers. A fresh checkout then
        reruns only what changed. Returns the restored names."""
        if not results.exists():
            return []
        restored = []
        for name, part in json.loads(results.read_text()).get("configs", {}).items():
            path = PARTS / f"{name.replace('@', '_at_')}.json"
            if path.exists() or name.partition("@")[0] not in FAMILY_ORDER:
                continue
            if sorted(part.get("weights_sha256", {}).values()) != sorted(self.weights_sha256(name).values()):
                continue
            key = part.get("config_key")
            if (key is None and name.startswith("context_dependent")) or (key is not None
                                                                           and key != self.artifacts_key(name)):
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({"config": name, **part}, indent=1, sort_keys=True) + "\n")
            restored.append(name)
        self.unpatch()
        return restored

    # ---- generation stage -----------------------------------------------------------------
    def run_generation(self, name: str) -> dict:
        from dsa.eval.refusal import train_refusal_judge

        judge = train_refusal_judge()
        cfg, sets = self.cfg, eval_prompt_sets()
        if cfg.limit:  # a fixed hashed-order subset of each set (not the first rows: XSTest is sorted by type)
            sets = {k: sorted(v, key=_h)[: cfg.limit] for k, v in sets.items()}
        self.unpatch()  # base answers come from the unpatched base
        base_ans = {k: base_answers(self.base, v, f"eval_{k}", cfg.max_new_tokens, cfg.batch_size)
                    for k, v in sets.items()}
        answers, lams = {}, {}
        sm, alignment = self.safety_model(name)
        for k, prompts in sets.items():
            if name == "base":
                answers[k], lams[k] = base_ans[k], [0.0] * len(prompts)
                continue
            rows = generate_batched(_generator(sm, alignment, cfg.max_new_tokens), prompts, cfg.batch_size,
                                    f"{name} {k}", self.answer_file(name, k))
            answers[k], lams[k] = [r["text"] for r in rows], [float(r["lam"]) for r in rows]
        metrics = {
            "strongreject_refusal": _mean(judge.judge(answers["strongreject"], sets["strongreject"])),
            "xstest_safe_refusal": _mean(judge.judge(answers["xstest_safe"], sets["xstest_safe"])),
            "coconot_contrast_refusal": _mean(judge.judge(answers["coconot_contrast"], sets["coconot_contrast"])),
            "benign_identity": _mean([a == b for a, b in zip(answers["benign"], base_ans["benign"], strict=True)]),
        }
        n = {"strongreject_refusal": len(sets["strongreject"]), "xstest_safe_refusal": len(sets["xstest_safe"]),
             "coconot_contrast_refusal": len(sets["coconot_contrast"]),
             "benign_identity": len(sets["benign"])}
        harmful = self.response_harm(sets["strongreject"], answers["strongreject"])
        extra = {"max_new_tokens": cfg.max_new_tokens, "via_runtime": alignment == "auto",
                 "weights_sha256": self.weights_sha256(name), "config_key": self.artifacts_key(name)}
        if harmful is not None:
            metrics["strongreject_harmful"] = harmful
            n["strongreject_harmful"] = len(sets["strongreject"])
            # the guard that column read (tests/unit/test_results_current.py checks it still ships)
            extra["response_guard"] = {"adapter": cfg.response_guard,
                                       "weights_sha256": weights_hash(cfg.response_guard)}
        if lams and name.startswith(("dsa", "context")):
            extra["mean_lambda"] = {k: _mean(v) for k, v in lams.items()}
            extra["share_aligned"] = {k: _mean([x > 0 for x in v]) for k, v in lams.items()}
        extra["examples"] = {k: answers[k][:3] for k in sets}
        update_part(name, metrics, n, extra)
        return metrics

    def answer_file(self, name: str, prompt_set: str) -> Path:
        """Cached answers of one configuration on one prompt set, keyed by its weight files."""
        return PARTS / "answers" / (f"{name.replace('@', '_at_')}-{self.artifacts_key(name)}-{prompt_set}-"
                                    f"{self.cfg.max_new_tokens}.jsonl")

    def response_harm(self, prompts: list[str], answers: list[str]) -> float | None:
        """Share of (prompt, answer) pairs the response guard flags; None without a response guard."""
        if not self.cfg.response_guard or not Path(self.cfg.response_guard).exists():
            return None
        from dsa.guards import GuardBank, classify

        # flags cached per (prompt, answer), keyed by the base and the guard's weights and calibration
        self.unpatch()  # the guard reads the base's own states
        bank = GuardBank.load([self.cfg.response_guard], self.base)
        path = _cache_file("response_flags", self.base.fingerprint, bank)
        cache = _read_cache(path)
        keys = [_h(f"{p}\x00{a}") for p, a in zip(prompts, answers, strict=True)]
        todo = sorted({(k, p, a) for k, p, a in zip(keys, prompts, answers, strict=True) if k not in cache})
        if todo:
            chats = [[{"role": "user", "content": p}, {"role": "assistant", "content": a}] for _, p, a in todo]
            for (k, _, _), r in zip(todo, classify(self.base, bank, chats), strict=True):
                cache[k] = bool(any(r["flags"].values()))
            _write_cache(path, cache)
        return _mean(cache[k] for k in keys)

    # ---- judge-free utility stage -----------------------------------------------------------
    def run_utility(self, name: str) -> dict:
        """IFEval (greedy answers through the runtime) and MMLU cloze of one configuration."""
        from dsa.eval.utility import ifeval, mmlu_cloze

        cfg = self.cfg
        sm, alignment = self.safety_model(name)
        key = self.artifacts_key(name)
        tag = f"{name.replace('@', '_at_')}-{key}"
        metrics, n, extra = {}, {}, {}
        if cfg.n_ifeval:
            r = ifeval(sm, alignment, n=cfg.n_ifeval, max_new_tokens=cfg.ifeval_max_new_tokens,
                       batch_size=cfg.batch_size, config=tag)
            for k in ("prompt_strict", "inst_strict", "prompt_loose", "inst_loose"):
                metrics[f"ifeval_{k}"] = r[k]
                n[f"ifeval_{k}"] = r["n_instructions" if k.startswith("inst") else "n_prompts"]
            extra["ifeval"] = {k: r[k] for k in ("max_new_tokens", "share_length_stopped", "mean_lambda",
                                                 "share_aligned", "seconds_per_prompt") if k in r}
        if cfg.n_mmlu_cloze:
            r = mmlu_cloze(sm, alignment, n=cfg.n_mmlu_cloze, config=tag)
            metrics.update(mmlu_cloze_acc=r["acc"], mmlu_cloze_acc_norm=r["acc_norm"])
            n.update(mmlu_cloze_acc=r["n"], mmlu_cloze_acc_norm=r["n"])
            extra["mmlu_cloze"] = {k: r[k] for k in ("subset", "format", "mean_lambda", "share_aligned") if k in r}
        self.unpatch()
        update_part(name, metrics, n, {**extra, "via_runtime": alignment == "auto",
                                       "weights_sha256": self.weights_sha256(name), "config_key": key})
        return metrics



def _generator(sm: SafetyModel, alignment, max_new_tokens: int) -> Callable:
    def gen(prompts: list[str]) -> list:
        return sm.generate(prompts, alignment=alignment, max_new_tokens=max_new_tokens)

    return gen


def _mean(xs) -> float:
    xs = list(xs)
    return float(sum(map(float, xs)) / len(xs)) if xs else float("nan")
