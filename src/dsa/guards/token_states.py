"""Per-token `resid_post` states of some layers for a list of texts (`TokenStates`), cached as bf16
under `$DSA_CACHE/guard_features/<fingerprint>/tokens-<layers>/`, per text (a part file of up to
CHUNK texts plus its hash list), so adding texts to a task computes only the new ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dsa.adapter_io import atomic_write_text
from dsa.base import Base
from dsa.features.store import default_root
from dsa.features.text import length_buckets, pad_right, text_hash, tokenize
from dsa.taps import run_with_taps

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
