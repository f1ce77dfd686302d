"""The DVC pipeline on a copy of the checkout: stages wired to params, a rerun is a no-op, and a
changed tokenize param reruns tokenize only (extract stays cached)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).with_name("dvc")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, **GIT_ENV, "PATH": f"{DVC.parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git checkout holding the committed tree (what a user clones), with DVC ready."""
    dst = tmp_path_factory.mktemp("clone") / "repo"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    _run(["git", "init", "-q"], dst)
    _run(["git", "add", "-A"], dst)
    _run(["git", "commit", "-qm", "snapshot"], dst)
    return dst


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
