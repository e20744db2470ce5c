"""The feature store: every view guard heads and pooled readouts need, from ONE base forward per
text, content-addressed by base fingerprint + text hash.

For each text it keeps the mean- and last-token states of every layer's residual stream, and the
per-token states of a few ladder layers over the last `window` tokens (what RTB and LST read). A
text is extracted once per base and view settings, whatever task or list it belongs to, so adding
rows to a task (or scoring a new eval set that shares prompts) runs the base on the new texts only.

    root/<fingerprint>/store-len<max_length>-w<window>-<ladder>/
        shard-<id>.safetensors   "mean" [n, L, d], "last" [n, L, d], "tokens" [sum(ntok), T, d], "ntok" [n]
        shard-<id>.hashes.json   {"hashes": [text hash of each row]}  (written last: marks the shard complete)

`root` defaults to `$DSA_CACHE/guard_features` (the name predates the merge with
`dsa.features.extract_features`; kept so existing stores stay valid).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from dsa.adapter_io import atomic_save_tensors, atomic_write_text
from dsa.base import Base, cache_dir
from dsa.features.text import length_buckets, text_hash, tokenize
from dsa.kvcache import kv as kv_arg
from dsa.kvcache import returned
from dsa.taps import record_taps, resolve_layers

# per-token taps for RTB/LST, as fractions of depth (dsa.taps.resolve_layer): layers 4, 9, 14, 19,
# 24, 29 of SmolLM2's 30, evenly spread up to the last layer of any other model
LADDER_LAYERS = ("0.14", "0.31", "0.48", "0.66", "0.83", "1.0")
WINDOW = 64  # per-token states kept for the last WINDOW tokens of each text


def default_root() -> Path:
    return cache_dir() / "guard_features"


@dataclass
class FeatureViews:
    """Views of one list of texts from the store (aligned with it)."""

    mean: torch.Tensor  # [n, n_layers, d] float32
    last: torch.Tensor  # [n, n_layers, d]
    tokens: torch.Tensor  # [sum ntok, n_ladder, d] bf16 (last `window` tokens of each text)
    ntok: torch.Tensor  # [n]
    offsets: torch.Tensor  # [n + 1]
    ladder_layers: tuple[int, ...]
    stats: dict = field(default_factory=dict)  # texts, computed, tokens, seconds, tokens_per_s

    def subset(self, idx: Sequence[int]) -> FeatureViews:
        idx_t = torch.as_tensor(list(idx), dtype=torch.long)
        parts = [self.tokens[self.offsets[i]:self.offsets[i + 1]] for i in idx_t.tolist()]
        ntok = self.ntok[idx_t]
        return FeatureViews(self.mean[idx_t], self.last[idx_t],
                            torch.cat(parts) if parts else self.tokens[:0], ntok,
                            torch.cat([torch.zeros(1, dtype=torch.long), ntok.cumsum(0)]), self.ladder_layers)

    def padded_tokens(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded per-token states [b, T, window, d] (float32) and mask [b, window]."""
        w = int(self.ntok[list(idx)].max())
        n_lad, d = self.tokens.shape[1], self.tokens.shape[2]
        out = torch.zeros(len(idx), w, n_lad, d)
        mask = torch.zeros(len(idx), w, dtype=torch.long)
        for r, i in enumerate(idx):
            k = int(self.ntok[i])
            out[r, w - k:] = self.tokens[self.offsets[i]:self.offsets[i + 1]].float()
            mask[r, w - k:] = 1
        return out.transpose(1, 2), mask  # [b, T, w, d]


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(x) for x in seqs) - 1  # every text keeps at least one token of its own
    first = seqs[0]
    for k in range(max(n, 0)):
        if any(x[k] != first[k] for x in seqs):
            return k
    return max(n, 0)


