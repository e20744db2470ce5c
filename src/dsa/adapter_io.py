"""Adapter files: safetensors weights + a JSON config that records the base fingerprint.

Layout of an adapter saved at PATH (a directory):
    PATH/adapter.safetensors   tensors only (never pickle)
    PATH/adapter.json          {"kind": ..., "base_fingerprint": ..., "base_name": ..., "config": {...},
                                "checksum": {"algorithm": "sha256-adapter-v2", "weights": ..., "value": ...}, ...}
Both are written to temporary files and renamed, so a crash never leaves a half-written adapter.
The checksum covers everything a load reads: every tensor (name, dtype, shape, bytes) and every
other field of adapter.json (thresholds, temperatures, max_length, the head config, info...). It is
verified at load and fails closed: a bit-flipped or truncated weights file, an edited threshold, or
an adapter without a full checksum is an `AdapterIntegrityError` naming the file, never a silent
load. `scripts/adapter_checksums.py` upgrades an adapter whose checksum covers the weights only
(after verifying them), or, with `--rehash`, accepts an intended edit.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "adapter.safetensors"
CONFIG = "adapter.json"
FORMAT_VERSION = 1
CHECKSUM_ALGORITHM = "sha256-adapter-v2"
# The shipped adapters, relative to a checkout: the defaults of the CLI, the server, the evaluators and
# the vLLM entry points.
SHIPPED_GUARD = "adapters/guards/prompt_safety"
SHIPPED_ADAPTER = "adapters/align/dsa_adapter"
TENSORS_ONLY = "sha256-tensors-v1"  # before v2: the weights only


class FingerprintMismatch(ValueError):
    """An adapter was made for a different base model than the one it is loaded onto."""


class AdapterIntegrityError(ValueError):
    """An adapter's weights are unreadable, or its files do not match (or lack) a full checksum."""


def _tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """The weights-only checksum of adapters saved before v2 (`TENSORS_ONLY`): sha256 over every
    tensor's name, dtype, shape and raw bytes, by name. Read only to upgrade such adapters."""
    return {"algorithm": TENSORS_ONLY, "value": _tensors_digest(tensors)}


