"""The DVC pipeline: stages wired to params, data deps that follow the profile, and, on a copy of the
checkout, a rerun is a no-op and a changed tokenize param reruns tokenize only (extract stays cached)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from biomed_llama.config import load_params
from tests.helpers import REPO
from tests.helpers.dvc import DVC, copy_checkout
from tests.helpers.dvc import run as _run_proc


def _run(cmd: list[str], cwd: Path) -> str:
    out = _run_proc(cmd, cwd)
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git checkout holding the committed tree (what a user clones), with DVC ready."""
    return copy_checkout(tmp_path_factory.mktemp("clone") / "repo")


def test_every_stage_reads_its_params_and_the_lock() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        assert body["cmd"].startswith("biomed-llama "), name
        assert "requirements/cpu.lock" in body["deps"], f"{name}: the lock is not a dependency"
        assert body.get("params"), f"{name}: no params wired"


def test_dvc_is_offline_and_quiet() -> None:
    cfg = (REPO / ".dvc" / "config").read_text()
    assert "analytics = false" in cfg
    assert "site_cache_dir = .dvc/site-cache" in cfg


def _resolved_deps(tmp: Path, profile: Path) -> dict[str, list[str]]:
    """Stage → its deps as DVC resolves dvc.yaml with `profile` as params.yaml (no git needed)."""
    from dvc.repo import Repo

    (tmp / ".dvc").mkdir(parents=True)
    (tmp / ".dvc" / "config").write_text("[core]\n    no_scm = true\n    analytics = false\n")
    shutil.copy(REPO / "dvc.yaml", tmp / "dvc.yaml")
    shutil.copy(profile, tmp / "params.yaml")
    with Repo(str(tmp)) as repo:
        return {s.addressing.rpartition(":")[2]: [d.def_path for d in s.deps] for s in repo.index.stages}


@pytest.mark.parametrize("profile", ["params.yaml", "configs/paper.yaml"])
def test_data_deps_follow_the_profile(tmp_path: Path, profile: str) -> None:
    deps = _resolved_deps(tmp_path, REPO / profile)
    p = load_params(REPO / profile)
    want = {
        "extract": [p.inputs.pile], "tokenize": [p.tokenize.input, p.tokenize.tokenizer],
        "pretrain": [p.pretrain.tokens, p.pretrain.tokenizer], "instruct-mix": [p.inputs.instruct],
        "finetune-instruct": [p.finetune.mixture, p.finetune.model],
        **{f"finetune-task@{t}": [f"{p.inputs.instruct}/{t}", p.finetune.model] for t in ("medqa", "medmcqa", "pubmedqa")},
        "finetune-instruct-base": [p.finetune.mixture, p.finetune.base.model],
        **{f"finetune-task-base@{t}": [f"{p.inputs.instruct}/{t}", p.finetune.base.model]
           for t in ("medqa", "medmcqa", "pubmedqa")},
        "prepare-eval": [p.inputs.benchmarks, p.eval.benchmarks.pile_extracted],
        "contamination": [p.contamination.input, p.inputs.benchmarks],
        "evaluate": [p.eval.output, p.contamination.output],
    }
    assert set(deps) == set(want)
    for stage, paths in want.items():
        assert set(paths) <= set(deps[stage]), (stage, deps[stage])
    if p.profile != "demo":
        assert not [d for ds in deps.values() for d in ds if d.startswith("data/sample")]


@pytest.mark.integration
def test_rerun_is_a_noop_and_a_tokenize_param_reruns_tokenize_only(checkout: Path) -> None:
    first = _run([str(DVC), "repro", "tokenize"], checkout)
    assert "Running stage 'extract'" in first and "Running stage 'tokenize'" in first
    for out in ("data/extracted", "data/tokens"):
        _run([sys.executable, "-m", "biomed_llama", "verify", out], checkout)
    again = _run([str(DVC), "repro", "tokenize"], checkout)
    assert "Running stage" not in again
    params = yaml.safe_load((checkout / "params.yaml").read_text())
    params["tokenize"]["batch_size"] = params["tokenize"]["batch_size"] + 1
    (checkout / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = _run([str(DVC), "repro", "tokenize"], checkout)
    assert "Running stage 'tokenize'" in changed
    assert "Running stage 'extract'" not in changed
    assert not (checkout / ".dvc" / "site-cache").is_relative_to(Path("/var/tmp"))
