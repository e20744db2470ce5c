"""The stop rule of a streaming response guard, calibrated on the prefixes the runtime reads.

A response head is trained and thresholded on whole answers, but `SafetyModel.decode_step` reads it
after every decoded token. A safe answer's prefixes are not whole answers ("Hello" after a refused
request reads like the request), and the maximum of ~100 prefix scores crosses a whole-answer
threshold far more often than the last one does. So the stop rule is fitted to what the runtime
reads: each labelled answer teacher-forced after its prompt (the base is causal, so its states
equal those of decoding it), the head's state started on the prompt (`GuardBank.stream_state`)
and updated once per response token, exactly as in `decode_step`.

    answers = read_answers(base, bank, guard_task("response_harm").val)
    answers += read_answers(base, bank, base_answers(base, benign_prompts("val", 300)), group="base answers")
    rule, point, grid = calibrate(answers, "response_harm/unsafe", target_fpr=0.03)

The safe answers of a guard task are not what users get: Do-Not-Answer's are mostly careful replies
to harmful questions. So the rule is also held to the target on the base's own answers to benign
validation prompts (`base_answers`): every group of safe answers separately.

A `StreamRule` stops an answer at response token n (1-based) once the score has been >= `threshold`
for `debounce` consecutive tokens, all at n >= `min_tokens`; it is stored per head in the adapter
(`config["stream"]`, see `GuardAdapter`) and `SafetyModel` applies it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from dsa.data.records import Record
from dsa.guards.calibrate import threshold_for_fpr

# The grid searched by `calibrate`: tokens before the first possible stop, and consecutive flags.
MIN_TOKENS = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48)
DEBOUNCES = (1, 2, 3, 4, 6, 8)


@dataclass(frozen=True)
class StreamRule:
    """When a streaming head stops an answer: `debounce` consecutive scores >= `threshold`, all
    at response tokens >= `min_tokens` (1-based)."""

    threshold: float
    min_tokens: int = 1
    debounce: int = 1

    def as_dict(self) -> dict:
        return asdict(self)


def stream_rules(bank) -> dict[str, StreamRule]:
    """{head: stop rule} of a response bank: its stored rules (`GuardBank.stream_rules`), or, for
    a bank that stores none, each head's whole-answer threshold at every token."""
    rules = getattr(bank, "stream_rules", None)
    return dict(rules) if rules is not None else {h: StreamRule(t) for h, t in bank.thresholds.items()}


def uncalibrated_heads(bank) -> list[str]:
    """The heads of `bank` read while streaming without a stop rule calibrated on prefixes."""
    adapters = getattr(bank, "adapters", None)
    if adapters is None:
        return list(bank.heads)
    return [q for a in adapters if not a.stream for q in a.qualified]


def first_stop(scores: Sequence[float], rule: StreamRule) -> int | None:
    """The response token count (1-based) at which `rule` stops an answer scored `scores` (one
    score per response token), or None when it runs to its end."""
    run = 0
    for n, s in enumerate(scores, start=1):
        run = run + 1 if n >= rule.min_tokens and s >= rule.threshold else 0
        if run >= rule.debounce:
            return n
    return None


def stop_statistic(scores: Sequence[float], min_tokens: int, debounce: int) -> float:
    """The largest threshold at which (min_tokens, debounce) still stops the answer: the best
    run-of-`debounce` minimum over tokens >= `min_tokens` (-inf when the answer is too short)."""
    s = np.asarray(scores[max(0, min_tokens - 1):], dtype=float)
    if len(s) < debounce:
        return -math.inf
    windows = np.lib.stride_tricks.sliding_window_view(s, debounce)  # [n - k + 1, k]
    return float(windows.min(1).max())


def operating_point(answers: list[dict], head: str, rule: StreamRule) -> dict:
    """Detection on harmful answers, tokens shown up to the stop, and false stops on safe ones."""
    harmful = [a for a in answers if a["labels"][head] == 1]
    safe = [a for a in answers if a["labels"][head] == 0]
    stops = [first_stop(a["scores"][head], rule) for a in harmful]
    hit = [s for s in stops if s is not None]
    frac = [s / a["n"] for s, a in zip(stops, harmful, strict=True) if s is not None]
    stopped = [first_stop(a["scores"][head], rule) is not None for a in safe]
    groups = sorted({a.get("group", "") for a in safe})
    by_group = {g: round(sum(x for x, a in zip(stopped, safe, strict=True) if a.get("group", "") == g)
                         / sum(a.get("group", "") == g for a in safe), 4) for g in groups}
    return {"detection_rate": round(len(hit) / max(1, len(harmful)), 4),
            "false_stop_rate": round(sum(stopped) / max(1, len(safe)), 4),
            **({"false_stop_rate_by_group": by_group} if len(groups) > 1 else {}),
            "tokens_to_stop_median": statistics.median(hit) if hit else None,
            "tokens_to_stop_mean": round(statistics.mean(hit), 2) if hit else None,
            "fraction_of_answer_at_stop_median": round(statistics.median(frac), 3) if frac else None,
            "harmful": len(harmful), "safe": len(safe)}


