import json

import pytest
import torch

from dsa.adapter_io import FingerprintMismatch, load_adapter, read_adapter_meta, save_adapter


def test_round_trip(tmp_path):
    w = {"head.weight": torch.randn(3, 8), "head.bias": torch.zeros(3)}
    save_adapter(tmp_path / "a", "probe", w, {"taps": ["layers.1.resid_post"]}, "llama-abc", "tiny")
    meta, tensors = load_adapter(tmp_path / "a", base_fingerprint="llama-abc", kind="probe")
    assert meta["config"] == {"taps": ["layers.1.resid_post"]}
    assert all(torch.equal(tensors[k], w[k]) for k in w)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["adapter.json", "adapter.safetensors"]


def test_other_base_is_refused_naming_both_fingerprints(tmp_path):
    save_adapter(tmp_path / "a", "probe", {"w": torch.ones(1)}, {}, "llama-aaaa", "smollm2")
    with pytest.raises(FingerprintMismatch, match="llama-aaaa.*llama-bbbb"):
        load_adapter(tmp_path / "a", base_fingerprint="llama-bbbb")


def test_wrong_kind_and_missing_files(tmp_path):
    save_adapter(tmp_path / "a", "probe", {"w": torch.ones(1)}, {}, "fp")
    with pytest.raises(ValueError, match="kind is 'probe', expected 'lora'"):
        load_adapter(tmp_path / "a", kind="lora")
    with pytest.raises(FileNotFoundError, match="not a dsa adapter"):
        read_adapter_meta(tmp_path / "nothing")
    (tmp_path / "a" / "adapter.json").write_text("{\n  oops")
    with pytest.raises(ValueError, match="invalid JSON at line 2"):
        read_adapter_meta(tmp_path / "a")
    (tmp_path / "a" / "adapter.json").write_text(json.dumps({"kind": "probe"}))
    with pytest.raises(ValueError, match="missing field 'base_fingerprint'"):
        read_adapter_meta(tmp_path / "a")


def test_failed_save_leaves_previous_adapter_intact(tmp_path):
    save_adapter(tmp_path / "a", "probe", {"w": torch.ones(2)}, {"v": 1}, "fp")
    with pytest.raises(TypeError):
        save_adapter(tmp_path / "a", "probe", {"w": "not a tensor"}, {"v": 2}, "fp")  # type: ignore[dict-item]
    meta, tensors = load_adapter(tmp_path / "a")
    assert meta["config"] == {"v": 1} and torch.equal(tensors["w"], torch.ones(2))
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]
