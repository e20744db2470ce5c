"""Adapter weights carry a checksum verified at load: tampering or truncation fails loudly, naming the file."""

import json
import logging

import pytest
import torch

from dsa.adapter_io import AdapterIntegrityError, load_adapter, save_adapter, tensors_checksum


def _save(tmp_path):
    w = {"head.weight": torch.randn(3, 8), "head.bias": torch.zeros(3, dtype=torch.bfloat16)}
    return save_adapter(tmp_path / "a", "probe", w, {}, "fp"), w


def test_checksum_is_written_and_verified(tmp_path):
    path, w = _save(tmp_path)
    meta = json.loads((path / "adapter.json").read_text())
    assert meta["checksum"] == tensors_checksum(w)
    load_adapter(path)  # verifies


def test_bit_flip_is_refused_naming_the_file(tmp_path):
    path, _ = _save(tmp_path)
    f = path / "adapter.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x10  # inside the last tensor's bytes
    f.write_bytes(bytes(data))
    with pytest.raises(AdapterIntegrityError, match="adapter.safetensors.*checksum"):
        load_adapter(path)


def test_truncated_weights_are_refused_naming_the_file(tmp_path):
    path, _ = _save(tmp_path)
    f = path / "adapter.safetensors"
    f.write_bytes(f.read_bytes()[:-20])
    with pytest.raises(AdapterIntegrityError, match=r"adapter\.safetensors: cannot read"):
        load_adapter(path)


def test_adapter_without_checksum_loads_with_a_warning(tmp_path, caplog):
    path, w = _save(tmp_path)
    meta = json.loads((path / "adapter.json").read_text())
    del meta["checksum"]
    (path / "adapter.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        _, tensors = load_adapter(path)
    assert "no checksum" in caplog.text and torch.equal(tensors["head.weight"], w["head.weight"])