def adapter_checksum(meta: dict, tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """{"algorithm", "weights", "value"}: "weights" is the tensors' digest (as `tensors_checksum`),
    "value" a sha256 over it and every field of `meta` but "checksum" (canonical JSON)."""
    weights = _tensors_digest(tensors)
    fields = json.dumps({k: v for k, v in meta.items() if k != "checksum"}, sort_keys=True,
                        separators=(",", ":"), ensure_ascii=True)
    value = hashlib.sha256(f"{weights}\0{fields}".encode()).hexdigest()
    return {"algorithm": CHECKSUM_ALGORITHM, "weights": weights, "value": value}


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"{path}: only tensors can be saved, got {type(tensors[bad[0]]).__name__} for {bad[0]!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_adapter(path: str | Path, kind: str, tensors: dict[str, torch.Tensor], config: dict,
                 base_fingerprint: str, base_name: str = "", extra: dict | None = None) -> Path:
    """Write an adapter directory (weights first, then the JSON that makes it loadable)."""
    path = Path(path)
    atomic_save_tensors(tensors, path / WEIGHTS)
    meta = {"format_version": FORMAT_VERSION, "kind": kind, "base_fingerprint": base_fingerprint,
            "base_name": base_name, "config": config, **(extra or {})}
    meta = json.loads(json.dumps(meta))  # hash the values as a load will read them back
    meta["checksum"] = adapter_checksum(meta, tensors)
    atomic_write_text(path / CONFIG, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def update_adapter_config(path: str | Path, changes: dict, kind: str | None = None) -> dict:
    """Set fields of a saved adapter's config (a recalibration, e.g. `dsa guard calibrate-stream`):
    the adapter is verified as a load verifies it, then adapter.json is rewritten with the new
    fields and a full checksum over them and the unchanged weights. Returns the new meta."""
    path = Path(path)
    meta, tensors = load_adapter(path, kind=kind)
    meta = json.loads(json.dumps({**meta, "config": {**meta["config"], **changes}}))
    meta["checksum"] = adapter_checksum(meta, tensors)
    atomic_write_text(path / CONFIG, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    verify_checksum(path, read_adapter_meta(path), tensors)
    return meta


def weights_hash(path: str | Path) -> str:
    """sha256 of an adapter's weights file (its bytes): which weights a result describes."""
    return hashlib.sha256((Path(path) / WEIGHTS).read_bytes()).hexdigest()


def read_adapter_meta(path: str | Path) -> dict:
    path = Path(path)
    cfg = path / CONFIG
    if not cfg.exists():
        raise FileNotFoundError(f"{path} is not a dsa adapter: {CONFIG} is missing")
    try:
        meta = json.loads(cfg.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg}: invalid JSON at line {err.lineno}: {err.msg}") from err
    for key in ("kind", "base_fingerprint", "config"):
        if key not in meta:
            raise ValueError(f"{cfg}: missing field {key!r}")
    return meta


def load_adapter(path: str | Path, base_fingerprint: str | None = None,
                 kind: str | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read an adapter; refuse it if it was made for another base or is of another kind.

    Returns:
        (meta, tensors) where meta is the parsed adapter.json.
    """
    path = Path(path)
    meta = read_adapter_meta(path)
    if kind is not None and meta["kind"] != kind:
        raise ValueError(f"{path}: adapter kind is {meta['kind']!r}, expected {kind!r}")
    if base_fingerprint is not None and meta["base_fingerprint"] != base_fingerprint:
        raise FingerprintMismatch(
            f"{path} was made for base {meta.get('base_name') or '?'} with fingerprint "
            f"{meta['base_fingerprint']}, but the loaded base has fingerprint {base_fingerprint}"
        )
    weights = path / WEIGHTS
    try:
        tensors = load_file(str(weights))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is not a complete dsa adapter: {WEIGHTS} is missing") from None
    except Exception as err:  # safetensors reports truncation/corruption with its own error types
        raise AdapterIntegrityError(f"{weights}: cannot read the adapter weights (truncated or corrupt "
                                    f"file): {err}") from err
    verify_checksum(path, meta, tensors)
    return meta, tensors


def verify_checksum(path: str | Path, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Check `tensors` and `meta` against the checksum in `meta`; `AdapterIntegrityError` (naming
    the file that changed and what to do) unless it is a full checksum and matches."""
    path = Path(path)
    cfg, weights = path / CONFIG, path / WEIGHTS
    want = meta.get("checksum")
    script = "python scripts/adapter_checksums.py"
    if want is None:
        raise AdapterIntegrityError(
            f"{cfg}: no checksum, so neither the weights nor the calibration can be verified. Re-save the "
            f"adapter, or, if its files are the ones you trained, accept them with `{script} --rehash {path}`")
    if isinstance(want, dict) and want.get("algorithm") == TENSORS_ONLY:
        raise AdapterIntegrityError(
            f"{cfg}: its checksum ({TENSORS_ONLY}) covers the weights only, not the calibration in "
            f"{CONFIG} (thresholds, max_length, head config). Check those fields are the ones you "
            f"trained, then upgrade it with `{script} {path}` (which verifies the weights first)")
    if not isinstance(want, dict) or want.get("algorithm") != CHECKSUM_ALGORITHM:
        raise AdapterIntegrityError(f"{cfg}: unknown checksum {want!r} (expected algorithm {CHECKSUM_ALGORITHM})")
    got = adapter_checksum(meta, tensors)
    if got["value"] == want.get("value"):
        return
    if got["weights"] != want.get("weights"):
        raise AdapterIntegrityError(
            f"{weights}: the weights do not match the checksum in {CONFIG} (got {got['weights'][:12]}…, "
            f"expected {str(want.get('weights'))[:12]}…): the file was modified or corrupted after it was "
            "saved; restore it from the saved copy or retrain")
    raise AdapterIntegrityError(
        f"{cfg}: does not match its checksum: a field (a threshold, temperature, max_length, the head "
        "config, ...) was changed after the adapter was saved. Restore the saved file (e.g. `git checkout -- "
        f"{cfg}`); to change calibration, recalibrate and save the adapter, or accept an intended edit with "
        f"`{script} --rehash {path}`")
