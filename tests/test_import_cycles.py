"""No import cycle inside biomed_llama/, counting imports inside functions too (issue 22, item 5).

A function-level import hides a cycle from Python (it runs after both modules are loaded), but the
two modules still cannot be understood, tested or moved apart one without the other: eval/harness.py
and eval/prepare.py were such a pair until eval/plan.py took the planning both need. The graph is
read from the source (AST), so a cycle is caught whether or not any test happens to import it.

Counted: every `import` / `from … import` anywhere in a module (top level, functions, classes),
relative imports resolved. Not counted: imports under `if TYPE_CHECKING:` (never executed, they
exist for the type checker only) and the implicit import of a parent package's `__init__` (a
package importing its own submodules in `__init__`, as cli/ does to register commands, is not a
cycle between modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name → file of every module of the package at `root` (`pkg/__init__.py` → `pkg`)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import node of `tree`, anywhere, except those under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)  # the `else:` branch does run
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of dotted `name` that is a module of the package (None: outside it)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the package's modules it imports (see the module docstring for what counts)."""
    modules = module_files(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: `from ..x import y` climbs level-1 packages above this one
                    anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from pkg import sub` imports the submodule `pkg.sub` when there is one, else names of `pkg`
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != mod:
                    graph[mod].add(resolved)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each one or more cycles), sorted (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "pkg"


def test_biomed_llama_has_no_import_cycle():
    graph = import_graph(REPO / "biomed_llama")
    # the graph is the package's: eval/run.py imports harness, which imports the planning module
    assert {"biomed_llama.eval.harness", "biomed_llama.eval.plan"} <= graph["biomed_llama.eval.run"] | \
        graph["biomed_llama.eval.harness"]
    found = cycles(graph)
    assert not found, "import cycles in biomed_llama/ (move what both sides need into a module both import): " + \
        "; ".join(" <-> ".join(c) for c in found)


def test_detects_a_cycle_through_a_function_level_import(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/harness.py": "from pkg.sub.prepare import task_name\n",
        "pkg/sub/prepare.py": "def f():\n    from pkg.sub import harness\n    return harness\n",
        "pkg/other.py": "import pkg.sub.prepare\n",
    })
    assert cycles(import_graph(pkg)) == [["pkg.sub.harness", "pkg.sub.prepare"]]


def test_resolves_relative_imports_and_ignores_type_checking(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "from pkg import a  # a package importing its submodule: not a cycle\n",
        "pkg/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n"
                    "else:\n    import json\nfrom . import c\n",
        "pkg/b.py": "from pkg.a import A\n",
        "pkg/c.py": "class C:\n    def m(self):\n        from . import b\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/d.py": "def f():\n    from ..a import x\n    from .. import b\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg"] == {"pkg.a"} and graph["pkg.a"] == {"pkg.c"} and graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.c"] == {"pkg.b"} and graph["pkg.sub.d"] == {"pkg.a", "pkg.b"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
