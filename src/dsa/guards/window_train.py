"""Train a window guard head (`arch: window`, see `dsa.guards.heads.WindowHead`) on per-token states.

    data = window_data(base, cfg)             # texts (train wrapped + padded), labels, per-token states
    prompts = window_prompts(tok, task)       # the same prompts raw (no states): for standalone baselines
    head, info = fit_window(data, cfg)        # mean-pooled warm start, then the max-of-rolling-means loss
    adapter = train_window(base, cfg)         # both, calibrated on val: what `dsa guard train` saves

Training reads the same aggregate inference uses: the loss is taken on `rolling_max` of the per-token
logits of each text (multiple-instance learning: a harmful text needs one harmful window, a benign
text none). The training split is the task's train split (30 % already wrapped by the train
wrapper families) plus, for a seeded share of both classes alike, a copy padded with train filler
before, after or around it (`dsa.data.wrappers.augment`), so length and padding are never label
cues. Val is augmented the same way (train families only) for model choice and calibration;
held-out families and the held-out filler are left to the robustness evaluation.

Per-token states of the head's layers are cached as bf16 under `$DSA_CACHE/guard_features/
<fingerprint>/tokens-<layers>/`, per text (a part file of up to CHUNK texts plus its hash list), so
adding texts to a task computes only the new ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dsa.adapter_io import atomic_write_text
from dsa.base import Base
from dsa.features.store import default_root
from dsa.features.text import (
    length_buckets,
    pad_right,
    render_input,
    template_tail_tokens,
    text_hash,
    tokenize,
)
from dsa.guards.bank import GuardAdapter
from dsa.guards.heads import WindowHead, rolling_max
from dsa.metrics import roc_auc
from dsa.taps import run_with_taps

log = logging.getLogger(__name__)
CHUNK = 512  # texts per cache file


@dataclass
class TokenStates:
    """Per-token states of some layers for a list of texts: rows `values[offsets[i]:offsets[i+1]]`
    ([n_tokens, L·d], bf16) are text i's tokens."""

    values: torch.Tensor
    offsets: torch.Tensor  # [n + 1] long

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def batch(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded [b, s, L·d] (float32) and mask [b, s] of texts `idx`."""
        lens = [int(self.offsets[i + 1] - self.offsets[i]) for i in idx]
        width = max(lens)
        x = torch.zeros(len(idx), width, self.values.shape[1])
        m = torch.zeros(len(idx), width)
        for r, (i, n) in enumerate(zip(idx, lens, strict=True)):
            x[r, :n] = self.values[self.offsets[i]:self.offsets[i] + n].float()
            m[r, :n] = 1
        return x, m


def _cache_dir(base: Base, layers: Sequence[int], root: Path | None) -> Path:
    return (Path(root) if root else default_root()) / base.fingerprint / f"tokens-{'_'.join(map(str, layers))}"


def _part_hashes(f: Path) -> list[str] | None:
    side = f.with_suffix(".json")
    return json.loads(side.read_text())["hashes"] if side.is_file() else None


def _adopt_legacy(d: Path, hashes: list[str], max_length: int) -> None:
    """Give the first cache layout's files (one per run of CHUNK consecutive texts, keyed by them)
    the hash list the per-text index needs, when `hashes` is the list they were written for."""
    for k in range(0, len(hashes), CHUNK):
        part = hashes[k:k + CHUNK]
        key = hashlib.sha256("".join(part).encode()).hexdigest()[:24]
        f = d / f"chunk-{key}-len{max_length}.safetensors"
        if f.is_file() and _part_hashes(f) is None:
            atomic_write_text(f.with_suffix(".json"), json.dumps({"hashes": part}))


def token_states(base: Base, texts: Sequence[str], layers: Sequence[int], max_length: int = 1024,
                 batch_tokens: int = 8192, root: Path | None = None, desc: str = "token states") -> TokenStates:
    """Per-token `resid_post` states of `layers` for rendered chat `texts` (cached per text; see
    the module doc). Texts already in the cache are read, the others run through the base in
    length-sorted batches and are written in parts of CHUNK texts (temporary file + rename, the
    part's hash list last, so a killed run leaves no half-indexed part)."""
    from tqdm.auto import tqdm

    d = _cache_dir(base, layers, root)
    d.mkdir(parents=True, exist_ok=True)
    taps = [f"layers.{li}.resid_post" for li in layers]
    hashes = [text_hash(t) for t in texts]
    _adopt_legacy(d, hashes, max_length)
    where: dict[str, tuple[Path, int]] = {}
    for f in sorted(d.glob(f"*-len{max_length}.safetensors")):
        for r, h in enumerate(_part_hashes(f) or []):
            where[h] = (f, r)
    todo, seen = [], set()
    for i, h in enumerate(hashes):  # one forward per distinct text not in the cache
        if h not in where and h not in seen:
            seen.add(h)
            todo.append(i)
    bar = tqdm(total=len(texts), initial=len(texts) - len(todo), desc=desc, unit="text", leave=False)
    for k in range(0, len(todo), CHUNK):
        rows = todo[k:k + CHUNK]
        ids = tokenize(base, [texts[i] for i in rows], max_length)
        vals: list[torch.Tensor | None] = [None] * len(rows)
        for b in length_buckets([len(x) for x in ids], batch_tokens, 64):
            input_ids, mask = pad_right([ids[j] for j in b], base.tokenizer.pad_token_id)
            with torch.inference_mode():
                _, cache = run_with_taps(base.model, {"input_ids": input_ids.to(base.device),
                                                      "attention_mask": mask.to(base.device)},
                                         taps, spec=base.spec, need_output=False)
            h = torch.cat([cache[t] for t in taps], -1).to(torch.bfloat16).cpu()  # [b, s, L·d]
            for r, j in enumerate(b):
                vals[j] = h[r, :len(ids[j])].clone()
            bar.update(len(b))
        part = [hashes[i] for i in rows]
        f = d / f"part-{hashlib.sha256(''.join(part).encode()).hexdigest()[:24]}-len{max_length}.safetensors"
        tmp = f.with_suffix(".tmp")
        save_file({"values": torch.cat(vals), "lengths": torch.tensor([v.shape[0] for v in vals])}, str(tmp))
        tmp.replace(f)
        atomic_write_text(f.with_suffix(".json"), json.dumps({"hashes": part}))
        for r, h_ in enumerate(part):
            where[h_] = (f, r)
    bar.close()
    # assemble file by file into one preallocated tensor (peak memory: the result + one part)
    by_file: dict[Path, list[tuple[int, int]]] = {}
    for i, h_ in enumerate(hashes):
        f, r = where[h_]
        by_file.setdefault(f, []).append((i, r))
    lens = [0] * len(hashes)
    part_offsets: dict[Path, torch.Tensor] = {}
    for f, items in by_file.items():
        with safe_open(str(f), "pt") as fh:
            n = fh.get_tensor("lengths")
            width = fh.get_slice("values").get_shape()[1]
        off = torch.zeros(n.numel() + 1, dtype=torch.long)
        off[1:] = n.cumsum(0)
        part_offsets[f] = off
        for i, r in items:
            lens[i] = int(n[r])
    offsets = torch.zeros(len(lens) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(lens, dtype=torch.long).cumsum(0)
    out = torch.empty(int(offsets[-1]), width if by_file else 0, dtype=torch.bfloat16)
    for f, items in by_file.items():
        values, off = load_file(str(f))["values"], part_offsets[f]
        for i, r in items:
            out[offsets[i]:offsets[i + 1]] = values[off[r]:off[r + 1]]
        del values
    return TokenStates(out, offsets)


@dataclass
class WindowPrompts:
    """The raw prompts a window guard trains on, per split (before chat rendering)."""

    prompts: dict[str, list[str]]     # split -> raw user prompts (plain, framed, then padded copies)
    y: dict[str, np.ndarray]          # split -> labels (0/1)
    kinds: dict[str, list[str]]       # split -> "plain", "framed" or the padding kind
    sources: dict[str, list[str]]     # split -> the source a prompt is held out by (LOSO)
    n_padded: dict[str, int]          # split -> padded copies appended at the end


@dataclass
class WindowData:
    texts: dict[str, list[str]]       # split -> rendered texts
    y: dict[str, np.ndarray]          # split -> labels (0/1)
    kinds: dict[str, list[str]]       # split -> "plain", "framed" or the padding kind
    states: dict[str, TokenStates]
    sources: dict[str, list[str]] | None = None  # split -> the source a text is held out by (LOSO)


def window_prompts(tokenizer, task_name: str, seed: int = 0, share: float = 0.5,
                   pad_tokens: Sequence[int] = (40, 120, 300), long_share: float = 0.0,
                   long_tokens: Sequence[int] = (500, 900), corpus_share: float = 0.0,
                   corpus_tokens: Sequence[int] = (200, 450, 800), doc_share: float = 0.0,
                   doc_tokens: Sequence[int] = (300, 600, 900),
                   splits: Sequence[str] = ("train", "val")) -> WindowPrompts:
    """The task's labelled splits as raw prompts; train and val also get copies padded with train
    filler (`augment`), for `long_share` of them long repetitive copies (`long_pads`) and for
    `corpus_share` copies padded with the split's own other benign prompts (`corpus_pads`: short
    plain benign prompts of that split only, so val padding never shares a text with train), for
    `doc_share` copies with long benign documents around them (`document_pads`: summedits documents,
    split between train and val by `document_pool`); lengths
    counted with `tokenizer`; test stays plain. What `window_data`
    renders, so a standalone classifier can train on exactly the same prompts."""
    from dsa.data.tasks import guard_task, prompt_source
    from dsa.data.wrappers import augment, corpus_pads, document_pads, document_pool, long_pads

    task = guard_task(task_name)
    count = lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    out = WindowPrompts({}, {}, {}, {}, {})
    documents = _documents() if doc_share > 0 else []  # read once for both splits' pools
    for s in splits:
        recs = [r for r in task.split(s) if r.label is not None]
        prompts = [r.main_text for r in recs]
        labels = [int(r.label) for r in recs]
        kind = ["framed" if r.meta.get("frame") is not None else "plain" for r in recs]
        src = [prompt_source(r) for r in recs]
        # padding only (the wrapper families are already in train through the task's framing)
        extra = [] if s == "test" else [
            (i, k, t) for i, k, t in augment(prompts, seed=seed + (s == "val"), share=share,
                                             pad_tokens=pad_tokens, count=count) if k.startswith("pad_")]
        if s != "test" and long_share > 0:
            extra += long_pads(prompts, seed=seed + (s == "val"), share=long_share, pad_tokens=long_tokens,
                               count=count)
        if s != "test" and corpus_share > 0:
            pool = [p for p, y, k in zip(prompts, labels, kind, strict=True)
                    if y == 0 and k == "plain" and len(p) <= 300]
            extra += corpus_pads(prompts, pool, seed=seed + (s == "val"), share=corpus_share,
                                 pad_tokens=corpus_tokens, count=count)
        if s != "test" and doc_share > 0:
            extra += document_pads(prompts, document_pool(documents, s, seed=seed), seed=seed + (s == "val"),
                                   share=doc_share, pad_tokens=doc_tokens, count=count)
        prompts += [t for _, _, t in extra]
        labels += [labels[i] for i, _, _ in extra]
        kind += [k for _, k, _ in extra]
        src += [src[i] for i, _, _ in extra]
        out.prompts[s], out.y[s], out.kinds[s], out.sources[s] = prompts, np.array(labels), kind, src
        out.n_padded[s] = len(extra)
    return out


def _documents() -> list[str]:
    """Benign documents for `document_pads`: every summedits document (not an eval-only set)."""
    from dsa.data.sources import load_source

    return [r.document for r in load_source("summedits") if r.document]


def window_data(base: Base, task_name: str, layers: Sequence[int], seed: int = 0, share: float = 0.5,
                pad_tokens: Sequence[int] = (40, 120, 300), long_share: float = 0.0,
                long_tokens: Sequence[int] = (500, 900), corpus_share: float = 0.0,
                corpus_tokens: Sequence[int] = (200, 450, 800), doc_share: float = 0.0,
                doc_tokens: Sequence[int] = (300, 600, 900), max_length: int = 1024,
                splits: Sequence[str] = ("train", "val")) -> WindowData:
    """The task's splits (`window_prompts`) as rendered texts with their per-token states; train
    and val also get padded copies, test stays plain."""
    wp = window_prompts(base.tokenizer, task_name, seed=seed, share=share, pad_tokens=pad_tokens,
                        long_share=long_share, long_tokens=long_tokens, corpus_share=corpus_share,
                        corpus_tokens=corpus_tokens, doc_share=doc_share, doc_tokens=doc_tokens, splits=splits)
    texts, states = {}, {}
    for s in splits:
        texts[s] = [render_input(base, p) for p in wp.prompts[s]]
        states[s] = token_states(base, texts[s], layers, max_length=max_length, desc=f"{task_name} {s} tokens")
        log.info("%s %s: %d texts (%d padded), %d tokens", task_name, s, len(texts[s]), wp.n_padded[s],
                 int(states[s].offsets[-1]))
    return WindowData(texts, wp.y, wp.kinds, states, wp.sources)


def _standardise(head: WindowHead, states: TokenStates, n: int = 200_000, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(states.values.shape[0], generator=g)[:n]
    x = states.values[rows].float()
    head.mu.copy_(x.mean(0))
    head.sd.copy_(x.std(0).clamp_min(1e-3))


def _z(head: WindowHead, x: torch.Tensor) -> torch.Tensor:
    """Per-token logits (no bias) [b, s, h] of concatenated states [b, s, L·d]."""
    return ((x - head.mu) / head.sd) @ head.net.weight.T


def predict_window(head: WindowHead, states: TokenStates, idx: Sequence[int] | None = None,
                   batch_tokens: int = 65536) -> np.ndarray:
    """Logits [n, heads] of texts `idx` (default all), the inference read-out with the bias."""
    idx = list(range(len(states))) if idx is None else list(idx)
    lens = states.lengths()
    out = torch.zeros(len(idx), head.net.out_features)
    with torch.no_grad():
        for b in length_buckets([int(lens[i]) for i in idx], batch_tokens, 256):
            x, m = states.batch([idx[j] for j in b])
            out[b] = rolling_max(_z(head, x), m, head.window) + head.net.bias
    return out.numpy()


def fit_window(data: WindowData, layers: Sequence[int], window: int, d_model: int, *, weight_decay: float = 1e-3,
               epochs: int = 8, warm_epochs: int = 2, lr: float = 2e-3, batch_size: int = 64, seed: int = 0,
               patience: int = 2, train_idx: Sequence[int] | None = None,
               val_idx: Sequence[int] | None = None, tail_drop_share: float = 0.0,
               tail_tokens: int = 0, long_copy_weight: float = 1.0) -> tuple[WindowHead, dict]:
    """Fit one window head: `warm_epochs` on the mean of the token logits (a stable start), then the
    rolling-max loss; keeps the epoch with the best val AUC. `train_idx` / `val_idx` restrict the
    texts used (leave-one-source-out). For a seeded `tail_drop_share` of the training texts (both
    classes alike) the loss may not read their last `tail_tokens` tokens (the chat template's end
    after the request, `template_tail_tokens`), so the head must find a request in its own tokens,
    not only in the assistant turn's opening after it; inference reads every token.
    `long_copy_weight` weights the loss of the long padded copies (long filler and documents, both
    classes): a long text has many windows, so a benign one has many chances to be flagged."""
    torch.manual_seed(seed)
    head = WindowHead(d_model, 1, list(layers), window)
    tr, va = data.states["train"], data.states["val"]
    tr_idx = list(range(len(tr))) if train_idx is None else list(train_idx)
    va_idx = list(range(len(va))) if val_idx is None else list(val_idx)
    y_all = torch.as_tensor(data.y["train"], dtype=torch.float32)
    y_tr = y_all[tr_idx]
    w_all = torch.tensor([long_copy_weight if kind_group(k) in ("pad_long", "pad_doc") else 1.0
                          for k in data.kinds.get("train") or ["plain"] * len(tr)])
    _standardise(head, tr, seed=seed)  # over all train tokens (a held-out source shifts it little)
    with torch.no_grad():
        head.net.weight.zero_()
        head.net.bias.zero_()
    pos_weight = ((y_tr == 0).sum() / (y_tr == 1).sum().clamp_min(1)).reshape(1)
    opt = torch.optim.AdamW(head.net.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    best = (-1.0, None, -1)
    history = []
    all_lens = tr.lengths().tolist()
    lens = [all_lens[i] for i in tr_idx]
    drop = torch.rand(len(tr), generator=torch.Generator().manual_seed(seed + 1)) < tail_drop_share
    for ep in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(tr_idx), generator=g).tolist()
        batches = _shuffled_buckets(order, lens, batch_size, g)  # similar lengths, seeded order
        for b in batches:
            x, m = tr.batch([tr_idx[i] for i in b])
            if tail_tokens and tail_drop_share:
                for r, i in enumerate(b):
                    n = lens[i]
                    if drop[tr_idx[i]] and n > tail_tokens:
                        m[r, n - tail_tokens:n] = 0
            z = _z(head, x)  # [b, s, 1]
            if ep < warm_epochs:
                agg = (z * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)
            else:
                agg = rolling_max(z, m, window)
            logit = (agg + head.net.bias)[:, 0]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logit, y_tr[b], weight=w_all[[tr_idx[i] for i in b]], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
        auc = roc_auc(data.y["val"][va_idx], predict_window(head, va, va_idx)[:, 0])
        history.append({"epoch": ep + 1, "val_auc": float(auc), "seconds": round(time.perf_counter() - t0, 1)})
        log.info("window W=%d wd=%g epoch %d: val AUC %.4f (%.0f s)", window, weight_decay, ep + 1, auc,
                 time.perf_counter() - t0)
        if ep >= warm_epochs - 1 and auc > best[0] + 1e-4:
            best = (auc, {k: v.clone() for k, v in head.state_dict().items()}, ep + 1)
        elif ep >= warm_epochs and ep + 1 - best[2] > patience:
            break
    head.load_state_dict(best[1])
    head.eval()
    return head, {"val_auc": float(best[0]), "epoch": best[2], "history": history}


def _shuffled_buckets(order: list[int], lens: list[int], batch_size: int, g: torch.Generator) -> list[list[int]]:
    """Batches of `batch_size` texts of similar length, in a seeded random order."""
    by_len = sorted(order, key=lambda i: lens[i])
    batches = [by_len[k:k + batch_size] for k in range(0, len(by_len), batch_size)]
    perm = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in perm]


def train_window(base: Base, cfg) -> GuardAdapter:
    """`dsa guard train` for `arch: window`: every (window, weight decay) candidate of `cfg` fitted on
    the augmented train split, the best val AUC kept, calibrated on val (temperature + threshold at
    `cfg.target_fpr`), test AUC on the plain test split recorded."""
    from dsa.guards.calibrate import calibrated
    from dsa.guards.train import calibrate

    cfg = cfg.resolved(base.n_layers)
    layers = list(cfg.layer_sets[0])
    tail = template_tail_tokens(base) if cfg.tail_drop_share else 0
    t0 = time.perf_counter()
    data = window_data(base, cfg.task, layers, **cfg.augmentation(), splits=("train", "val", "test"))
    feature_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    sweep, best = [], None
    for w in cfg.windows:
        for wd in cfg.weight_decays:
            head, info = fit_window(data, layers, w, base.d_model, weight_decay=wd, epochs=cfg.epochs,
                                    lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed, patience=cfg.patience,
                                    tail_drop_share=cfg.tail_drop_share, tail_tokens=tail,
                                    long_copy_weight=cfg.long_copy_weight)
            sweep.append({"window": w, "weight_decay": wd, **info})
            if best is None or info["val_auc"] > best[0]:
                best = (info["val_auc"], head, w, wd)
    _, head, w, wd = best
    y_va = data.y["val"][:, None].astype(float)
    val_logits = predict_window(head, data.states["val"])
    temps, thresholds = calibrate(val_logits, y_va, cfg.target_fpr)
    val_flags = flag_rates_by_kind(data.kinds["val"], data.y["val"], calibrated(val_logits[:, 0], temps[0]),
                                   thresholds[0])
    test_auc = roc_auc(data.y["test"], predict_window(head, data.states["test"])[:, 0])
    context = int(getattr(base.model.config, "max_position_embeddings", 0) or 8192)
    info = {"val_auc": float(best[0]), "test_auc": float(test_auc), "window": w, "weight_decay": wd,
            "params": sum(p.numel() for p in head.parameters()), "train_seconds": time.perf_counter() - t0,
            "feature_seconds": feature_seconds, "sweep": sweep, "languages": ["en"],
            "val_flag_rates": val_flags,
            "n_train": len(data.y["train"]), "n_val": len(data.y["val"]), "n_test": len(data.y["test"])}
    return GuardAdapter("window", cfg.task, "prompt", ["unsafe"], {"layers": layers, "window": w}, head, temps,
                        thresholds, max_length=context, target_fpr=cfg.target_fpr, info=info)


def kind_group(kind: str) -> str:
    """A training copy's kind as a group: plain, framed (train wrapper families), pad (short train
    filler), pad_long (long repetitive train filler), pad_corpus (other benign prompts) or pad_doc
    (long benign documents)."""
    for g in ("pad_long", "pad_corpus", "pad_doc"):
        if kind.startswith(g):
            return g
    return "pad" if kind.startswith("pad_") else "plain" if kind == "plain" else "framed"


def flag_rates_by_kind(kinds: Sequence[str], y: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """{group: {"benign": flag rate, "harmful": flag rate, "n_benign", "n_harmful"}} at `threshold`
    (`kind_group`): whether a kind of padding moves the operating point, read on val."""
    out = {}
    groups = np.array([kind_group(k) for k in kinds])
    for g in dict.fromkeys(groups.tolist()):
        row = {}
        for name, label in (("benign", 0), ("harmful", 1)):
            m = (groups == g) & (y == label)
            row[name] = float((probs[m] >= threshold).mean()) if m.any() else None
            row[f"n_{name}"] = int(m.sum())
        out[g] = row
    return out


def val_report(head: WindowHead, data: WindowData, idx: Sequence[int] | None = None) -> dict:
    """Val AUC on the plain texts and on the padded copies, each against the whole other class."""
    va = data.states["val"]
    idx = list(range(len(va))) if idx is None else list(idx)
    logits = predict_window(head, va, idx)[:, 0]
    y = data.y["val"][idx]
    kinds = [data.kinds["val"][i] for i in idx]
    out = {"auc": roc_auc(y, logits)}
    for name, keep in (("auc_plain", lambda k: k == "plain"), ("auc_padded", lambda k: k.startswith("pad_"))):
        m = np.array([keep(k) for k in kinds])
        if m.any() and len(np.unique(y[m])) == 2:
            out[name] = roc_auc(y[m], logits[m])
    return out


def loso_window(data: WindowData, layers: Sequence[int], window: int, weight_decay: float, d_model: int,
                target_fpr: float = 0.05, epochs: int = 5, **fit_kw) -> dict:
    """Leave-one-source-out as the PLR study does it: train without one source (its framed and
    padded copies too), threshold at `target_fpr` on val without it, and test on every plain row of
    it (all splits) against the other class's test rows of the other sources."""
    from dsa.guards.calibrate import threshold_for_fpr
    from dsa.guards.operating import tpr_at_fpr

    res = {}
    y_te = data.y["test"]
    for src in sorted(set(data.sources["train"])):
        t0 = time.perf_counter()
        tr_idx = [i for i, x in enumerate(data.sources["train"]) if x != src]
        va_idx = [i for i, x in enumerate(data.sources["val"]) if x != src]
        head, _ = fit_window(data, layers, window, d_model, weight_decay=weight_decay, epochs=epochs,
                             train_idx=tr_idx, val_idx=va_idx, **fit_kw)
        thr = threshold_for_fpr(predict_window(head, data.states["val"], va_idx)[:, 0], data.y["val"][va_idx],
                                target_fpr)
        held, ys = [], []
        for s in ("train", "val", "test"):
            ix = [i for i, (x, k) in enumerate(zip(data.sources[s], data.kinds[s], strict=True))
                  if x == src and k == "plain"]
            if ix:
                held.append(predict_window(head, data.states[s], ix)[:, 0])
                ys.append(data.y[s][ix])
        s_held, y_held = np.concatenate(held), np.concatenate(ys)
        label = int(round(float(y_held.mean())))
        other = [i for i, x in enumerate(data.sources["test"]) if x != src and y_te[i] != label]
        s_other = predict_window(head, data.states["test"], other)[:, 0]
        y = np.r_[y_held, y_te[other]]
        sc = np.r_[s_held, s_other]
        res[src] = {"label": label, "n": int(len(s_held)), "auc": roc_auc(y, sc),
                    "tpr_at_1pct_fpr": tpr_at_fpr(y, sc, 0.01),
                    "flag_rate": float((s_held >= thr).mean()), "seconds": round(time.perf_counter() - t0, 1)}
        log.info("loso %s: auc %.3f flag %.3f", src, res[src]["auc"], res[src]["flag_rate"])
    return res
