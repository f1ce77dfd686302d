"""`make lint` (issue 22, item 7): ruff's rules, ruff's format check and mypy, pinned, run by CI before the tests."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from biomed_llama.env_check import read_lock


def _recipe(makefile: str, target: str) -> str:
    m = re.search(rf"^{target}:[^\n]*\n((?:\t.*\n?)+)", makefile, re.M)
    assert m, f"Makefile has no {target} target"
    return m.group(1)


def test_make_lint_runs_ruff_format_check_and_mypy(repo_root: Path) -> None:
    makefile = (repo_root / "Makefile").read_text()
    assert re.search(r"^lint: install$", makefile, re.M), "lint must build .venv from the lock first"
    recipe = _recipe(makefile, "lint")
    assert "ruff check" in recipe and "ruff format --check" in recipe and "mypy" in recipe
    assert "ruff format " not in recipe.replace("ruff format --check", ""), "lint must never rewrite files"
    # Every tool runs and any failure fails the target (a failed ruff must not hide mypy's findings, nor pass).
    assert "|| rc=1" in recipe and "exit $$rc" in recipe


def test_ci_lints_before_the_tests(repo_root: Path) -> None:
    steps = [ln.strip() for ln in (repo_root / ".ci/run").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert "make lint" in steps
    assert steps.index("make lint") < steps.index("make test")


def test_lint_tools_are_configured_and_pinned(repo_root: Path) -> None:
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    tool = pyproject["tool"]
    assert tool["ruff"]["line-length"] == 120 and "format" in tool["ruff"]
    assert {"E", "F", "W", "I", "B", "UP", "SIM"} <= set(tool["ruff"]["lint"]["select"])
    assert tool["mypy"]["files"] == ["biomed_llama"]
    # Only third-party modules may be typed as Any; the package itself is checked.
    ignored = [m for o in tool["mypy"].get("overrides", []) if o.get("ignore_missing_imports") for m in o["module"]]
    assert ignored and not [m for m in ignored if m.split(".")[0] == "biomed_llama"]
    lock = read_lock(repo_root / "requirements/cpu.lock")
    assert {"ruff", "mypy", "types-pyyaml"} <= lock.keys(), "the lint tools must be pinned in the lock"
