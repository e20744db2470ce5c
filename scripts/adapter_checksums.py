"""Add the tensor checksum to adapters saved before checksums existed (`dsa.adapter_io`).

    python scripts/adapter_checksums.py adapters/align/dsa_adapter adapters/guards/toxigen ...

Each adapter's weights must still read cleanly; its adapter.json gains "checksum" (nothing else
changes). Adapters that already have one are verified instead. New adapters get it from
`save_adapter`, so this is a one-time migration.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import load_file

from dsa.adapter_io import (
    CONFIG,
    WEIGHTS,
    atomic_write_text,
    read_adapter_meta,
    tensors_checksum,
    verify_checksum,
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", type=Path)
    for path in p.parse_args().paths:
        meta = read_adapter_meta(path)
        tensors = load_file(str(path / WEIGHTS))
        if "checksum" in meta:
            verify_checksum(path, meta, tensors)
            print(f"{path}: checksum verified")
            continue
        meta["checksum"] = tensors_checksum(tensors)
        atomic_write_text(path / CONFIG, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        print(f"{path}: checksum added ({meta['checksum']['value'][:12]}…)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
