"""Per-configuration caches of answers, log-likelihoods and λ for the utility benchmarks.

    cache = JsonCache(folder(root, "dsa_adapter@0.5", sm) / "generate-256.json")
    cache.get(key(prompt)); cache.put(key(prompt), {...}); cache.flush()

A configuration's folder is `<root>/<name>-<fingerprint>`: the name is the caller's (readable), the
fingerprint hashes what the outputs depend on (base fingerprint and module names, alignment
adapter, guard heads and calibration, response guards, the policy's λ on a grid of scores), so a
retrained adapter or guard never reuses stale entries. Values are keyed by the sha256 of the
prompt (and continuation); every flush is an atomic rewrite, safe to interrupt.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from torch import nn

from dsa.adapter_io import atomic_write_text


def key(*parts: str) -> str:
    """sha256 of the parts (joined with a unit separator)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _update(h, obj) -> None:
    if obj is None:
        h.update(b"none")
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(str((t.dtype, tuple(obj.shape))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, nn.Module):
        for name, t in sorted(obj.state_dict().items()):
            h.update(name.encode())
            _update(h, t)
    elif hasattr(obj, "adapters"):  # a GuardBank: heads plus their calibration
        for a in obj.adapters:
            _update(h, a.head)
            h.update(json.dumps([a.arch, a.task, a.heads, a.cfg, a.temperatures, a.thresholds,
                                 a.max_length, a.window], sort_keys=True, default=str).encode())
    elif isinstance(obj, (str, int, float, bool, list, tuple, dict)):
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())
    else:  # any other scorer: its tensors and plain attributes
        for name, value in sorted(vars(obj).items()):
            h.update(name.encode())
            _update(h, value if isinstance(value, (torch.Tensor, nn.Module, str, int, float, bool,
                                                   list, tuple, dict)) else repr(type(value)))


def digest(*objs) -> str:
    """Short hash of modules, guard banks (heads plus calibration), tensors and plain values."""
    h = hashlib.sha256()
    for o in objs:
        _update(h, o)
    return h.hexdigest()[:12]


def model_fingerprint(sm) -> str:
    """Short hash of everything a `SafetyModel`'s outputs depend on besides the base weights.

    The base is identified by its fingerprint and its module names (an in-place LoRA patch adds
    modules); a patch's strength is not visible here, so name such configurations distinctly.
    """
    h = hashlib.sha256(sm.base.fingerprint.encode())
    h.update("\n".join(sm.base.model.state_dict().keys()).encode())
    head = getattr(sm, "policy_head", getattr(sm, "guard_head", None))  # the head that drives λ
    for part in (sm.adapter, sm.guards, sm.response_guards, head):
        _update(h, part)
    _update(h, sm.policy(torch.linspace(0, 1, 201)).float())
    return h.hexdigest()[:12]


def folder(root: str | Path, name: str, sm) -> Path:
    """`<root>/<name>-<fingerprint>` (name made filesystem-safe)."""
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", name.replace("@", "_at_")) or "config"
    return Path(root) / f"{safe}-{model_fingerprint(sm)}"


class JsonCache:
    """A JSON object on disk: key → value, rewritten atomically on `flush`. `path=None` keeps it
    in memory only."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.data: dict = {}
        if self.path is not None and self.path.exists():
            self.data = json.loads(self.path.read_text())
        self._dirty = False

    def get(self, k: str):
        return self.data.get(k)

    def __contains__(self, k: str) -> bool:
        return k in self.data

    def put(self, k: str, value) -> None:
        self.data[k] = value
        self._dirty = True

    def flush(self) -> None:
        if self.path is not None and self._dirty:
            atomic_write_text(self.path, json.dumps(self.data))
            self._dirty = False