def calibrate(answers: list[dict], head: str, target_fpr: float = 0.03, min_tokens: Sequence[int] = MIN_TOKENS,
              debounces: Sequence[int] = DEBOUNCES) -> tuple[StreamRule, dict, list[dict]]:
    """The stop rule that stops the most harmful `answers` while stopping at most `target_fpr` of
    the safe ones of every group (an answer's "group", "" if none): for every (min_tokens,
    debounce) of the grid, the smallest threshold meeting the target in each group
    (`threshold_for_fpr` over its safe answers' `stop_statistic`); then the most detections, ties
    broken by fewer tokens shown before the stop, then the smaller grid values.

    Returns:
        (rule, its operating point on `answers`, every grid point as a dict).
    """
    answers = [a for a in answers if a["labels"][head] is not None]
    safe_groups: dict[str, list[dict]] = {}
    for a in answers:
        if a["labels"][head] == 0:
            safe_groups.setdefault(a.get("group", ""), []).append(a)
    if not safe_groups:
        raise ValueError(f"calibrating a stop rule for {head} needs safe answers (label 0)")
    grid = []
    for m in min_tokens:
        for k in debounces:
            thr = 0.0
            for group in safe_groups.values():
                stat = [stop_statistic(a["scores"][head], m, k) for a in group]
                finite = [s if math.isfinite(s) else -1.0 for s in stat]  # too short to stop: never stops
                thr = max(thr, threshold_for_fpr(finite, [0] * len(finite), target_fpr))
            rule = StreamRule(threshold=thr, min_tokens=m, debounce=k)
            grid.append(rule.as_dict() | operating_point(answers, head, rule))

    def key(g: dict):
        return (-g["detection_rate"], g["tokens_to_stop_median"] or math.inf, g["min_tokens"], g["debounce"])

    best = min(grid, key=key)
    rule = StreamRule(best["threshold"], best["min_tokens"], best["debounce"])
    return rule, operating_point(answers, head, rule), grid


