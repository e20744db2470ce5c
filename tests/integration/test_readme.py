"""The README's Python tour runs as written, and every claim it makes in a `# -> value` comment
holds for the shipped adapters on the real embedded base."""

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"
CLAIM = re.compile(r"^(?P<expr>[^#]+?)\s+# -> (?P<value>.+)$")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_claims_parse():
    claims = [m for block in python_blocks(README.read_text()) for line in block.splitlines()
              if (m := CLAIM.match(line))]
    assert claims, "the README tour states no checkable result"
    for m in claims:
        ast.literal_eval(m["value"].strip())  # every claim is a Python literal


def checked_source(block: str) -> tuple[str, int]:
    """The block with each `expr  # -> value` line turned into an assert of that claim."""
    out, n = [], 0
    for line in block.splitlines():
        m = CLAIM.match(line)
        if m:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}assert ({m['expr'].strip()}) == {m['value'].strip()}, {line.strip()!r}")
            n += 1
        else:
            out.append(line)
    return "\n".join(out), n


def test_readme_python_tour_runs_and_its_claims_hold(real_base, monkeypatch):
    monkeypatch.chdir(README.parent)
    ns: dict = {}
    checked = 0
    for block in python_blocks(README.read_text()):
        src, n = checked_source(block)
        exec(compile(src, str(README), "exec"), ns)  # noqa: S102 - our own README
        checked += n
    assert checked >= 2
