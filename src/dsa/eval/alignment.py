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
    mmlu_acc               zero-shot MMLU accuracy by the log-likelihood of the answer letter
    ref_loglik_ratio       exp(mean token log-lik of AlpacaEval reference answers − the base's)
    kl_to_base             mean per-token KL(base ‖ config) on those reference answers

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
import math
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from dsa.adapter_io import atomic_write_text
from dsa.align.answers import base_answers, generate_batched
from dsa.align.config import AlignEvalConfig
from dsa.align.sft import encode_pairs
from dsa.align.train_data import eval_prompt_sets
from dsa.base import Base, load_base
from dsa.runtime import SafetyModel
from dsa.taps import record_taps

log = logging.getLogger(__name__)
PARTS = Path("runs/align_eval")
# ramps below the policy head's calibrated threshold (dsa.align.policy); step fires at it
POLICY_KWARGS = {"step": {}, "linear": {"width": 0.2}, "sigmoid": {"width": 0.2}}
LETTERS = ("A", "B", "C", "D")


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


def reference_rows(n: int) -> list:
    """The fixed AlpacaEval subset the reference log-likelihood stage scores: the first `n` in
    sha256(id) order."""
    from dsa.data import load_source

    return sorted(load_source("alpaca_eval"), key=lambda r: _h(r.id))[:n]


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

    def _dpo_logits(self, enc: dict, lam: float, **kw) -> torch.Tensor:
        """(1 − λ)·base + λ·aligned logits of the DPO-trained adapter (its own base pass)."""
        self.unpatch()
        a = self.dpo_adapter
        pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode(), record_taps(self.base.model, [a.input_tap], spec=self.base.spec) as cache:
            bl = self.base.model(**enc, position_ids=pos, **kw).logits
        al = a(cache[a.input_tap], enc["attention_mask"], pos, **kw)[0]
        return (1 - lam) * bl.float() + lam * al.float()

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

    def guard_lambdas(self, prompts: list[str], policy: str) -> list[float]:
        """λ the policy picks for each prompt (guard scores cached per prompt set)."""
        from dsa.guards import classify

        # keyed by the base and the guards' weights and calibration: a retrained or recalibrated
        # guard never reuses stale scores
        path = _cache_file("guard_scores", self.base.fingerprint, self.bank)
        cache = _read_cache(path)
        todo = [p for p in prompts if _h(p) not in cache]
        for i in tqdm(range(0, len(todo), 32), desc="guard scores", disable=not todo):
            chunk = todo[i:i + 32]
            for p, r in zip(chunk, classify(self.base, self.bank, chunk), strict=True):
                cache[_h(p)] = r["scores"]
            _write_cache(path, cache)
        sm = SafetyModel(self.base, self.bank, None, policy, **POLICY_KWARGS[policy])
        scores = [cache[_h(p)] for p in prompts]
        heads = list(scores[0])
        return sm.policy_lambda({h: torch.tensor([s[h] for s in scores]) for h in heads}).tolist()

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
        if harmful is not None:
            metrics["strongreject_harmful"] = harmful
            n["strongreject_harmful"] = len(sets["strongreject"])
        extra = {"max_new_tokens": cfg.max_new_tokens, "via_runtime": alignment == "auto",
                 "weights_sha256": self.weights_sha256(name), "config_key": self.artifacts_key(name)}
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

    # ---- log-likelihood stage -------------------------------------------------------------
    def mmlu_prompts(self) -> tuple[list[str], list[int]]:
        from dsa.data import load_source

        rows = sorted((r for r in load_source("mmlu") if r.split == "eval"), key=lambda r: _h(r.id))[: self.cfg.n_mmlu]
        prompts = []
        for r in rows:
            body = "\n".join(f"{L}. {c}" for L, c in zip(LETTERS, r.meta["choices"], strict=True))
            prompts.append(f"{r.main_text}\n{body}\nAnswer with the letter of the correct choice.")
        return prompts, [int(r.meta["answer"]) for r in rows]

    def _letter_logits(self, models: dict[str, Callable], prompts: list[str], bs: int = 16) -> dict[str, torch.Tensor]:
        """{key: [n, 4]} next-token logits of the four letters after the chat prompt, per model fn."""
        tok = self.base.tokenizer
        letter_ids = [tok.convert_tokens_to_ids(x) for x in LETTERS]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: dict[str, torch.Tensor] = {}
        sm = SafetyModel(self.base)
        for i in tqdm(range(0, len(order), bs), desc="mmlu"):
            idx = order[i:i + bs]
            enc = sm.encode([prompts[j] for j in idx])
            for key, fn in models.items():
                for k2, logits in fn(enc).items():  # logits [b, vocab] at the last position
                    full = out.setdefault(f"{key}{k2}", torch.zeros(len(prompts), 4))
                    full[idx] = logits[:, letter_ids].float().cpu()
        return out

    def run_mmlu(self, names: list[str]) -> None:
        prompts, answers = self.mmlu_prompts()
        gold = torch.tensor(answers)
        base, cfg = self.base, self.cfg

        def pos_of(enc):
            return (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)

        need_adapter = any(n.startswith(("dsa_adapter", "context")) for n in names) and cfg.dsa_adapter
        need_guard = any(n.startswith("context") for n in names)

        def base_and_adapter(enc):
            self.unpatch()
            taps = ([self.adapter.input_tap] if need_adapter else []) + (list(self.bank.taps) if need_guard else [])
            with torch.inference_mode(), record_taps(base.model, taps, spec=base.spec) as cache:
                out = base.model(**enc, position_ids=pos_of(enc), logits_to_keep=1)
                res = {"base": out.logits[:, -1]}
                if need_adapter:
                    res["aligned"] = self.adapter(cache[self.adapter.input_tap], enc["attention_mask"], pos_of(enc),
                                                  logits_to_keep=1)[0][:, -1]
                if need_guard:
                    s = SafetyModel(base, self.bank).policy_score(self.bank.score(cache, enc["attention_mask"]))
                    res["guard"] = s[:, None].expand(-1, out.logits.shape[-1])
            return res

        models = {"": base_and_adapter} if any(n.startswith(("base", "dsa_adapter", "context")) for n in names) else {}
        for n in names:
            if n.startswith("dsa_dpo"):
                models[n] = self._dpo_fn(float(n.split("@")[1]))
            if n.startswith("lora_patch"):
                models[n] = self._lora_fn(float(n.split("@")[1]))
            if n == "full_ft":
                models[n] = lambda enc: {"": self.full_ft().model(**enc, position_ids=pos_of(enc),
                                                                  logits_to_keep=1).logits[:, -1]}
        with torch.inference_mode():
            ll = self._letter_logits(models, prompts)
        acc = lambda x: float((x.argmax(-1) == gold).float().mean())  # noqa: E731
        for n in names:
            kind, _, arg = n.partition("@")
            if kind == "base":
                a = acc(ll["base"])
            elif kind in ("lora_patch", "full_ft", "dsa_dpo"):
                a = acc(ll[n])
            elif kind == "dsa_adapter":
                lam = float(arg)
                a = acc((1 - lam) * ll["base"] + lam * ll["aligned"])
            else:
                sm = SafetyModel(self.base, self.bank, None, arg, **POLICY_KWARGS[arg])
                lam = sm.policy(ll["guard"][:, 0])[:, None]
                a = acc(torch.where(lam == 0, ll["base"], (1 - lam) * ll["base"] + lam * ll["aligned"]))
                update_part(n, {}, {}, {"mmlu_share_aligned": float((lam > 0).float().mean()),
                                        "weights_sha256": self.weights_sha256(n)})
            update_part(n, {"mmlu_acc": a}, {"mmlu_acc": len(prompts)}, {"weights_sha256": self.weights_sha256(n)})
        if need_adapter:
            for lam in cfg.loglik_lambdas:
                update_part(f"dsa_adapter@{lam:g}", {"mmlu_acc": acc((1 - lam) * ll["base"] + lam * ll["aligned"])},
                            {"mmlu_acc": len(prompts)}, {"loglik_only": f"dsa_adapter@{lam:g}" not in names,
                                                         "weights_sha256": self.weights_sha256(f"dsa_adapter@{lam:g}")})

    def _dpo_fn(self, lam: float) -> Callable:
        return lambda enc: {"": self._dpo_logits(enc, lam, logits_to_keep=1)[:, -1]}

    def _lora_fn(self, alpha: float) -> Callable:
        def fn(enc) -> dict[str, torch.Tensor]:
            self.patch().set_strength(alpha)
            pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            return {"": self.base.model(**enc, position_ids=pos, logits_to_keep=1).logits[:, -1]}

        return fn

    def run_reference(self, names: list[str]) -> None:
        """AlpacaEval reference answers: token log-likelihood ratio and KL to the base."""

        cfg, base = self.cfg, self.base
        rows = reference_rows(cfg.n_ref)
        prompts = [r.main_text for r in rows]
        tok = base.tokenizer
        refs = [tok.decode(tok(r.response or r.meta.get("output", ""), add_special_tokens=False)["input_ids"][: cfg.ref_tokens])
                for r in rows]
        lam_rows = {}
        for n in names:
            if n.startswith("context"):
                lam_rows[n] = torch.tensor(self.guard_lambdas(prompts, n.split("@")[1]))
        dsa_lams = sorted({float(n.split("@")[1]) for n in names if n.startswith("dsa_adapter")}
                          | set(cfg.loglik_lambdas)) \
            if cfg.dsa_adapter and any(n.startswith(("dsa_adapter", "context")) for n in names) else []
        sums: dict[str, list[float]] = {}  # name -> [logp sum, kl sum, n tokens]

        def add(key, logits, ref_logits, b):
            lp = torch.log_softmax(logits.float(), -1)
            lq = torch.log_softmax(ref_logits.float(), -1)
            tok_lp = lp.gather(-1, b.labels[b.sel][:, None]).squeeze(-1)
            kl = (lq.exp() * (lq - lp)).sum(-1)
            s = sums.setdefault(key, [0.0, 0.0, 0])
            s[0] += float(tok_lp.sum())
            s[1] += float(kl.sum())
            s[2] += int(tok_lp.numel())

        bs = 8
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(refs[i]))
        with torch.inference_mode():
            for i in tqdm(range(0, len(order), bs), desc="reference loglik"):
                idx = order[i:i + bs]
                b = encode_pairs(base, [prompts[j] for j in idx], [refs[j] for j in idx], max_len=224)
                self.unpatch()
                taps = [self.adapter.input_tap] if dsa_lams or lam_rows else []
                with record_taps(base.model, taps, spec=base.spec) if taps else nullcontext({}) as cache:
                    out = base.model(input_ids=b.ids, attention_mask=b.mask)
                bl = out.logits[b.sel]  # [n_sel, vocab]
                add("base", bl, bl, b)
                if taps:
                    al = self.adapter(cache[self.adapter.input_tap], b.mask)[0][b.sel]
                    for lam in dsa_lams:
                        add(f"dsa_adapter@{lam:g}", (1 - lam) * bl.float() + lam * al.float(), bl, b)
                    rows_of = b.sel.nonzero()[:, 0]
                    for n, lr in lam_rows.items():
                        lam = lr[idx][rows_of][:, None]
                        add(n, torch.where(lam == 0, bl.float(), (1 - lam) * bl.float() + lam * al.float()), bl, b)
                for n in names:
                    if n.startswith("lora_patch"):
                        self.patch().set_strength(float(n.split("@")[1]))
                        add(n, base.model(input_ids=b.ids, attention_mask=b.mask).logits[b.sel], bl, b)
                    elif n == "full_ft":
                        add(n, self.full_ft().model(input_ids=b.ids, attention_mask=b.mask).logits[b.sel], bl, b)
                    elif n.startswith("dsa_dpo"):
                        enc = {"input_ids": b.ids, "attention_mask": b.mask}
                        add(n, self._dpo_logits(enc, float(n.split("@")[1]))[b.sel], bl, b)
        base_mean = sums["base"][0] / sums["base"][2]
        for key, (lp, kl, n_tok) in sums.items():
            update_part(key, {"ref_loglik_ratio": math.exp(lp / n_tok - base_mean), "ref_loglik": lp / n_tok,
                              "kl_to_base": kl / n_tok}, {"ref_loglik_ratio": len(prompts), "ref_tokens": n_tok},
                        {"weights_sha256": self.weights_sha256(key)})


def _generator(sm: SafetyModel, alignment, max_new_tokens: int) -> Callable:
    def gen(prompts: list[str]) -> list:
        return sm.generate(prompts, alignment=alignment, max_new_tokens=max_new_tokens)

    return gen


def _mean(xs) -> float:
    xs = list(xs)
    return float(sum(map(float, xs)) / len(xs)) if xs else float("nan")
