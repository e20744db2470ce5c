"""`extract_features`: pooled or per-token hidden states of texts at any taps, cached on disk.

Requests the feature store can answer (pooling "mean" or "last" at `layers.{i}.resid_post` taps)
are read from and written to the store (`dsa.features.store`, one forward per text for every
view). Anything else (other taps such as `mlp_out` or `final_norm`, or pooling="tokens" over whole
texts) is cached beside it, in the same root, keyed by base fingerprint + pooling + max length
(the directory) and by tap and text hash (inside the shards). Shards are safetensors files written
atomically every `shard_size` texts: a killed run resumes from the last complete shard.

    root/<fingerprint>/<pooling>-len<max_length>/shard-<first hash>-<n>.safetensors
        tensors  "<tap>" [n, d] (pooled) or [tokens, d] with "offsets" [n+1] (pooling="tokens")
        metadata {"hashes": [...], "taps": [...]}
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from dsa.adapter_io import atomic_save_tensors
from dsa.base import Base
from dsa.features.store import LADDER_LAYERS, WINDOW, default_root, extract_views
from dsa.features.text import length_buckets, pad_right, text_hash, tokenize
from dsa.taps import record_taps, resolve_taps

POOLINGS = ("mean", "last", "tokens")


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool [batch, seq, d] hidden states over the non-padding positions of `mask` [batch, seq].

    Works for left and right padding. Returns [batch, d] in float32.
    """
    if how == "mean":
        h = hidden.float()
        m = mask.to(h.dtype).unsqueeze(-1)  # [batch, seq, 1]
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    if how == "last":
        # index of the last real token in each row, whatever the padding side; up-cast that row only
        pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask.bool(), pos, -1).max(1).values  # [batch]
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
    raise ValueError(f"unknown pooling {how!r}: expected one of {POOLINGS}")


@dataclass
class Features:
    """Extracted features, aligned with the input texts.

    `values[tap]` is [n_texts, d] for pooled features, or [total_tokens, d] for pooling="tokens",
    where text i owns rows offsets[i]:offsets[i+1].
    """

    taps: list[str]
    pooling: str
    values: dict[str, torch.Tensor]
    offsets: torch.Tensor | None = None
    stats: dict = field(default_factory=dict)

    def tokens(self, tap: str, i: int) -> torch.Tensor:
        assert self.offsets is not None, "per-token access needs pooling='tokens'"
        return self.values[tap][self.offsets[i] : self.offsets[i + 1]]


