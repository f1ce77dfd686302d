"""dvc.yaml's code deps: every stage lists exactly the package files its command can import or read."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import stage_deps as S
from tests.helpers import REPO


@pytest.fixture(scope="module")
def closures() -> dict[str, list[str]]:
    return S.expected_deps(S.Source(), REPO / "dvc.yaml")


def test_every_stage_lists_its_import_closure():
    assert S.check(REPO / "dvc.yaml") == [], "run `python scripts/stage_deps.py --write`"
    assert S.main(["--check"]) == 0


def test_a_stage_whose_deps_omit_an_imported_module_fails(tmp_path: Path):
    good = (REPO / "dvc.yaml").read_text()
    assert next(iter(S.stage_commands(REPO / "dvc.yaml"))) == "extract"
    # The first stage, extract, validates its params with data/config.py; drop that line from it only.
    broken = good.replace("      - biomed_llama/data/config.py\n", "", 1)
    assert broken != good
    (tmp_path / "dvc.yaml").write_text(broken)
    assert S.check(tmp_path / "dvc.yaml") == ["extract: deps omit biomed_llama/data/config.py"]
    assert S.main(["--check", "--dvc-yaml", str(tmp_path / "dvc.yaml")]) == 1
    # A stale item is named too, and --write restores the file exactly.
    (tmp_path / "dvc.yaml").write_text(good.replace("      - biomed_llama/data/scan.py\n",
                                                    "      - biomed_llama/data/scan.py\n      - biomed_llama/cli/show.py\n", 1))
    assert S.check(tmp_path / "dvc.yaml") == ["extract: deps list biomed_llama/cli/show.py, which it does not import"]
    (tmp_path / "dvc.yaml").write_text(broken)
    assert S.main(["--write", "--dvc-yaml", str(tmp_path / "dvc.yaml")]) == 0
    assert (tmp_path / "dvc.yaml").read_text() == good


def test_closures_hold_what_the_hand_written_lists_missed(closures):
    assert "biomed_llama/data/config.py" in closures["extract"]
    assert "biomed_llama/data/tokens.py" in closures["pretrain"]
    assert "biomed_llama/eval/packed_lm.py" in closures["evaluate"]  # imported inside a function
    # named only inside the `utils.py` that prepare-eval generates for lm-eval
    assert "biomed_llama/eval/task_utils.py" in closures["prepare-eval"]
    # package data, named by the modules that read it
    assert "biomed_llama/eval/tasks" in closures["prepare-eval"]
    assert "biomed_llama/eval/paper_values.json" in closures["evaluate"]


def test_closures_leave_out_what_the_stage_cannot_run(closures):
    for stage, files in closures.items():
        assert "biomed_llama/launch/commands.py" not in files, stage  # where a stage runs, not what it computes
        assert "biomed_llama/cli/show.py" not in files, stage  # another command's module
    assert "biomed_llama/train/pretrain.py" not in closures["instruct-mix"]
    assert "biomed_llama/train/finetune.py" not in closures["pretrain"]  # named in a docstring only


@pytest.mark.parametrize("cmd, command", [
    ("biomed-llama extract", "extract"),
    ("biomed-llama launch pretrain", "pretrain"),
    ("biomed-llama launch finetune --mode task --task ${item}", "finetune"),
])
def test_the_command_a_stage_runs(cmd, command):
    assert S.command_of("s", cmd) == command


def test_every_package_data_file_is_named_by_a_module():
    # The closure finds data files by the names modules use for them: one that no module names
    # would never become a dependency. Markdown files are documentation, read by no stage.
    src = S.Source()
    modules = [src.get(".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"))
               for p in (REPO / "biomed_llama").rglob("*.py")]
    named = set().union(*(S.package_data(src, m) for m in modules))
    for f in (REPO / "biomed_llama").rglob("*"):
        if f.is_file() and f.suffix not in (".py", ".pyc", ".md"):
            rel = f.relative_to(REPO).as_posix()
            assert any(rel == n or rel.startswith(n + "/") for n in named), f"{rel}: no module names it"


def _import_graph(src: S.Source) -> dict[str, set[str]]:
    """Module → the package modules it imports anywhere (top level or inside a function), packages' `__init__` left out."""
    names = [".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
             for p in (REPO / "biomed_llama").rglob("*.py")]
    return {n: {d for d in S.imported(src, src.get(n), [src.get(n).tree]) if d != n and not src.get(d).is_package}
            for n in names if not src.get(n).is_package}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` (as a path that returns to its start), or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str]:
        state[n] = 1
        path.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[n] = 2
        path.pop()
        return []

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return []


def test_the_package_has_no_import_cycle():
    # eval/harness.py and eval/prepare.py once imported each other; both now read eval/plan.py
    graph = _import_graph(S.Source())
    assert _cycle(graph) == []
    assert "biomed_llama.eval.plan" in graph["biomed_llama.eval.prepare"] & graph["biomed_llama.eval.harness"]
    # the check can fail: a planted back-edge is found
    planted = {**graph, "biomed_llama.eval.plan": graph["biomed_llama.eval.plan"] | {"biomed_llama.eval.harness"}}
    found = _cycle(planted)
    assert found[0] == found[-1] and set(found) == {"biomed_llama.eval.harness", "biomed_llama.eval.plan"}


def test_a_stage_depends_on_no_later_stage_s_code(closures):
    later = {
        "extract": ("benchmarks/", "eval/", "instruct/", "train/", "model/"),
        "tokenize": ("benchmarks/", "eval/", "instruct/", "train/", "model/"),
        "pretrain": ("benchmarks/", "eval/", "instruct/", "train/finetune.py"),
        "instruct-mix": ("eval/", "train/", "model/", "data/"),
        "prepare-eval": ("train/", "eval/harness.py", "eval/run.py", "eval/generate.py"),
    }
    for stage, prefixes in later.items():
        found = [f for f in closures[stage] for p in prefixes if f.startswith("biomed_llama/" + p)]
        assert found == [], stage
    assert "biomed_llama/config.py" in closures["extract"]  # listed (the CLI loads it), its imports not followed


def test_a_stage_module_that_imports_the_root_config_is_refused(tmp_path: Path):
    pkg = tmp_path / "biomed_llama"
    (pkg / "cli").mkdir(parents=True)
    (pkg / "data").mkdir()
    (pkg / "eval").mkdir()
    for init in (pkg, pkg / "cli", pkg / "data", pkg / "eval"):
        (init / "__init__.py").write_text("")
    (pkg / "eval" / "config.py").write_text("")
    (pkg / "config.py").write_text("from biomed_llama.eval.config import EvalConfig\n")  # not followed
    (pkg / "cli" / "data.py").write_text(
        "from biomed_llama.config import Params\n\n@app.command()\ndef extract():\n"
        "    from biomed_llama.data.extract import run\n")
    (pkg / "data" / "extract.py").write_text('"""Reads biomed_llama.eval (a docstring)."""\n\nx = 1\n"""biomed_llama.train"""\n')
    src = S.Source(tmp_path)
    assert S.closure(src, "biomed_llama.cli.data", "extract") == [
        "biomed_llama/__init__.py", "biomed_llama/cli/__init__.py", "biomed_llama/cli/data.py",
        "biomed_llama/config.py", "biomed_llama/data/__init__.py", "biomed_llama/data/extract.py"]
    (pkg / "data" / "extract.py").write_text("def run():\n    from biomed_llama.config import Params\n")
    with pytest.raises(SystemExit, match="data/extract.py imports biomed_llama.config"):
        S.closure(S.Source(tmp_path), "biomed_llama.cli.data", "extract")
