"""Committed results describe the adapters that ship: every weight file a result names under
adapters/ (by `weights_sha256`) still has that content. Retraining or replacing an adapter without
re-measuring what depends on it fails here, not silently in the docs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _recorded(obj, where=""):
    """(where, weight file, sha256) for every weights record in a results document."""
    if isinstance(obj, dict):
        w = obj.get("weights_sha256")
        if isinstance(w, dict):
            yield from ((where, f, h) for f, h in w.items())
        elif isinstance(w, str) and isinstance(obj.get("adapter"), str):
            yield where, f"{obj['adapter']}/adapter.safetensors", w
        for k, v in obj.items():
            yield from _recorded(v, f"{where}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _recorded(v, f"{where}[{i}]")


RECORDS = [(p.name, *r) for p in sorted((ROOT / "results").glob("*.json"))
           for r in _recorded(json.loads(p.read_text()))]


def test_results_record_the_weights_they_measured():
    assert any(f.startswith("adapters/guards/") for _, _, f, _ in RECORDS)
    assert any(f.startswith("adapters/align/") for _, _, f, _ in RECORDS)


SHIPPED = [r for r in RECORDS if r[2].startswith("adapters/")]


@pytest.mark.parametrize(("results", "where", "weights", "sha"), SHIPPED,
                         ids=[f"{r[0]}{r[1]}:{Path(r[2]).parent.name}" for r in SHIPPED])
def test_recorded_weights_are_the_shipped_weights(results, where, weights, sha):
    path = ROOT / weights
    assert path.exists(), f"results/{results} {where} measured {weights}, which no longer ships"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, (
        f"results/{results} {where} was measured on other weights than {weights} ships now: "
        "re-measure it with the command its page names")


def test_every_response_guard_column_names_the_guard_it_read():
    """The alignment table's strongreject_harmful column is a response guard's reading: each row must
    record which guard (path and sha256, checked above) so rows read by different guards are never
    compared unawares (the static rows were read by response_harm v1, the context-dependent ones by v2)."""
    configs = json.loads((ROOT / "results" / "alignment.json").read_text())["configs"]
    unnamed = [name for name, row in configs.items()
               if "strongreject_harmful" in row and not isinstance(row.get("response_guard"), dict)]
    assert not unnamed, f"rows without the response guard their strongreject_harmful read: {unnamed}"
