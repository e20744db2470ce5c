"""The core imports nothing outside the core lock, and a missing extra is named by the import
that needs it (`dsa.extras`). A venv with the core only: tests/integration/test_core_install.py."""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from dsa.extras import MissingExtra, needs_extra
from tests.unit.test_lock import read_lock

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
# what `from dsa.runtime import SafetyModel` users and the `dsa` command's parser load
CORE = "import dsa, dsa.base, dsa.taps, dsa.runtime, dsa.guards.bank, dsa.serve, dsa.cli; dsa.cli.build_parser()"
OPPORTUNISTIC = {"dill"}  # `import torch` loads it when it is installed (here: lm-eval's datasets)


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_core_imports_only_core_lock_packages():
    loaded = json.loads(_run(f"{CORE}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"))
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    core = set(read_lock(ROOT / "requirements-core-lock.txt"))
    outside = {m: dists[m]
               for m in {m.partition(".")[0] for m in loaded} - set(sys.stdlib_module_names) - {"dsa"} - OPPORTUNISTIC
               if m in dists and not any(canonicalize_name(d) in core for d in dists[m])}
    assert not outside, f"the core imports packages outside requirements-core-lock.txt: {outside}"


# (import, a module of the extra made unimportable, the extra the error must name)
CASES = [("dsa.serve.app", "fastapi", "serve"), ("from dsa.serve import serve; serve(None)", "uvicorn", "serve"),
         ("dsa.train", "accelerate", "train"), ("dsa.guards.train", "accelerate", "train"),
         ("dsa.recipes.sft", "accelerate", "train"), ("dsa.eval.lm_eval_model", "lm_eval", "eval"),
         ("dsa.vllm.rows", "vllm", "vllm"), ("dsa.vllm.model", "vllm", "vllm"),
         ("from dsa.extras import pyplot; pyplot()", "matplotlib", "plots")]


def test_missing_extra_is_named_at_import():
    """Each case in a fresh interpreter whose import of the extra's module fails as if not installed."""
    script = ["import importlib, json, sys", "out = []"]
    for stmt, blocked, _ in CASES:
        code = stmt if " " in stmt else f"importlib.import_module({stmt!r})"
        script += [f"sys.modules[{blocked!r}] = None",
                   "try:", f"    {code}", "    out.append(None)",
                   "except ModuleNotFoundError as err:", "    out.append([type(err).__name__, str(err)])",
                   f"del sys.modules[{blocked!r}]",
                   "for m in [m for m in sys.modules if m.startswith(('dsa.', 'accelerate', 'lm_eval'))]:",
                   "    del sys.modules[m]"]
    script.append("print(json.dumps(out))")
    results = json.loads(_run("\n".join(script)))
    for (stmt, blocked, extra), got in zip(CASES, results, strict=True):
        assert got is not None, f"{stmt} imported without {blocked}"
        kind, message = got
        assert (kind == "MissingExtra"
                and f"needs the [{extra}] extra: pip install 'dsa[{extra}]'" in message), (stmt, got)


def test_needs_extra_keeps_other_errors_and_the_module_name():
    with pytest.raises(MissingExtra, match=r"^dsa's thing needs the \[serve\] extra") as err:
        with needs_extra("serve", "thing"):
            import dsa_no_such_module  # noqa: F401
    assert err.value.name == "dsa_no_such_module" and isinstance(err.value, ImportError)
    with pytest.raises(ValueError), needs_extra("serve", "thing"):
        raise ValueError


def test_every_extra_named_in_the_code_is_in_pyproject_and_dev_has_all_but_vllm():
    named = {m for f in (ROOT / "src/dsa").rglob("*.py")
             for m in re.findall(r"needs_extra\(\"(\w+)\"", f.read_text())}
    assert named and named <= set(EXTRAS), named - set(EXTRAS)
    dev = next(r for r in EXTRAS["dev"] if r.startswith("dsa["))
    assert set(dev[4:-1].split(",")) == set(EXTRAS) - {"dev", "vllm"}, dev
