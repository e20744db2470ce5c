"""One version: pyproject.toml, `dsa.__version__`, `dsa --version` and the newest CHANGELOG heading."""

import re
import tomllib
from pathlib import Path

import pytest

import dsa
from dsa.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_version_is_the_same_everywhere(capsys):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert dsa.__version__ == version
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"dsa {version}"
    # the newest released heading (an "Unreleased" section above it collects what is not released yet)
    newest = re.search(r"^## (?!Unreleased)(\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert newest and newest.group(1) == version, "CHANGELOG.md's newest heading is not the version"