class FeatureCache:
    """The shard directory for one (base, pooling, max_length)."""

    def __init__(self, root: Path, fingerprint: str, pooling: str, max_length: int):
        self.dir = Path(root) / fingerprint / f"{pooling}-len{max_length}"
        self.pooling = pooling
        # text hash -> tap -> (shard path, row)
        self.index: dict[str, dict[str, tuple[Path, int]]] = {}
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            self._index_shard(shard)

    def _index_shard(self, shard: Path) -> None:
        with safe_open(str(shard), "pt") as f:
            meta = f.metadata()
        for row, h in enumerate(json.loads(meta["hashes"])):
            for tap in json.loads(meta["taps"]):
                self.index.setdefault(h, {})[tap] = (shard, row)

    def missing(self, hashes: Sequence[str], taps: Sequence[str]) -> list[int]:
        return [i for i, h in enumerate(hashes) if any(t not in self.index.get(h, {}) for t in taps)]

    def write(self, hashes: list[str], taps: list[str], values: dict[str, list[torch.Tensor]]) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for tap in taps:
            if self.pooling == "tokens":
                tensors[tap] = torch.cat(values[tap])
            else:
                tensors[tap] = torch.stack(values[tap])
        if self.pooling == "tokens":
            lens = torch.tensor([0] + [v.shape[0] for v in values[taps[0]]])
            tensors["offsets"] = lens.cumsum(0)
        shard = self.dir / f"shard-{hashes[0]}-{len(hashes)}.safetensors"
        meta = {"hashes": json.dumps(hashes), "taps": json.dumps(taps)}
        atomic_save_tensors({k: v.to(torch.bfloat16) if v.is_floating_point() else v
                             for k, v in tensors.items()}, shard, metadata=meta)
        self._index_shard(shard)

    def read(self, hashes: Sequence[str], taps: Sequence[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Gather cached features for `hashes` (all must be present) in order."""
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for i, h in enumerate(hashes):
            for tap in taps:
                shard, row = self.index[h][tap]
                by_shard.setdefault(shard, []).append((i, row))
        rows: dict[str, list[torch.Tensor | None]] = {t: [None] * len(hashes) for t in taps}
        for shard, pairs in by_shard.items():
            with safe_open(str(shard), "pt") as f:
                names = set(f.keys())
                offsets = f.get_tensor("offsets") if "offsets" in names else None
                for tap in taps:
                    if tap not in names:
                        continue
                    full = f.get_tensor(tap)
                    for i, row in pairs:
                        if self.index[hashes[i]][tap][0] != shard:
                            continue
                        rows[tap][i] = full[offsets[row]:offsets[row + 1]] if offsets is not None else full[row]
        values: dict[str, torch.Tensor] = {}
        out_offsets = None
        for tap in taps:
            parts = [r.float() for r in rows[tap]]  # type: ignore[union-attr]
            if self.pooling == "tokens":
                values[tap] = torch.cat(parts)
                out_offsets = torch.tensor([0] + [p.shape[0] for p in parts]).cumsum(0)
            else:
                values[tap] = torch.stack(parts)
        return values, out_offsets


def _forward_batches(base: Base, ids: list[list[int]], batches: list[list[int]],
                     taps: list[str], pooling: str) -> Iterator[tuple[list[int], dict[str, list[torch.Tensor]], int]]:
    """Yield (indices, pooled features per tap, real tokens) for each length bucket."""
    pad_id = base.tokenizer.pad_token_id
    for batch in batches:
        input_ids, mask = pad_right([ids[i] for i in batch], pad_id)
        input_ids, mask = input_ids.to(base.device), mask.to(base.device)
        with torch.inference_mode(), record_taps(base.model, taps, spec=base.spec, stop_after_last=True) as cache:
            base.model(input_ids=input_ids, attention_mask=mask, use_cache=False)
        out: dict[str, list[torch.Tensor]] = {}
        for tap in taps:
            if pooling == "tokens":
                h = cache[tap].float().cpu()
                out[tap] = [h[r, : len(ids[i])] for r, i in enumerate(batch)]
            else:
                out[tap] = list(pool(cache[tap], mask, pooling).cpu())
        yield batch, out, int(mask.sum())


def store_layers(taps: Sequence[str], pooling: str) -> list[int] | None:
    """The layers of `taps` when the feature store can serve them with `pooling`, else None."""
    if pooling not in ("mean", "last"):
        return None
    found = [re.fullmatch(r"layers\.(\d+)\.resid_post", t) for t in taps]
    return [int(m[1]) for m in found] if found and all(found) else None


def extract_features(
    base: Base,
    texts: Sequence[str],
    taps: str | Sequence[str],
    pooling: str = "mean",
    *,
    max_length: int = 512,
    batch_tokens: int = 8192,
    max_batch: int = 64,
    shard_size: int = 1024,
    cache: bool = True,
    cache_root: str | Path | None = None,
    progress: bool = True,
) -> Features:
    """Hidden states of `texts` at `taps`, pooled, read from / written to the feature cache.

    Served from the feature store (`dsa.features.store`, shared with guard training): pooling
    "mean" or "last" when every tap is a `layers.{i}.resid_post` (the store keeps both poolings of
    every layer, from one forward of each text, in the store of `max_length` with the default
    window and ladder). The store's mean is the same average as here, its prefix shared across
    texts through the KV cache, so values agree up to float rounding; both are kept in bf16.
    Not served from the store, cached beside it under the same root: any other tap (`embed`,
    `attn_out`, `mlp_out`, `final_norm`), a mix of those with `resid_post`, and pooling="tokens"
    (every token of every text; the store keeps only a last-tokens window of a few layers).
    Either way the texts are tokenized by `dsa.features.text.tokenize` (the shared truncation).

    Args:
        base: the loaded base model.
        texts: already formatted inputs (apply the chat template before, where wanted:
            `dsa.features.text.render_input`).
        taps: tap names or shorthand (see `dsa.taps.resolve_taps`).
        pooling: "mean" (attention-masked), "last" (last real token) or "tokens" (per token).
        max_length: longer texts keep their last `max_length` tokens.
        batch_tokens / max_batch: length-bucketed batching budget.
        shard_size: texts per cache shard (the unit of resume after a kill).
        cache: False computes in memory only (neither the store nor the cache is read or written).
        cache_root: the root of the store and the cache (default `$DSA_CACHE/guard_features`).
    Returns:
        `Features` aligned with `texts`; `stats` holds tokens, seconds and tokens/s of the
        computed part, and "source": "store" or "cache" (or "memory").
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}: expected one of {POOLINGS}")
    tap_names = resolve_taps(taps, base.n_layers)
    layers = store_layers(tap_names, pooling)
    if cache and layers is not None:
        views = extract_views(base, texts, f"features {pooling}", max_length=max_length, window=WINDOW,
                              ladder_layers=LADDER_LAYERS, shard_size=shard_size, batch_tokens=batch_tokens,
                              max_batch=max_batch, root=Path(cache_root) if cache_root else None,
                              progress=progress, tokens=False, layers=layers)
        pooled = views.mean if pooling == "mean" else views.last  # [n, len(layers), d]
        values = {t: pooled[:, k].contiguous() for k, t in enumerate(tap_names)}
        return Features(taps=tap_names, pooling=pooling, values=values, stats={**views.stats, "source": "store"})
    texts = list(texts)
    hashes = [text_hash(t) for t in texts]
    unique = dict.fromkeys(hashes)  # duplicates are computed once
    store = FeatureCache(Path(cache_root) if cache_root else default_root(),
                         base.fingerprint, pooling, max_length) if cache else None
    first_text = {h: t for h, t in zip(reversed(hashes), reversed(texts), strict=True)}
    todo_hashes = list(unique)
    if store is not None:
        todo_hashes = [todo_hashes[i] for i in store.missing(todo_hashes, tap_names)]
    todo_texts = [first_text[h] for h in todo_hashes]

    computed: dict[str, dict[str, torch.Tensor]] = {}  # only used without a cache
    t0 = time.perf_counter()
    n_tokens = 0
    if todo_texts:
        ids = tokenize(base, todo_texts, max_length)
        batches = length_buckets([len(x) for x in ids], batch_tokens, max_batch)
        bar = tqdm(total=sum(len(x) for x in ids), unit="tok", unit_scale=True,
                   desc=f"features {pooling}", disable=not progress)
        pending_h: list[str] = []
        pending_v: dict[str, list[torch.Tensor]] = {t: [] for t in tap_names}
        for batch, feats, ntok in _forward_batches(base, ids, batches, tap_names, pooling):
            n_tokens += ntok
            bar.update(ntok)
            for r, i in enumerate(batch):
                h = todo_hashes[i]
                if store is None:
                    computed[h] = {t: feats[t][r] for t in tap_names}
                    continue
                pending_h.append(h)
                for t in tap_names:
                    pending_v[t].append(feats[t][r])
            if store is not None and len(pending_h) >= shard_size:
                store.write(pending_h, tap_names, pending_v)
                pending_h, pending_v = [], {t: [] for t in tap_names}
        if store is not None and pending_h:
            store.write(pending_h, tap_names, pending_v)
        bar.close()
    seconds = time.perf_counter() - t0
    stats = {"texts": len(texts), "computed": len(todo_texts), "tokens": n_tokens,
             "seconds": seconds, "tokens_per_s": n_tokens / seconds if n_tokens else None,
             "source": "cache" if store is not None else "memory"}

    if store is not None:
        values, offsets = store.read(hashes, tap_names)
    else:
        values, offsets = {}, None
        for t in tap_names:
            parts = [computed[h][t].float() for h in hashes]
            values[t] = torch.cat(parts) if pooling == "tokens" else torch.stack(parts)
        if pooling == "tokens":
            offsets = torch.tensor([0] + [computed[h][tap_names[0]].shape[0] for h in hashes]).cumsum(0)
    return Features(taps=tap_names, pooling=pooling, values=values, offsets=offsets, stats=stats)


def raw_forward_throughput(base: Base, texts: Sequence[str], *, max_length: int = 512,
                           batch_tokens: int = 8192, max_batch: int = 64, progress: bool = True) -> dict:
    """Tokens/s of a plain forward of the base's decoder stack (every layer and the final norm,
    no hooks, no LM head) on the same length-bucketed batches that `extract_features` uses: the
    reference feature extraction must keep up with. The LM head is left out because it would make
    the reference slower and the comparison flattering."""
    trunk = base.model.get_submodule(base.spec.layers.rsplit(".", 1)[0])
    ids = tokenize(base, texts, max_length)
    batches = length_buckets([len(x) for x in ids], batch_tokens, max_batch)
    n_tokens = 0
    t0 = time.perf_counter()
    for batch in tqdm(batches, desc="raw forward", disable=not progress):
        input_ids, mask = pad_right([ids[i] for i in batch], base.tokenizer.pad_token_id)
        with torch.inference_mode():
            trunk(input_ids=input_ids.to(base.device), attention_mask=mask.to(base.device), use_cache=False)
        n_tokens += int(mask.sum())
    seconds = time.perf_counter() - t0
    return {"tokens": n_tokens, "seconds": seconds, "tokens_per_s": n_tokens / seconds}


def compare_throughput(base: Base, texts: Sequence[str], taps: str | Sequence[str], pooling: str = "mean", *,
                       max_length: int = 512, batch_tokens: int = 8192, max_batch: int = 64,
                       progress: bool = True) -> dict:
    """Feature extraction against the raw forward, batch by batch on the same length buckets.

    Each bucket runs both ways back to back, in alternating order, so a machine whose load
    changes during the run slows both sides alike and the ratio stays honest. The extraction
    side is what `extract_features` computes per batch (hooks, early stop, pooling, copy to CPU);
    the raw side is the decoder stack with no hooks (see `raw_forward_throughput`).
    """
    tap_names = resolve_taps(taps, base.n_layers)
    trunk = base.model.get_submodule(base.spec.layers.rsplit(".", 1)[0])
    ids = tokenize(base, texts, max_length)
    batches = length_buckets([len(x) for x in ids], batch_tokens, max_batch)
    t_raw = t_feat = 0.0
    n_tokens = 0
    def timed(fn, *args) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            fn(*args)
        return time.perf_counter() - t0

    def raw(batch: list[int]) -> None:
        input_ids, mask = pad_right([ids[i] for i in batch], base.tokenizer.pad_token_id)
        trunk(input_ids=input_ids.to(base.device), attention_mask=mask.to(base.device), use_cache=False)

    def feat(batch: list[int]) -> None:
        next(_forward_batches(base, ids, [batch], tap_names, pooling))

    for k, batch in enumerate(tqdm(batches, desc="raw vs features", disable=not progress)):
        order = (raw, feat) if k % 2 == 0 else (feat, raw)
        times = {fn: timed(fn, batch) for fn in order}
        t_raw += times[raw]
        t_feat += times[feat]
        n_tokens += sum(len(ids[i]) for i in batch)
    return {"tokens": n_tokens, "raw_seconds": t_raw, "features_seconds": t_feat,
            "raw_tokens_per_s": n_tokens / t_raw, "features_tokens_per_s": n_tokens / t_feat,
            "ratio": t_raw / t_feat}
