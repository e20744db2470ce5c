"""Engine-free pieces of dsa.vllm: batch bookkeeping, weight names, fingerprint, plugin."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="dsa-in-vLLM tests run in .venv-vllm (scripts/setup-vllm.sh)")
pytestmark = pytest.mark.vllm

from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402

from dsa.adapter_io import read_adapter_meta  # noqa: E402
from dsa.vllm.rows import BatchRows, parse_alignment  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _add(i, key, alignment="auto", n=5):
    return (i, SamplingParams(extra_args={"dsa_request_key": key, "dsa_alignment": alignment}), [1] * n, [])


def test_rows_follow_added_removed_moved():
    rows = BatchRows()
    rows.apply(BatchUpdate(batch_size=3, removed=[], added=[_add(0, "a"), _add(1, "b", 0.5), _add(2, "c")], moved=[]))
    assert [r.key for r in rows.rows] == ["a", "b", "c"]
    assert rows.rows[1].alignment == 0.5
    rows.apply(BatchUpdate(batch_size=2, removed=[0], added=[], moved=[(2, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    assert [r.key for r in rows.rows] == ["c", "b"]
    rows.apply(BatchUpdate(batch_size=2, removed=[], added=[], moved=[(0, 1, MoveDirectionality.SWAP)]))
    assert [r.key for r in rows.rows] == ["b", "c"]
    rows.apply(None)
    assert [r.key for r in rows.rows] == ["b", "c"]


@pytest.mark.parametrize("bad", [1.5, -0.1, "strong", True, float("nan")])
def test_alignment_values_are_checked(bad):
    with pytest.raises(ValueError):
        parse_alignment(bad)
    assert parse_alignment(None) == "auto" and parse_alignment("0.25") == 0.25


def test_tail_weight_names():
    from dsa.vllm.model import _tail_param

    assert _tail_param("layers.2.self_attn.k_proj.weight") == ("dsa_tail.2.self_attn.qkv_proj.weight", "k")
    assert _tail_param("layers.0.mlp.up_proj.weight") == ("dsa_tail.0.mlp.gate_up_proj.weight", 1)
    assert _tail_param("layers.1.mlp.down_proj.weight") == ("dsa_tail.1.mlp.down_proj.weight", None)
    assert _tail_param("norm.weight") == ("dsa_norm.weight", None)


def test_weights_dir_fingerprint_matches_shipped_adapters(base_dir):
    from dsa.vllm.config import fingerprint_dir

    fp = fingerprint_dir(base_dir)
    for p in ["adapters/guards/prompt_safety", "adapters/align/dsa_adapter"]:
        assert read_adapter_meta(REPO / p)["base_fingerprint"] == fp


def test_plugin_entry_point_registers_the_model():
    eps = [e for e in entry_points(group="vllm.general_plugins") if e.name == "dsa"]
    assert eps and eps[0].value == "dsa.vllm:register"
    eps[0].load()()
    from vllm import ModelRegistry

    assert "DSALlamaForCausalLM" in ModelRegistry.get_supported_archs()
