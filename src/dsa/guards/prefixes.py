"""Answer prefixes as training rows of a response guard (`GuardTrainConfig.prefix_cuts`).

A response guard is read after every decoded token (`dsa.guards.streaming`), but a head trained
on whole answers only has never seen an answer's first tokens: it scores a harmful answer's start
("Here is a list of offensive language ...") near zero and stops it, if at all, a hundred tokens
later. The base is causal, so the states at token t of a whole answer are the states of its prefix
ending at t; one forward of each (prompt, answer) gives the pooled features the runtime reads at
every cut (`PLRStream`: the mean over prompt and answer tokens so far, and the state at t), with
no extra base pass per prefix.

    views, labels = prefix_views(base, records, cuts_per_answer)    # rows [sum of cuts, L, d]
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence

import torch

from dsa.data.records import Record
from dsa.features.store import FeatureViews
from dsa.guards.streaming import encode_answer


def answer_cuts(n: int, label: int, cuts: Sequence[int], n_random: int, min_harmful: int, key: str,
                seed: int = 0) -> list[int]:
    """Response-token counts at which an answer of `n` tokens gets a prefix row: each of `cuts`
    shorter than the answer, and `n_random` seeded uniform cuts in [1, n); a harmful answer
    (`label` 1) only from `min_harmful` tokens on (a very short start can be any answer's)."""
    rng = random.Random(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest())
    out = {c for c in cuts if 1 <= c < n}
    if n > 1:
        out |= {rng.randrange(1, n) for _ in range(n_random)}
    if label == 1:
        out = {c for c in out if c >= min_harmful}
    return sorted(out)


def _forward_pooled(base, prompt: list[int], resp: list[int], cuts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (prompt + answer tokens up to the cut) and last-token states of every layer at each
    cut: ([cuts, L, d], [cuts, L, d]) float32, from one forward of prompt + answer."""
    from dsa.taps import run_with_taps

    taps = [f"layers.{i}.resid_post" for i in range(base.n_layers)]
    ids = torch.tensor([prompt + resp[:max(cuts)]], device=base.device)
    with torch.inference_mode():
        _, cache = run_with_taps(base.model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                                 taps, spec=base.spec, need_output=False)
    h = torch.stack([cache[t][0] for t in taps]).float().cpu()  # [L, s, d]
    ends = torch.tensor([len(prompt) + c - 1 for c in cuts])  # the cut's last token
    run = h.cumsum(1)[:, ends]  # [L, cuts, d]
    mean = run / (ends + 1).float()[None, :, None]
    return mean.transpose(0, 1), h[:, ends].transpose(0, 1)


def _answer_key(base, r: Record, max_response_tokens: int) -> str:
    return hashlib.sha256(json.dumps([base.fingerprint, max_response_tokens, r.prompt, r.response])
                          .encode()).hexdigest()[:20]


def prefix_views(base, records: Sequence[Record], cuts: Sequence[Sequence[int]], max_response_tokens: int = 256,
                 cache: bool = True) -> FeatureViews:
    """Pooled views of the answer prefixes of `records` at `cuts[i]` response tokens each (rows in
    that order), as `FeatureViews` with bf16 mean / last [rows, L, d] (the store keeps bf16 too)
    and no per-token view. Rows are kept under `$DSA_CACHE/prefix_features/<fingerprint>/` by
    (prompt, answer, cut): another choice of cuts reads the rows it shares with an earlier one and
    runs the base once per answer with a new cut."""
    from safetensors.torch import load_file

    from dsa.adapter_io import atomic_save_tensors, atomic_write_text
    from dsa.base import cache_dir

    d = cache_dir() / "prefix_features" / base.fingerprint
    keys = [[f"{_answer_key(base, r, max_response_tokens)}:{c}" for c in cs]
            for r, cs in zip(records, cuts, strict=True)]
    wanted = {k for ks in keys for k in ks}
    have: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for side in sorted(d.glob("rows-*.json")) if cache else ():
        index = json.loads(side.read_text())
        if wanted.isdisjoint(index):
            continue
        t = load_file(str(side.with_suffix(".safetensors")))
        have.update({k: (t["mean"][i], t["last"][i]) for i, k in enumerate(index) if k in wanted})
    new_keys, means, lasts = [], [], []
    for r, cs, ks in zip(records, cuts, keys, strict=True):
        todo = [(c, k) for c, k in zip(cs, ks, strict=True) if k not in have]
        if not todo:
            continue
        prompt, resp = encode_answer(base, r, max_response_tokens)
        m, la = _forward_pooled(base, prompt, resp, [min(c, len(resp)) for c, _ in todo])
        for j, (_, k) in enumerate(todo):
            have[k] = (m[j].to(torch.bfloat16), la[j].to(torch.bfloat16))
            new_keys.append(k)
        means.append(m.to(torch.bfloat16))
        lasts.append(la.to(torch.bfloat16))
    if cache and new_keys:
        d.mkdir(parents=True, exist_ok=True)
        name = d / f"rows-{hashlib.sha256(''.join(new_keys).encode()).hexdigest()[:20]}"
        atomic_save_tensors({"mean": torch.cat(means), "last": torch.cat(lasts)}, name.with_suffix(".safetensors"))
        atomic_write_text(name.with_suffix(".json"), json.dumps(new_keys))  # last: marks the rows complete
    flat = [k for ks in keys for k in ks]
    n = len(flat)
    empty = torch.zeros(0, base.n_layers, base.d_model, dtype=torch.bfloat16)
    mean = torch.stack([have[k][0] for k in flat]) if flat else empty
    last = torch.stack([have[k][1] for k in flat]) if flat else empty
    return FeatureViews(mean, last, torch.zeros(0, 1, base.d_model, dtype=torch.bfloat16),
                        torch.zeros(n, dtype=torch.long), torch.zeros(n + 1, dtype=torch.long), ())


def record_cuts(base, split, cfg) -> list[list[int]]:
    """Per record of `split` (a `SplitData` with its records), the cuts `cfg` asks for (`prefix_cuts`,
    `prefix_random`, `prefix_min_harmful`, `prefix_max_tokens`, `seed`); none for a record without a
    prompt, a response or a label."""
    if split.records is None:
        raise ValueError("prefix rows need the split's records (prompt and response)")
    tok = base.tokenizer
    cuts = []
    for r, y in zip(split.records, split.labels, strict=True):
        n = len(tok(r.response or "", add_special_tokens=False)["input_ids"][:cfg.prefix_max_tokens])
        cuts.append(answer_cuts(n, int(y[0]), cfg.prefix_cuts, cfg.prefix_random, cfg.prefix_min_harmful,
                                r.id, cfg.seed) if r.prompt and r.response and not torch.isnan(y).any() else [])
    return cuts


def with_prefixes(base, split, cfg) -> tuple[object, dict]:
    """`split` (a `SplitData` with its records) plus one row per answer prefix that `cfg` asks for
    (`prefix_cuts`, `prefix_random`, `prefix_min_harmful`), labelled as its whole answer.

    Returns:
        (the grown SplitData, {"rows": prefix rows, "harmful": of them harmful}).
    """
    from dsa.guards.featurize import SplitData

    cuts = record_cuts(base, split, cfg)
    labels = [y for y, cs in zip(split.labels, cuts, strict=True) for _ in cs]
    views = prefix_views(base, split.records, cuts, cfg.prefix_max_tokens)
    f = split.feats
    feats = FeatureViews(torch.cat([f.mean.to(torch.bfloat16), views.mean]),
                         torch.cat([f.last.to(torch.bfloat16), views.last]),
                         f.tokens, torch.cat([f.ntok, views.ntok]),
                         torch.cat([f.offsets, f.offsets[-1:].expand(views.ntok.shape[0])]), f.ladder_layers)
    y = torch.stack(labels) if labels else split.labels[:0]
    grown = SplitData(split.texts + [f"{t} [prefix]" for t, c in zip(split.texts, cuts, strict=True) for _ in c],
                      torch.cat([split.labels, y]),
                      split.groups + [g for g, c in zip(split.groups, cuts, strict=True) for _ in c], feats,
                      split.records)
    return grown, {"rows": len(labels), "harmful": int(sum(float(v[0]) == 1 for v in labels))}
