"""dsa's modules import downward: no import cycles, and no module imports one of a higher layer;
and no module is over MAX_MODULE_LINES lines (issue #24: small modules, one concept each).

The graph is static, read from the source of the `dsa` that Python would import (so
`PYTHONPATH=other/src` checks another tree): every `import` / `from` statement, those inside
functions too (a deferred import is still a dependency, and a cycle through one still couples the
modules), `if TYPE_CHECKING:` blocks left out (annotations only). `from pkg import name` is an
edge to `pkg.name` when that is a module, else to `pkg` (its `__init__`).

    python tests/unit/test_layering.py [SRC]   # prints the cycles and the upward imports
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections import deque
from pathlib import Path

MAX_MODULE_LINES = 400  # lines of a .py file under src/dsa (data files, e.g. JSON prompt lists, are not modules)

# Lowest first. A module may import modules of its own layer and of the layers below; `dsa` alone
# is the package's `__init__`, every other entry covers its submodules too.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaves", ("dsa.extras", "dsa.config", "dsa.metrics", "dsa.plots", "dsa.kvcache", "dsa.normalise",
                "dsa.adapter_io", "dsa.docblock", "dsa.probe_fit")),
    ("core", ("dsa", "dsa.taps", "dsa.base", "dsa.features", "dsa.data", "dsa.train")),
    ("runtime parts", ("dsa.guards", "dsa.align", "dsa.decoding")),
    ("runtime", ("dsa.runtime", "dsa.chunked_prefill")),
    ("serving", ("dsa.serve", "dsa.vllm", "dsa.bench")),
    ("recipes", ("dsa.recipes", "dsa.eval", "dsa.analysis")),
    ("cli", ("dsa.cli",)),
]


def source_root() -> Path:
    """The folder holding the `dsa` package that `import dsa` would load (not executed here)."""
    return Path(importlib.util.find_spec("dsa").origin).parent.parent


def modules(src: Path) -> dict[str, tuple[Path, bool]]:
    """{dotted name: (file, is a package)} of every module of src/dsa."""
    out = {}
    for path in sorted((src / "dsa").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_nodes(node: ast.AST):
    """Every Import / ImportFrom under `node`, at any depth, outside `if TYPE_CHECKING:` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child.test):
            for other in child.orelse:
                yield from import_nodes(ast.Module(body=[other], type_ignores=[]))
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from import_nodes(child)


def import_graph(src: Path) -> dict[str, set[str]]:
    """{module: the dsa modules it imports} (itself left out)."""
    mods = modules(src)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rpartition(".")[0]
        for node in import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the package, one level up per extra dot
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                while target and target not in mods:  # dsa.x.y.attr -> dsa.x.y; not dsa's -> ""
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def components(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan): the modules of each
    import one another, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through each component of `components`, as a path [a, b, ..., a]."""
    out = []
    for comp in components(graph):
        start = min(comp)
        prev: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:  # breadth first inside the component, back to `start`
            v = queue.popleft()
            if start in graph[v]:
                path = [start]
                while v is not None:
                    path.append(v)
                    v = prev[v]
                out.append(path[::-1])
                break
            for w in sorted(graph[v] & comp):
                if w not in prev:
                    prev[w] = v
                    queue.append(w)
    return out


def layer_of(module: str) -> int | None:
    """The index in `LAYERS` of the longest entry covering `module`, or None."""
    best, depth = None, -1
    for i, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            covers = module == entry or (entry != "dsa" and module.startswith(entry + "."))
            if covers and entry.count(".") > depth:
                best, depth = i, entry.count(".")
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a (layer) imports b (higher layer)' for every edge that goes up."""
    out = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            la, lb = layer_of(a), layer_of(b)
            if la is not None and lb is not None and lb > la:
                out.append(f"{a} ({LAYERS[la][0]}) imports {b} ({LAYERS[lb][0]})")
    return out


def test_the_graph_reads_deferred_relative_imports_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "dsa"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("X = 1\n")
    (pkg / "typed.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from dsa.sub.a import f\n")
    (pkg / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nimport os\n"
        "if TYPE_CHECKING:\n    from dsa import typed\nelse:\n    pass\n"
        "def f():\n    from ..low import X\n    from . import b\n    return X, b\n")
    (pkg / "sub" / "b.py").write_text("import dsa.sub.a\n")
    graph = import_graph(tmp_path)
    assert graph["dsa.sub.a"] == {"dsa.low", "dsa.sub.b"}  # not dsa.typed, not os
    assert graph["dsa.sub"] == {"dsa.sub.a"}
    assert cycles(graph) == [["dsa.sub.a", "dsa.sub.b", "dsa.sub.a"]]


def test_an_upward_import_names_both_modules_and_their_layers():
    graph = {"dsa.metrics": {"dsa.runtime"}, "dsa.runtime": {"dsa.guards.bank"}, "dsa.guards.bank": set()}
    assert upward_imports(graph) == ["dsa.metrics (leaves) imports dsa.runtime (runtime)"]
    assert layer_of("dsa") == 1 and layer_of("dsa.guards.kinds.window") == 2 and layer_of("dsa_other") is None


def test_every_module_has_a_layer():
    missing = [m for m in import_graph(source_root()) if layer_of(m) is None]
    assert not missing, f"modules in no layer of LAYERS (add them where they belong): {missing}"


def test_no_import_cycles():
    found = cycles(import_graph(source_root()))
    assert not found, "import cycles between dsa's modules:\n" + "\n".join(" -> ".join(c) for c in found)


def test_imports_go_down_the_layers():
    up = upward_imports(import_graph(source_root()))
    assert not up, "imports of a higher layer:\n" + "\n".join(up)


def long_modules(src: Path, limit: int = MAX_MODULE_LINES) -> dict[str, int]:
    """{module: its line count} of every module of src/dsa over `limit` lines."""
    counts = {m: len(path.read_text().splitlines()) for m, (path, _) in modules(src).items()}
    return {m: n for m, n in sorted(counts.items()) if n > limit}


def test_the_line_count_reads_every_module_and_only_modules(tmp_path):
    pkg = tmp_path / "dsa"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "long.py").write_text("x = 1\n" * 5)
    (pkg / "short.py").write_text("x = 1\n" * 4)
    (pkg / "prompts.json").write_text("[]\n" * 50)
    assert long_modules(tmp_path, limit=4) == {"dsa.long": 5}


def test_no_module_is_over_the_line_limit():
    long = long_modules(source_root())
    assert not long, (f"modules over {MAX_MODULE_LINES} lines (split them along a real seam, one concept each): "
                      f"{long}")


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else source_root()
    graph = import_graph(src)
    found, up = cycles(graph), upward_imports(graph)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} imports, {len(found)} import cycles "
          f"(modules in each: {[len(c) for c in components(graph)]}), {len(up)} upward imports")
    for c in found:
        print("cycle:", " -> ".join(c))
    for u in up:
        print("up:", u)
    for m, n in long_modules(src).items():
        print(f"long: {m} ({n} lines > {MAX_MODULE_LINES})")
