#!/usr/bin/env python
"""Derive each DVC stage's code dependencies from the source; write them into dvc.yaml or check them.

A stage's code deps are every file of `biomed_llama` that can change what its command computes:

- the static import closure of the CLI function the stage's `cmd` runs (`biomed-llama CMD`, or
  `biomed-llama launch CMD`, which runs CMD): the command's own imports and its module's top-level
  imports, then every `import` of each module reached, at module level or inside a function (the
  package imports lazily), plus every string constant naming a `biomed_llama.…` module (the
  generated task `utils.py`, `python -c` command lines), plus the `__init__.py` of each package
  on the way (Python runs them). The CLI package's own `__init__` only registers every command;
  its imports are not followed, since which command runs is the stage's choice. Nor are the root
  config's (`biomed_llama.config`, which imports every section's model to validate the whole params
  file): the CLI passes a stage only its own sections, whose models the stage's modules import
  themselves. A module reached from a stage's command other than the CLI's that imports the root
  config is an error (DESIGN contract 11: no stage imports the root config).
  `launch` itself is not followed: where a stage runs does not change what it computes.
- the package data those modules name: a file or folder beside a module (or inside a package a
  module names) whose name appears as a string constant in it, e.g. `eval/tasks`, `paper_values.json`.

Usage (from the repository root, after moving or adding modules):

    python scripts/stage_deps.py --write   # rewrite the `biomed_llama/…` deps of every stage
    python scripts/stage_deps.py --check   # exit 1 naming each stage whose deps differ

Only the `biomed_llama/…` items of a stage's `deps:` list are touched; the other items (the lock,
data) and every other line of dvc.yaml stay as written.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "biomed_llama"
CLI = f"{PACKAGE}.cli"
ROOT_CONFIG = f"{PACKAGE}.config"
LAUNCH = "launch"
MODULE_STRING = re.compile(rf"\b{PACKAGE}(?:\.[A-Za-z_]\w*)+")
NOT_DATA = {"__pycache__"}


@dataclass
class Module:
    """One parsed module of the package: its dotted name, file, syntax tree and string constants."""

    name: str
    path: Path
    tree: ast.Module
    strings: set[str] = field(default_factory=set)

    @property
    def is_package(self) -> bool:
        """Whether this is a package's `__init__.py`."""
        return self.path.name == "__init__.py"

    @property
    def package(self) -> str:
        """The package the module lives in (itself for a package)."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


class Source:
    """The package's modules, parsed on demand (dotted name → Module, or None outside the package)."""

    def __init__(self, root: Path = REPO):
        self.root = root
        self._cache: dict[str, Module | None] = {}

    def file_of(self, name: str) -> Path | None:
        """The file of module `name` (`a/b.py` or `a/b/__init__.py`), or None if it is no package module."""
        if name != PACKAGE and not name.startswith(PACKAGE + "."):
            return None
        base = self.root.joinpath(*name.split("."))
        for p in (base.with_suffix(".py"), base / "__init__.py"):
            if p.is_file():
                return p
        return None

    def get(self, name: str) -> Module | None:
        """Parse module `name` once; None when it is not a module of the package."""
        if name not in self._cache:
            path = self.file_of(name)
            mod = None
            if path is not None:
                tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
                mod = Module(name, path, tree, {n.value for n in _strings(tree)})
            self._cache[name] = mod
        return self._cache[name]

    def rel(self, path: Path) -> str:
        """`path` relative to the repository root, POSIX style (as dvc.yaml lists it)."""
        return path.relative_to(self.root).as_posix()


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes under `tree` (prose: a module named there is not used).

    Every string that stands alone as a statement is prose: the docstrings of modules, classes and
    functions, and the attribute docstrings under a field (pydantic's `use_attribute_docstrings`).
    """
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def _strings(tree: ast.AST) -> list[ast.Constant]:
    """The string constants under `tree` that are code, not docstrings."""
    docs = _docstrings(tree)
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def _absolute(mod: Module, node: ast.ImportFrom) -> str:
    """The absolute module a `from … import` statement imports from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    parts = mod.package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def imported(src: Source, mod: Module, nodes: list[ast.AST]) -> set[str]:
    """Package modules imported by the statements under `nodes` (any depth), or named by their strings."""
    out: set[str] = set()
    for top in nodes:
        for node in ast.walk(top):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(mod, node)
                out.add(base)
                # `from pkg import sub` imports the submodule `pkg.sub` when there is one.
                out.update(f"{base}.{a.name}" for a in node.names if src.get(f"{base}.{a.name}"))
        for node in _strings(top):
            out.update(_longest_module(src, m) for m in MODULE_STRING.findall(node.value))
    return {name for name in out if name and src.get(name)}


def _longest_module(src: Source, dotted: str) -> str:
    """`biomed_llama.eval.v03_model.cli` → `biomed_llama.eval.v03_model` (drop trailing attributes)."""
    parts = dotted.split(".")
    while parts and src.get(".".join(parts)) is None:
        parts.pop()
    return ".".join(parts)


def parents(name: str) -> list[str]:
    """The packages Python initialises before `name`: `a.b.c` → [`a`, `a.b`]."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def package_data(src: Source, mod: Module) -> set[str]:
    """Non-Python files or folders of the packages `mod` lives in or names, that `mod` names by a string."""
    packages = {mod.package} | {_longest_module(src, m) for s in mod.strings for m in MODULE_STRING.findall(s)}
    out = set()
    for pkg in packages:
        pkg_mod = src.get(pkg)
        if pkg_mod is None or not pkg_mod.is_package:
            continue
        for entry in pkg_mod.path.parent.iterdir():
            if (entry.suffix == ".py" or entry.name in NOT_DATA or (entry / "__init__.py").is_file()
                    or entry.name not in mod.strings):
                continue  # code (modules, sub-packages) or a name the module does not use
            out.add(src.rel(entry))
    return out


def command_functions(src: Source) -> dict[str, tuple[str, str]]:
    """CLI command name → (module, function), read from the `@app.command(…)` decorators in cli/."""
    out = {}
    for path in sorted((src.root / PACKAGE / "cli").glob("*.py")):
        mod = src.get(f"{CLI}.{path.stem}") if path.stem != "__init__" else None
        for node in mod.tree.body if mod else []:
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                if (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute) and dec.func.attr == "command"
                        and isinstance(dec.func.value, ast.Name) and dec.func.value.id == "app"):
                    name = dec.args[0].value if dec.args else node.name.replace("_", "-")
                    out[name] = (mod.name, node.name)
    return out


def command_of(stage: str, cmd: str) -> str:
    """The `biomed-llama` command a stage's `cmd` runs (`launch X` runs command X)."""
    words = shlex.split(cmd)
    if "biomed-llama" not in words:
        raise SystemExit(f"stage {stage}: cmd {cmd!r} does not run biomed-llama")
    args = [w for w in words[words.index("biomed-llama") + 1:] if not w.startswith("-")]
    if args and args[0] == LAUNCH:
        args = args[1:]
    if not args:
        raise SystemExit(f"stage {stage}: cmd {cmd!r} names no command")
    return args[0]


def closure(src: Source, module: str, function: str) -> list[str]:
    """Sorted repo-relative files (modules and package data) that command `module:function` can use."""
    start = src.get(module)
    fn = next(n for n in start.tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    top_level = [n for n in start.tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    todo = [*imported(src, start, top_level + [fn]), *parents(module)]
    seen = {module}
    files = {src.rel(start.path)} | package_data(src, start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        mod = src.get(name)
        files.add(src.rel(mod.path))
        if name in (CLI, ROOT_CONFIG):  # the command registry and the root config: see the module docstring
            continue
        files |= package_data(src, mod)
        deps = imported(src, mod, [mod.tree])
        if ROOT_CONFIG in deps and not name.startswith(CLI + "."):
            raise SystemExit(f"{mod.path.relative_to(src.root)} imports {ROOT_CONFIG}: a stage module takes its "
                             "own sections from the CLI (DESIGN contract 11)")
        todo += [*deps, *parents(name)]
    return sorted(files)


def stage_commands(dvc_yaml: Path) -> dict[str, str]:
    """Stage name → cmd, from dvc.yaml (a `foreach` stage's `do.cmd`)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: body.get("do", body)["cmd"] for name, body in stages.items()}


def expected_deps(src: Source, dvc_yaml: Path) -> dict[str, list[str]]:
    """Stage name → the code deps it should list (the closure of the command it runs)."""
    commands = command_functions(src)
    out = {}
    for stage, cmd in stage_commands(dvc_yaml).items():
        name = command_of(stage, cmd)
        if name not in commands:
            raise SystemExit(f"stage {stage}: `biomed-llama {name}` is no command of {CLI}")
        out[stage] = closure(src, *commands[name])
    return out


def listed_deps(dvc_yaml: Path) -> dict[str, list[str]]:
    """Stage name → the `biomed_llama/…` items of its deps in dvc.yaml as written."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: [d for d in body.get("do", body).get("deps", []) if isinstance(d, str) and d.startswith(PACKAGE + "/")]
            for name, body in stages.items()}


def check(dvc_yaml: Path, src: Source | None = None) -> list[str]:
    """One line per stage whose listed code deps differ from its closure (missing and stale items)."""
    want = expected_deps(src or Source(), dvc_yaml)
    have = listed_deps(dvc_yaml)
    problems = []
    for stage, files in want.items():
        missing = sorted(set(files) - set(have[stage]))
        stale = sorted(set(have[stage]) - set(files))
        if missing:
            problems.append(f"{stage}: deps omit {', '.join(missing)}")
        if stale:
            problems.append(f"{stage}: deps list {', '.join(stale)}, which it does not import")
    return problems


_STAGE = re.compile(r"^  (\S[^:]*):\s*$")
_DEPS = re.compile(r"^(\s+)deps:\s*$")
_ITEM = re.compile(r"^(\s+)- (.*?)\s*$")


def rewrite(text: str, want: dict[str, list[str]]) -> str:
    """dvc.yaml text with each stage's `biomed_llama/…` deps replaced by `want[stage]` (in place of the first)."""
    lines, out, stage, i = text.splitlines(keepends=True), [], None, 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if m := _STAGE.match(line):
            stage = m.group(1)
        if not (_DEPS.match(line) and stage in want):
            continue
        items = []
        while i < len(lines) and (m := _ITEM.match(lines[i])) and len(m.group(1)) > len(_DEPS.match(line).group(1)):
            items.append((m.group(1), m.group(2)))
            i += 1
        indent = items[0][0] if items else _DEPS.match(line).group(1) + "  "
        kept = [v for _, v in items if not v.startswith(PACKAGE + "/")]
        at = next((k for k, (_, v) in enumerate(items) if v.startswith(PACKAGE + "/")), min(1, len(kept)))
        new = kept[:at] + want[stage] + kept[at:]
        out += [f"{indent}- {v}\n" for v in new]
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    """`--write` rewrites dvc.yaml's code deps; `--check` exits 1 naming every stage that differs."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the biomed_llama/… deps in dvc.yaml")
    mode.add_argument("--check", action="store_true", help="exit 1 if any stage's deps differ from its closure")
    ap.add_argument("--dvc-yaml", type=Path, default=REPO / "dvc.yaml")
    args = ap.parse_args(argv)
    if args.check:
        problems = check(args.dvc_yaml)
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print("run `python scripts/stage_deps.py --write` to regenerate", file=sys.stderr)
        return 1 if problems else 0
    text = args.dvc_yaml.read_text()
    new = rewrite(text, expected_deps(Source(), args.dvc_yaml))
    if new != text:
        args.dvc_yaml.write_text(new)
    print(f"{args.dvc_yaml}: code deps {'rewritten' if new != text else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
