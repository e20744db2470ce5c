"""One checksum over everything an adapter loads (weights and adapter.json), verified at load:
tampering, truncation or an edited calibration fails loudly, naming the file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dsa.adapter_io import (
    AdapterIntegrityError,
    adapter_checksum,
    load_adapter,
    save_adapter,
    tensors_checksum,
)
from dsa.guards.bank import GuardAdapter
from dsa.guards.kinds import build_head

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "adapter_checksums.py"


def _save(tmp_path, config=None):
    w = {"head.weight": torch.randn(3, 8), "head.bias": torch.zeros(3, dtype=torch.bfloat16)}
    return save_adapter(tmp_path / "a", "probe", w, config or {}, "fp"), w


def _edit(path, change) -> None:
    meta = json.loads((path / "adapter.json").read_text())
    change(meta)
    (path / "adapter.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def test_checksum_is_written_and_verified(tmp_path):
    path, w = _save(tmp_path)
    meta = json.loads((path / "adapter.json").read_text())
    assert meta["checksum"] == adapter_checksum(meta, w)
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


@pytest.mark.parametrize("change", [
    lambda m: m["config"].__setitem__("thresholds", [0.9999]),
    lambda m: m["config"].__setitem__("max_length", 512),
    lambda m: m["config"]["head"].__setitem__("layers", [1]),
    lambda m: m.__setitem__("info", {"languages": ["en", "zh"]}),
    lambda m: m.__setitem__("base_fingerprint", "other"),
])
def test_an_edited_config_field_is_refused_naming_adapter_json(tmp_path, change):
    path, _ = _save(tmp_path, {"thresholds": [0.4], "max_length": 256, "head": {"layers": [1, 2]}})
    _edit(path, change)
    with pytest.raises(AdapterIntegrityError, match=r"adapter\.json: .*changed after the adapter was saved"):
        load_adapter(path)


def _guard(tmp_path) -> Path:
    cfg = {"layers": [1, 2], "poolings": ["mean", "last"]}
    head = build_head("plr", 16, 1, cfg)
    return GuardAdapter("plr", "prompt_safety", "prompt", ["unsafe"], cfg, head, [1.0], [0.5]).save(
        tmp_path / "g", "fp")


def test_a_guard_threshold_edited_to_0_9999_does_not_load(tmp_path):
    path = _guard(tmp_path)
    assert GuardAdapter.load(path, "fp", 16).thresholds == [0.5]
    _edit(path, lambda m: m["config"].__setitem__("thresholds", [0.9999]))
    with pytest.raises(AdapterIntegrityError, match=r"g/adapter\.json: .*adapter_checksums\.py --rehash"):
        GuardAdapter.load(path, "fp", 16)


def test_an_adapter_without_checksum_or_with_a_weights_only_one_is_refused(tmp_path):
    path, w = _save(tmp_path)
    _edit(path, lambda m: m.pop("checksum"))
    with pytest.raises(AdapterIntegrityError, match=r"adapter\.json: no checksum"):
        load_adapter(path)
    _edit(path, lambda m: m.__setitem__("checksum", tensors_checksum(w)))
    with pytest.raises(AdapterIntegrityError, match=r"covers the weights only.*adapter_checksums\.py"):
        load_adapter(path)


def _script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_migration_rehashes_a_weights_only_checksum_and_changes_nothing_else(tmp_path):
    path, w = _save(tmp_path, {"thresholds": [0.4]})
    _edit(path, lambda m: m.__setitem__("checksum", tensors_checksum(w)))
    before = json.loads((path / "adapter.json").read_text())
    r = _script(path)
    assert r.returncode == 0, r.stderr
    after = json.loads((path / "adapter.json").read_text())
    assert {k: v for k, v in after.items() if k != "checksum"} == {k: v for k, v in before.items() if k != "checksum"}
    load_adapter(path)
    assert "verified" in _script(path).stdout  # a second run only verifies


def test_migration_refuses_weights_that_fail_their_old_checksum(tmp_path):
    path, w = _save(tmp_path)
    _edit(path, lambda m: m.__setitem__("checksum", tensors_checksum({**w, "head.bias": w["head.bias"] + 1})))
    r = _script(path)
    assert r.returncode != 0 and "adapter.safetensors" in r.stderr
    with pytest.raises(AdapterIntegrityError):
        load_adapter(path)


def test_rehash_accepts_an_intended_edit(tmp_path):
    path, _ = _save(tmp_path, {"thresholds": [0.4]})
    _edit(path, lambda m: m["config"].__setitem__("thresholds", [0.6]))
    assert _script(path).returncode != 0  # without --rehash an edit is an error
    assert _script("--rehash", path).returncode == 0
    assert load_adapter(path)[0]["config"]["thresholds"] == [0.6]


def test_every_shipped_adapter_passes_its_checksum():
    shipped = sorted(p.parent for p in (ROOT / "adapters").glob("**/adapter.json"))
    assert shipped
    for path in shipped:
        load_adapter(path)
