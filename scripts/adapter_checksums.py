"""Verify adapters' checksums, or upgrade ones whose checksum covers the weights only (`dsa.adapter_io`).

    python scripts/adapter_checksums.py adapters/guards/* adapters/baselines/* adapters/align/*
    python scripts/adapter_checksums.py --rehash PATH   # accept an intended edit of PATH/adapter.json

An adapter with a full checksum (`sha256-adapter-v2`: weights and every adapter.json field) is
verified. One with the weights-only checksum of older saves (`sha256-tensors-v1`) has its weights
verified against it, then gets the full checksum over its files as they are: nothing but
"checksum" changes, so check its adapter.json fields first (e.g. `git diff`). `--rehash` writes a
full checksum over whatever the files now hold (no checksum, an edited threshold): use it only for
files you vouch for. New adapters get the full checksum from `save_adapter`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safetensors.torch import load_file

from dsa.adapter_io import (
    CONFIG,
    TENSORS_ONLY,
    WEIGHTS,
    AdapterIntegrityError,
    adapter_checksum,
    atomic_write_text,
    read_adapter_meta,
    tensors_checksum,
    verify_checksum,
)


def check(path: Path, rehash: bool) -> str:
    """What was done to the adapter at `path`; AdapterIntegrityError when it does not verify."""
    meta = read_adapter_meta(path)
    tensors = load_file(str(path / WEIGHTS))
    old = meta.get("checksum")
    if not rehash and isinstance(old, dict) and old.get("algorithm") == TENSORS_ONLY:
        if tensors_checksum(tensors)["value"] != old.get("value"):
            raise AdapterIntegrityError(f"{path / WEIGHTS}: the weights do not match their {TENSORS_ONLY} "
                                        f"checksum in {CONFIG}; not upgraded")
    elif not rehash:
        verify_checksum(path, meta, tensors)
        return "checksum verified"
    meta["checksum"] = adapter_checksum(meta, tensors)
    atomic_write_text(path / CONFIG, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    verify_checksum(path, read_adapter_meta(path), tensors)
    return f"checksum written ({meta['checksum']['value'][:12]}…)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--rehash", action="store_true",
                   help="write a full checksum over the files as they are (an intended edit; no checks)")
    args = p.parse_args()
    failed = 0
    for path in args.paths:
        try:
            print(f"{path}: {check(path, args.rehash)}")
        except AdapterIntegrityError as err:
            print(err, file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
