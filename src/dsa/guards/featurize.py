"""Render guard-task records as chat text and extract, in ONE base forward per text, everything
the guard heads train on: pooled (mean and last-token) states of every layer, plus per-token
states of a few ladder taps over the last `window` tokens (what RTB and LST read).

`dsa.features.extract_features` computes one pooling per pass; guard training needs three views
of the same forward, so this module records them together in a content-addressed store: a text
is extracted once per base and view settings, whatever task or list it belongs to, so adding
rows to a task (or scoring a new eval set that shares prompts) runs the base on the new texts only.

    root/<fingerprint>/store-len<max_length>-w<window>-<ladder>/
        shard-<id>.safetensors   "mean" [n, L, d], "last" [n, L, d], "tokens" [sum(ntok), T, d], "ntok" [n]
        shard-<id>.hashes.json   {"hashes": [text hash of each row]}  (written last: marks the shard complete)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from dsa.adapter_io import atomic_save_tensors, atomic_write_text
from dsa.base import Base, cache_dir
from dsa.features import length_buckets, text_hash, tokenize
from dsa.taps import record_taps, resolve_layers

PLR_LAYERS = "all"  # pooled readouts are cached for every layer; heads pick theirs
# per-token taps for RTB/LST, as fractions of depth (dsa.taps.resolve_layer): layers 4, 9, 14, 19,
# 24, 29 of SmolLM2's 30, evenly spread up to the last layer of any other model
LADDER_LAYERS = ("0.14", "0.31", "0.48", "0.66", "0.83", "1.0")


def render(base: Base, record, mode: str, doc_tokens: int = 384) -> str:
    """The chat text a guard reads for one record (what the generation prefill would see).

    Documents keep their first `doc_tokens` tokens so that the summary after them always fits in
    512 tokens: texts of one document then share its forward (at 448, 63 % of SummEdits texts ran
    over 512, were left-truncated and lost the shared prefix).
    """
    if mode == "prompt_response":
        return base.prompt_response_text(record.prompt, record.response)
    if mode == "document_summary":
        doc = record.document
        ids = base.tokenizer(doc, add_special_tokens=False)["input_ids"]
        if len(ids) > doc_tokens:
            doc = base.tokenizer.decode(ids[:doc_tokens])
        return base.chat_text(f"Document:\n{doc}\n\nSummary:\n{record.summary}")
    return base.chat_text(record.main_text)


def render_input(base: Base, item: str | list[dict]) -> str:
    """A raw classify() input: a string is one user message; a list is chat messages."""
    if isinstance(item, str):
        return base.chat_text(item)
    add_gen = not item or item[-1].get("role") != "assistant"
    return base.chat_text(item, add_generation_prompt=add_gen)


@dataclass
class TaskFeatures:
    """Cached views of one list of texts (aligned with it)."""

    mean: torch.Tensor  # [n, n_layers, d] float32
    last: torch.Tensor  # [n, n_layers, d]
    tokens: torch.Tensor  # [sum ntok, n_ladder, d] bf16 (last `window` tokens of each text)
    ntok: torch.Tensor  # [n]
    offsets: torch.Tensor  # [n + 1]
    ladder_layers: tuple[int, ...]

    def subset(self, idx: Sequence[int]) -> TaskFeatures:
        idx_t = torch.as_tensor(list(idx), dtype=torch.long)
        parts = [self.tokens[self.offsets[i]:self.offsets[i + 1]] for i in idx_t.tolist()]
        ntok = self.ntok[idx_t]
        return TaskFeatures(self.mean[idx_t], self.last[idx_t],
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
    import copy

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
        prefix_cache = out.past_key_values
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
            kwargs = {"past_key_values": kv, "use_cache": True}
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
    return (Path(root) if root else cache_dir() / "guard_features") / base.fingerprint / \
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


def _import_legacy(base: Base, d: Path, texts: list[str], hashes: list[str], name: str, max_length: int,
                   window: int, ladder: tuple[int, ...], root: Path | None) -> None:
    """Move the shards of the former per-list cache of exactly these texts into the store
    (rename + hash list; no base pass, no copy of the tensors)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    legacy = (Path(root) if root else cache_dir() / "guard_features") / base.fingerprint / \
        f"{name}-len{max_length}-w{window}-{'_'.join(map(str, ladder))}-{h.hexdigest()[:16]}"
    if not legacy.is_dir():
        return
    for shard in sorted(legacy.glob("shard-*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            rows = f.get_tensor("index").tolist()
        target = d / f"shard-legacy-{legacy.name[-16:]}-{shard.stem.removeprefix('shard-')}.safetensors"
        # hash list first: the store counts a shard only when both exist, so a kill in between
        # leaves the text in the legacy directory, not lost
        atomic_write_text(_hashes_file(target), json.dumps({"hashes": [hashes[i] for i in rows]}))
        shard.replace(target)
    if not any(legacy.iterdir()):
        legacy.rmdir()


def extract_task_features(base: Base, texts: Sequence[str], name: str, *, groups: Sequence[object] | None = None,
                          max_length: int = 256, window: int = 64, ladder_layers: Sequence[int] = LADDER_LAYERS,
                          shard_size: int = 256, batch_tokens: int = 4096, max_batch: int = 64,
                          root: Path | None = None, progress: bool = True, tokens: bool = True) -> TaskFeatures:
    """Views of `texts` from the content-addressed store; texts not in it get one base forward each
    (shared prefixes of a group computed once), written shard by shard (a killed run resumes).

    Args:
        texts: rendered chat texts; each keeps its last `max_length` tokens.
        name: a label for progress output (the store is shared by every task).
        groups: optional group key per text (e.g. the document); texts of a group share their
            common token prefix's forward. Without it all texts share the chat-template prefix.
        window: per-token ladder states are kept for the last `window` tokens of each text.
    Returns views aligned with `texts`.
    """
    texts = list(texts)
    ladder = tuple(resolve_layers(ladder_layers, base.n_layers))
    d = store_dir(base, max_length, window, ladder, root)
    d.mkdir(parents=True, exist_ok=True)
    hashes = [text_hash(t) for t in texts]
    _import_legacy(base, d, texts, hashes, name, max_length, window, ladder, root)
    index = store_index(d)
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        if h not in index:
            first.setdefault(h, i)
    todo = sorted(first.values())
    if todo:
        ids = tokenize(base, [texts[i] for i in todo], max_length)
        units = _units(ids, [groups[i] for i in todo] if groups is not None else None, shard_size, max_length)
        taps = [f"layers.{i}.resid_post" for i in range(base.n_layers)]
        t0, n_tokens, done = time.perf_counter(), 0, 0
        if progress:
            print(f"{name}: {len(todo)} of {len(texts)} texts not in the feature store; extracting", flush=True)
        for unit in tqdm(units, desc=name, disable=not progress or len(units) < 20):
            means, lasts, toks, nt = _forward_unit(base, ids, unit, taps, ladder, window, batch_tokens, max_batch)
            n_tokens, done = n_tokens + nt, done + len(unit)
            _write_shard(d, [hashes[todo[j]] for j in unit],
                         {"mean": means.to(torch.bfloat16), "last": lasts.to(torch.bfloat16),
                          "tokens": torch.cat(toks), "ntok": torch.tensor([t.shape[0] for t in toks])}, ladder)
            if progress and len(units) < 20:
                print(f"{name}: {done}/{len(todo)} texts, {n_tokens / (time.perf_counter() - t0):.0f} tok/s computed",
                      flush=True)
        index = store_index(d)
    return load_features(index, hashes, ladder, tokens)


def load_features(index: dict[str, tuple[Path, int]], hashes: Sequence[str], ladder: tuple[int, ...],
                  tokens: bool = True) -> TaskFeatures:
    """The rows of `hashes` (in that order) from the store's shards. `tokens=False` skips the
    per-token ladder states (most of the bytes) for heads that read pooled states only."""
    by_shard: dict[Path, list[tuple[int, int]]] = {}
    for pos, h in enumerate(hashes):
        shard, row = index[h]
        by_shard.setdefault(shard, []).append((pos, row))
    n = len(hashes)
    mean = last = None
    ntok = torch.zeros(n, dtype=torch.long)
    tok_rows: list[torch.Tensor | None] = [None] * n
    for shard, wanted in by_shard.items():
        with safe_open(str(shard), "pt") as f:
            m, la = f.get_tensor("mean"), f.get_tensor("last")
            if mean is None:
                mean = torch.zeros(n, *m.shape[1:])
                last = torch.zeros(n, *la.shape[1:])
            pos = torch.tensor([p for p, _ in wanted])
            rows = torch.tensor([r for _, r in wanted])
            mean[pos], last[pos] = m[rows].float(), la[rows].float()
            if tokens:
                nt = f.get_tensor("ntok").long()
                off = torch.cat([torch.zeros(1, dtype=torch.long), nt.cumsum(0)])
                tk = f.get_tensor("tokens")
                for p, r in wanted:
                    tok_rows[p] = tk[off[r]:off[r + 1]]
                    ntok[p] = nt[r]
    if mean is None:  # no texts
        raise ValueError("no texts to load features for")
    toks = torch.cat(tok_rows) if tokens else torch.zeros(0, len(ladder), 1, dtype=torch.bfloat16)  # type: ignore[arg-type]
    return TaskFeatures(mean, last, toks, ntok, torch.cat([torch.zeros(1, dtype=torch.long), ntok.cumsum(0)]), ladder)


TASK_MAX_LENGTH = {"summedits": 512, "openai_moderation": 128}  # others: 256
# Training-set caps (seeded subsample) that keep one base pass per text affordable on a shared
# 2-core CPU; val and test splits are always complete. None = the whole train split.
TRAIN_CAP = {"prompt_safety": None, "toxigen": 2500, "summedits": 1000, "response_harm": 600,
             "openai_moderation": None}
# Val/test kept whole except where listed: the fraction of groups (questions) kept, seeded.
EVAL_FRACTION = {"response_harm": 0.5}


def eval_subset(task_name: str, records: list) -> list:
    """Val/test records actually scored: all of them, or a seeded fraction of whole groups."""
    frac = EVAL_FRACTION.get(task_name)
    if frac is None:
        return list(records)

    def u(r):  # group = the question, as in the split rule
        key = f"subset:0:{' '.join((r.prompt or '').lower().split())}"  # not the split hash
        return int(hashlib.sha256(key.encode())
                   .hexdigest()[:8], 16) / 16**8

    return [r for r in records if u(r) < frac]


_CAP = object()  # "the task's TRAIN_CAP"


def train_subset(task_name: str, records: list, cap: int | None = _CAP) -> list:
    """The seeded training subset used by every method (DSA heads and baselines alike).

    Records are taken in sha256(seed 0 + group) order, so whole groups (SummEdits documents) are kept
    together; response_harm keeps every positive (3.4 % of rows) and fills up with negatives;
    prompt_safety keeps every hard negative (benign prompts that use harm words) and samples the rest.
    """
    cap = TRAIN_CAP.get(task_name) if cap is _CAP else cap
    if cap is None or len(records) <= cap:
        return list(records)

    def key(r):
        g = r.meta.get("doc_id") if task_name == "summedits" else r.id
        return hashlib.sha256(f"0:{g}".encode()).hexdigest()

    ordered = sorted(records, key=key)
    if task_name == "summedits":
        return ordered[:cap]
    pos = [r for r in ordered if r.label == 1]
    neg = sorted((r for r in ordered if r.label != 1), key=lambda r: not r.meta.get("hard_negative"))
    n_pos = len(pos) if task_name == "response_harm" else round(cap * len(pos) / len(records))
    return pos[:n_pos] + neg[:cap - n_pos]  # stratified: the train class ratio is kept


def record_labels(records, heads: Sequence[str]) -> torch.Tensor:
    """[n, heads] float labels; NaN where a head is not annotated."""
    out = torch.full((len(records), len(heads)), float("nan"))
    for i, r in enumerate(records):
        for j, h in enumerate(heads):
            v = r.labels.get(h) if (len(heads) > 1 and r.labels) else r.label
            if v is not None:
                out[i, j] = float(v)
    return out


@dataclass
class SplitData:
    texts: list[str]
    labels: torch.Tensor  # [n, heads]
    groups: list[str]  # texts of a group share a prefix (the document / the question)
    feats: TaskFeatures | None = None


def task_splits(base: Base, name, train_cap: int | None = _CAP) -> tuple[list[str], str, dict[str, SplitData]]:
    """(heads, mode, {split: SplitData}) of a guard task (a name of dsa.data.GUARD_TASKS, or a
    `GuardTask` such as a user's file from `dsa.guards.user`), rendered as chat text; the training
    split is capped at `train_cap` records (default: the task's TRAIN_CAP; None = all of it)."""
    from dsa.data import guard_task

    task = guard_task(name) if isinstance(name, str) else name
    splits = {}
    for s in ("train", "val", "test"):
        recs = task.split(s)
        recs = train_subset(task.name, recs, train_cap) if s == "train" else eval_subset(task.name, recs)
        if recs:
            groups = [r.document if task.mode == "document_summary" else
                      r.prompt if task.mode == "prompt_response" else "" for r in recs]
            splits[s] = SplitData([render(base, r, task.mode) for r in recs], record_labels(recs, task.heads),
                                  groups)
    return task.heads, task.mode, splits


def features_cached(base: Base, name: str, *, max_length: int | None = None, window: int = 64) -> bool:
    """Whether every text of a task is already in the feature store (no base pass needed)."""
    _, _, splits = task_splits(base, name)
    ladder = tuple(resolve_layers(LADDER_LAYERS, base.n_layers))
    index = store_index(store_dir(base, max_length or TASK_MAX_LENGTH.get(name, 256), window, ladder))
    return all(text_hash(t) in index for s in splits.values() for t in s.texts)


def task_features(base: Base, name: str, *, max_length: int | None = None, window: int = 64,
                  progress: bool = True, train_cap: int | None = _CAP, tokens: bool = True,
                  ladder: Sequence[int | float | str] = LADDER_LAYERS,
                  root: Path | None = None) -> tuple[list[str], str, dict[str, SplitData]]:
    """`task_splits` with features from the store attached (`root`: another store than the default)."""
    heads, mode, splits = task_splits(base, name, train_cap)
    name = name if isinstance(name, str) else name.name
    order = [s for s in ("train", "val", "test") if s in splits]
    texts = [t for s in order for t in splits[s].texts]
    groups = [g for s in order for g in splits[s].groups]
    feats = extract_task_features(base, texts, name, groups=groups, root=root,
                                  max_length=max_length or TASK_MAX_LENGTH.get(name, 256),
                                  window=window, progress=progress, tokens=tokens, ladder_layers=ladder)
    start = 0
    for s in order:
        n = len(splits[s].texts)
        splits[s].feats = feats.subset(range(start, start + n))
        start += n
    return heads, mode, splits