def read_answers(base, bank, records, max_response_tokens: int = 256, batch_size: int = 1,
                 progress: Callable[[int], None] | None = None, group: str = "") -> list[dict]:
    """Every head's score after each response token of each labelled (prompt, response) record,
    read as `SafetyModel.decode_step` reads a decoded answer.

    The prompt is rendered and tokenised as the runtime's prefill does it (`render_input` with the
    generation prompt), left-padded in batches; the response (at most `max_response_tokens`
    tokens) follows it, teacher-forced. `bank.stream_state` starts on the prompt columns and takes
    one `update` per response column.

    Returns:
        [{"labels": {head: 0 | 1 | None}, "n": response tokens, "scores": {head: [n floats]},
        "group": `group`}];
        records without a response or any label skipped. A head's label is the record's
        `labels[name]` where it has one (several-head tasks), else its `label`.
    """
    from dsa.features.text import encode_inputs
    from dsa.taps import run_with_taps

    tok = base.tokenizer
    rows = []
    for r in records:
        labels = {q: r.labels.get(q.split("/", 1)[1], r.label) for q in bank.heads}
        if all(v is None for v in labels.values()) or not r.response:
            continue
        resp = tok(r.response, add_special_tokens=False)["input_ids"][:max_response_tokens]
        if resp:
            rows.append((labels, encode_inputs(base, [r.prompt], None, add_generation_prompt=True)[0], resp))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out = []
    for b in range(0, len(rows), batch_size):
        part = rows[b:b + batch_size]
        width_p = max(len(p) for _, p, _ in part)
        width_r = max(len(x) for _, _, x in part)
        ids = torch.full((len(part), width_p + width_r), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (_, p, x) in enumerate(part):  # [pad.. prompt | response ..pad]: the responses start together
            ids[i, width_p - len(p):width_p + len(x)] = torch.tensor(p + x)
            mask[i, width_p - len(p):width_p + len(x)] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        dev = base.device
        with torch.inference_mode():
            _, cache = run_with_taps(base.model, {"input_ids": ids.to(dev), "attention_mask": mask.to(dev),
                                                  "position_ids": pos.to(dev)},
                                     bank.taps, spec=base.spec, need_output=False)
            state = bank.stream_state({t: v[:, :width_p] for t, v in cache.items()}, mask[:, :width_p].to(dev))
            scores = {h: [] for h in bank.heads}
            for j in range(width_p, width_p + width_r):  # a row past its end reads padding: cut below
                got = state.update({t: v[:, j:j + 1] for t, v in cache.items()})
                for h in bank.heads:
                    scores[h].append(got[h].float().cpu())
        for i, (labels, _, x) in enumerate(part):
            out.append({"labels": labels, "n": len(x), "group": group,
                        "scores": {h: [float(s[i]) for s in scores[h][:len(x)]] for h in bank.heads}})
        if progress is not None:
            progress(len(part))
    return out


def base_answers(base, prompts: Sequence[str], max_new_tokens: int = 128, batch_size: int = 32,
                 progress: Callable[[int], None] | None = None) -> list[Record]:
    """The base's own greedy answers (alignment 0, no guard) to `prompts`, as safe (label 0)
    prompt/response records: the everyday answers a response guard must let finish. Kept in the
    cache (`$DSA_CACHE/base_answers/`) by base fingerprint, prompts and budget (not the batch size,
    which changes only the rounding of padded rows): generating them is the slow part."""
    import hashlib
    import json

    from dsa.adapter_io import atomic_write_text
    from dsa.base import cache_dir
    from dsa.runtime import SafetyModel

    key = hashlib.sha256(json.dumps([base.fingerprint, list(prompts), max_new_tokens]).encode())
    path = cache_dir() / "base_answers" / f"{key.hexdigest()[:24]}.json"
    if path.exists():
        texts = json.loads(path.read_text())
        if progress is not None:
            progress(len(texts))
    else:
        sm, texts = SafetyModel(base), []
        for k in range(0, len(prompts), batch_size):
            part = list(prompts[k:k + batch_size])
            texts += [r.text for r in sm.generate(part, alignment=0.0, max_new_tokens=max_new_tokens)]
            if progress is not None:
                progress(len(part))
        atomic_write_text(path, json.dumps(texts))
    return [Record(id=f"base_answer:{i}", source="base_answers", prompt=p, response=t, label=0)
            for i, (p, t) in enumerate(zip(prompts, texts, strict=True))]


def benign_prompts(split: str, n: int, seed: int = 0) -> list[str]:
    """`n` benign prompts of a prompt_safety split (Alpaca instructions, PHTest harmless, CoCoNot
    preference, WildChat and OpenAI-moderation clean prompts: everyday and edgy-but-benign; not the
    wrapped training copies), in a fixed seeded order; deduplicated against the eval-only sets like
    every training split."""
    import hashlib

    from dsa.data.tasks import guard_task

    rows = [r for r in guard_task("prompt_safety").split(split) if r.label == 0 and r.prompt and "frame" not in r.meta]
    rows.sort(key=lambda r: hashlib.sha256(f"{seed}:{r.id}".encode()).hexdigest())
    return [r.prompt for r in rows[:n]]


def calibrate_adapter(base, path, records, target_fpr: float = 0.03, max_response_tokens: int = 256,
                      source: str = "", benign: Sequence[Record] = (), benign_source: str = "",
                      progress: Callable[[int], None] | None = None) -> dict:
    """Calibrate every head of the response guard at `path` on labelled (prompt, response)
    `records` (a validation split: never the test split), and on `benign` safe records (the
    base's own answers to benign validation prompts, `base_answers`) held to the target apart;
    store the rules in the adapter (`config["stream"]`, covered by its checksum). Returns the
    stored dict: {"rules": [per head], "target_fpr", "source", "benign_source", "max_response_tokens",
    "answers", "val": {head: operating point}}."""
    from dsa.adapter_io import update_adapter_config
    from dsa.guards.bank import KIND, GuardAdapter, GuardBank

    adapter = GuardAdapter.load(path, base.fingerprint, base.d_model)
    if adapter.mode != "prompt_response":
        raise ValueError(f"{path}: a {adapter.mode!r} guard reads prompts; only a prompt_response guard "
                         "reads answers while they are decoded")
    adapter.stream = None  # read as stored; an earlier rule does not change the scores
    bank = GuardBank([adapter])
    answers = read_answers(base, bank, records, max_response_tokens, progress=progress, group=source)
    answers += read_answers(base, bank, benign, max_response_tokens, progress=progress, group=benign_source)
    rules, val = [], {}
    for head in bank.heads:
        rule, point, _ = calibrate(answers, head, target_fpr)
        rules.append(rule.as_dict())
        val[head] = point
    stream = {"rules": rules, "target_fpr": target_fpr, "source": source, "benign_source": benign_source,
              "max_response_tokens": max_response_tokens, "answers": len(answers), "val": val}
    update_adapter_config(path, {"stream": stream}, kind=KIND)
    return stream