def _units(ids: list[list[int]], groups: Sequence[object] | None, shard_size: int,
           max_length: int) -> list[list[int]]:
    """Work units: indices of texts sharing a group (a prompt, a document), at most shard_size each.
    Left-truncated texts lost their start, so they go to units of their own."""
    by_group: dict[object, list[int]] = {}
    for i in range(len(ids)):
        g = groups[i] if groups is not None else 0
        by_group.setdefault((g, len(ids[i]) >= max_length), []).append(i)
    return [g[k:k + shard_size] for g in by_group.values() for k in range(0, len(g), shard_size)]


def _forward_unit(base: Base, ids: list[list[int]], unit: list[int], taps: list[str], ladder: tuple[int, ...],
                  window: int, batch_tokens: int, max_batch: int):
    """Forward one unit: the shared token prefix once (KV cache), then the suffixes in batches.

    Mathematically the same states as forwarding each full text; it only skips recomputing the
    shared system prompt / document / question for every text.
    """
    seqs = [ids[i] for i in unit]
    p = _common_prefix(seqs) if len(seqs) > 1 else 0
    n_layers, dm = len(taps), base.d_model
    means = torch.zeros(len(unit), n_layers, dm)
    lasts = torch.zeros(len(unit), n_layers, dm)
    toks: list[torch.Tensor] = [None] * len(unit)  # type: ignore[list-item]
    n_tokens = p
    prefix_cache = None
    if p > 0:
        with torch.inference_mode(), record_taps(base.model, taps, spec=base.spec) as cache:
            out = base.model(input_ids=torch.tensor([seqs[0][:p]], device=base.device), use_cache=True)
        prefix_cache = returned(out)
        pre = torch.stack([cache[t][0] for t in taps]).cpu()  # [L, p, d]
        pre_sum = pre.float().sum(1)  # [L, d]
        pre_tok = pre[list(ladder), -window:].transpose(0, 1)  # [<=w, T, d]
    suf = [x[p:] for x in seqs]
    for batch in length_buckets([len(x) for x in suf], batch_tokens, max_batch):
        width = max(len(suf[i]) for i in batch)
        input_ids = torch.full((len(batch), width), base.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for r, i in enumerate(batch):  # right padding: positions stay p, p+1, ... after the prefix
            input_ids[r, :len(suf[i])] = torch.tensor(suf[i])
            mask[r, :len(suf[i])] = 1
        kwargs = {}
        if prefix_cache is not None:
            kv = copy.deepcopy(prefix_cache)
            kv.batch_repeat_interleave(len(batch))
            kwargs = {**kv_arg(base.model, kv), "use_cache": True}
        full_mask = torch.cat([torch.ones(len(batch), p, dtype=torch.long), mask], 1)
        with torch.inference_mode(), record_taps(base.model, taps, spec=base.spec,
                                                 stop_after_last=True) as cache:
            base.model(input_ids=input_ids.to(base.device), attention_mask=full_mask.to(base.device), **kwargs)
        # Layer by layer: one [b, L, s, d] float copy of every layer was hundreds of MB per batch,
        # and allocating it (page faults) cost as much CPU time as the forward itself.
        m = mask.to(torch.float32)  # [b, s]
        rows = torch.arange(len(batch))
        last_pos = mask.sum(1) - 1
        sums = torch.stack([torch.einsum("bs,bsd->bd", m, cache[t].cpu().float()) for t in taps], 1)  # [b, L, d]
        last_b = torch.stack([cache[t][rows, last_pos].cpu().float() for t in taps], 1)  # [b, L, d]
        lad = torch.stack([cache[taps[k]].cpu() for k in ladder], 1)  # [b, T, s, d], ladder layers only
        for r, i in enumerate(batch):
            n = len(suf[i])
            means[i] = ((sums[r] + pre_sum) if p else sums[r]) / (n + p)
            lasts[i] = last_b[r]
            t = lad[r, :, max(0, n - window):n].transpose(0, 1)  # [<=w, T, d]
            if p and t.shape[0] < window:
                t = torch.cat([pre_tok[-(window - t.shape[0]):], t])
            toks[i] = t.to(torch.bfloat16)
        n_tokens += int(mask.sum())
    return means, lasts, toks, n_tokens


def store_dir(base: Base, max_length: int, window: int, ladder: Sequence[int], root: Path | None = None) -> Path:
    """The content-addressed store of one base and one set of views (truncation, window, ladder).

    Every text lives in it once, whatever task or list it came from; adding a text to a task
    extracts that text alone.
    """
    return (Path(root) if root else default_root()) / base.fingerprint / \
        f"store-len{max_length}-w{window}-{'_'.join(map(str, ladder))}"


def _hashes_file(shard: Path) -> Path:
    return shard.with_suffix(".hashes.json")


def store_index(d: Path) -> dict[str, tuple[Path, int]]:
    """{text hash: (shard, row)} of every complete shard (a shard counts once its hash list exists:
    it is written, atomically, after the tensors)."""
    index: dict[str, tuple[Path, int]] = {}
    for hf in sorted(Path(d).glob("shard-*.hashes.json")):
        shard = hf.with_name(hf.name.removesuffix(".hashes.json") + ".safetensors")
        if shard.exists():
            for row, h in enumerate(json.loads(hf.read_text())["hashes"]):
                index.setdefault(h, (shard, row))
    return index


def _write_shard(d: Path, hashes: list[str], tensors: dict[str, torch.Tensor], ladder) -> None:
    name = "shard-" + hashlib.sha256("".join(hashes).encode()).hexdigest()[:20]
    shard = d / f"{name}.safetensors"
    atomic_save_tensors(tensors, shard, metadata={"ladder": json.dumps(list(ladder))})
    atomic_write_text(_hashes_file(shard), json.dumps({"hashes": hashes}))


def extract_views(base: Base, texts: Sequence[str], name: str = "features", *,
                  groups: Sequence[object] | None = None, max_length: int = 256, window: int = WINDOW,
                  ladder_layers: Sequence[int | float | str] = LADDER_LAYERS, shard_size: int = 256,
                  batch_tokens: int = 4096, max_batch: int = 64, root: Path | None = None,
                  progress: bool = True, tokens: bool = True, layers: Sequence[int] | None = None,
                  forward_unit: Callable | None = None) -> FeatureViews:
    """Views of `texts` from the store; texts not in it get one base forward each (shared prefixes
    of a group computed once), written shard by shard (a killed run resumes).

    Args:
        texts: rendered chat texts; each keeps its last `max_length` tokens (`tokenize`).
        name: a label for progress output (the store is shared by every caller).
        groups: optional group key per text (e.g. the document); texts of a group share their
            common token prefix's forward. Without it all texts share the chat-template prefix.
        window: per-token ladder states are kept for the last `window` tokens of each text.
        tokens: False skips loading the per-token states (they are still written).
        layers: load the pooled views of these layers only (default: every layer).
        forward_unit: replaces `_forward_unit` (tests count forwards with it).
    Returns views aligned with `texts`; `stats` counts the computed part.
    """
    texts = list(texts)
    ladder = tuple(resolve_layers(ladder_layers, base.n_layers))
    d = store_dir(base, max_length, window, ladder, root)
    d.mkdir(parents=True, exist_ok=True)
    hashes = [text_hash(t) for t in texts]
    index = store_index(d)
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        if h not in index:
            first.setdefault(h, i)
    todo = sorted(first.values())
    t0, n_tokens = time.perf_counter(), 0
    if todo:
        forward = forward_unit or _forward_unit
        ids = tokenize(base, [texts[i] for i in todo], max_length)
        units = _units(ids, [groups[i] for i in todo] if groups is not None else None, shard_size, max_length)
        taps = [f"layers.{i}.resid_post" for i in range(base.n_layers)]
        done = 0
        if progress:
            print(f"{name}: {len(todo)} of {len(texts)} texts not in the feature store; extracting", flush=True)
        for unit in tqdm(units, desc=name, disable=not progress or len(units) < 20):
            means, lasts, toks, nt = forward(base, ids, unit, taps, ladder, window, batch_tokens, max_batch)
            n_tokens, done = n_tokens + nt, done + len(unit)
            _write_shard(d, [hashes[todo[j]] for j in unit],
                         {"mean": means.to(torch.bfloat16), "last": lasts.to(torch.bfloat16),
                          "tokens": torch.cat(toks), "ntok": torch.tensor([t.shape[0] for t in toks])}, ladder)
            if progress and len(units) < 20:
                print(f"{name}: {done}/{len(todo)} texts, {n_tokens / (time.perf_counter() - t0):.0f} tok/s computed",
                      flush=True)
        index = store_index(d)
    seconds = time.perf_counter() - t0
    views = load_features(index, hashes, ladder, tokens, layers)
    views.stats = {"texts": len(texts), "computed": len(todo), "tokens": n_tokens, "seconds": seconds,
                   "tokens_per_s": n_tokens / seconds if n_tokens else None}
    return views


def rows_by_shard(index: dict[str, tuple[Path, int]], hashes: Sequence[str]) -> dict[Path, list[tuple[int, int]]]:
    """{shard: [(position in `hashes`, row in the shard), ...]}: read each shard once."""
    out: dict[Path, list[tuple[int, int]]] = {}
    for pos, h in enumerate(hashes):
        shard, row = index[h]
        out.setdefault(shard, []).append((pos, row))
    return out


def read_shard(shard: Path, layers: Sequence[int] | None = None, tokens: bool = True):
    """(mean [n, L, d], last [n, L, d], tokens [sum ntok, ladder, d] or None, ntok [n], offsets [n + 1])
    of one shard; `layers` keeps the pooled views of those layers only."""
    with safe_open(str(shard), "pt") as f:
        m, la = f.get_tensor("mean"), f.get_tensor("last")
        if layers is not None:
            m, la = m[:, list(layers)], la[:, list(layers)]
        nt = f.get_tensor("ntok").long()
        tk = f.get_tensor("tokens") if tokens else None
    return m, la, tk, nt, torch.cat([torch.zeros(1, dtype=torch.long), nt.cumsum(0)])


def load_features(index: dict[str, tuple[Path, int]], hashes: Sequence[str], ladder: tuple[int, ...],
                  tokens: bool = True, layers: Sequence[int] | None = None) -> FeatureViews:
    """The rows of `hashes` (in that order) from the store's shards. `tokens=False` skips the
    per-token ladder states (most of the bytes) for heads that read pooled states only; `layers`
    keeps the pooled views of those layers only ([n, len(layers), d])."""
    by_shard = rows_by_shard(index, hashes)
    n = len(hashes)
    mean = last = None
    ntok = torch.zeros(n, dtype=torch.long)
    tok_rows: list[torch.Tensor | None] = [None] * n
    for shard, wanted in by_shard.items():
        m, la, tk, nt, off = read_shard(shard, layers, tokens)
        if mean is None:
            mean = torch.zeros(n, *m.shape[1:])
            last = torch.zeros(n, *la.shape[1:])
        pos = torch.tensor([p for p, _ in wanted])
        rows = torch.tensor([r for _, r in wanted])
        mean[pos], last[pos] = m[rows].float(), la[rows].float()
        if tokens:
            for p, r in wanted:
                tok_rows[p] = tk[off[r]:off[r + 1]]
                ntok[p] = nt[r]
    if mean is None:  # no texts
        raise ValueError("no texts to load features for")
    toks = torch.cat(tok_rows) if tokens else torch.zeros(0, len(ladder), 1, dtype=torch.bfloat16)  # type: ignore[arg-type]
    return FeatureViews(mean, last, toks, ntok, torch.cat([torch.zeros(1, dtype=torch.long), ntok.cumsum(0)]), ladder)
