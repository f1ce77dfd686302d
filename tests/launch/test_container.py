"""launch/container.py: the argv that runs a stage inside the image (Apptainer as rendered, podman as rendered)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from biomed_llama.config import load_params
from biomed_llama.errors import UserError
from biomed_llama.launch.commands import STAGES, build, require_container, torchrun_command
from biomed_llama.launch.config import LaunchConfig
from biomed_llama.launch.container import PODMAN_PASS_ENV, container_prefix, git_common_dir


def test_none_is_no_prefix(tmp_path: Path):
    assert container_prefix(LaunchConfig(), workdir=tmp_path, gpu=True) == []
    cmd = torchrun_command(LaunchConfig(), "tokenize", "params.yaml", ["tokenize.workers=1"], workdir=tmp_path)
    assert cmd.argv == [sys.executable, "-m", "biomed_llama", "tokenize", "--params", "params.yaml",
                        "--set", "tokenize.workers=1"]


def test_apptainer_argv_as_rendered(tmp_path: Path):
    cfg = LaunchConfig(container="apptainer", image="/img/biomed.sif", binds=["/data/pile:/work/data/pile:ro"])
    assert container_prefix(cfg, workdir=tmp_path, gpu=True) == [
        "apptainer", "exec", "--nv", "--bind", str(tmp_path), "--bind", "/data/pile:/work/data/pile:ro",
        "--pwd", str(tmp_path), "/img/biomed.sif"]
    assert "--nv" not in container_prefix(cfg, workdir=tmp_path, gpu=False)


def test_podman_argv_binds_env_network_and_gpu(tmp_path: Path):
    cfg = LaunchConfig(container="podman", image="localhost/biomed-llama:cpu", binds=["/scratch"])
    argv = container_prefix(cfg, workdir=tmp_path, gpu=False)
    conf = tmp_path / "containers" / "containers.conf"
    assert argv[:4] == ["env", f"CONTAINERS_CONF={conf}", "podman", "run"]
    assert argv[-1] == "localhost/biomed-llama:cpu"
    pairs = list(zip(argv, argv[1:]))
    for pair in (("--network", "host"), ("--ipc", "host"), ("--pid", "host"), ("-v", f"{tmp_path}:{tmp_path}"),
                 ("-v", "/scratch:/scratch"), ("-w", str(tmp_path)), ("--entrypoint", ""),
                 ("--env", "BIOMED_CONTAINER_IMAGE=localhost/biomed-llama:cpu")):
        assert pair in pairs, pair
    passed = {b for a, b in pairs if a == "--env"}
    for name in ("SLURM_*", "NCCL_*", "BIOMED_*", "MASTER_ADDR", "MASTER_PORT", "CUDA_VISIBLE_DEVICES"):
        assert name in passed and name in PODMAN_PASS_ENV, name
    assert "nvidia.com/gpu=all" not in argv
    gpu = container_prefix(cfg, workdir=tmp_path, gpu=True)
    assert ("--device", "nvidia.com/gpu=all") in zip(gpu, gpu[1:])
    no_conf = container_prefix(cfg.model_copy(update={"podman_conf": None}), workdir=tmp_path, gpu=False)
    assert no_conf[:2] == ["podman", "run"]


def test_worktree_git_folder_is_bound(tmp_path: Path):
    main_git = tmp_path / "main" / ".git"
    (main_git / "worktrees" / "wt").mkdir(parents=True)
    (main_git / "worktrees" / "wt" / "commondir").write_text("../..\n")
    wt = tmp_path / "wt"
    wt.mkdir()
    (wt / ".git").write_text(f"gitdir: {main_git}/worktrees/wt\n")
    assert git_common_dir(wt) == main_git
    argv = container_prefix(LaunchConfig(container="apptainer"), workdir=wt, gpu=False)
    assert ("--bind", str(main_git)) in zip(argv, argv[1:])
    assert git_common_dir(tmp_path) is None  # no .git file: an ordinary checkout or none


def test_every_stage_goes_into_the_image(tmp_path: Path):
    cfg = LaunchConfig(container="podman", image="img")
    for stage in STAGES:
        argv = build(cfg, stage, "params.yaml", [], ["--mode", "instruct"] if stage == "finetune" else []).argv
        inner = argv[argv.index("img") + 1:]
        assert inner[0] == "python" and "biomed_llama" in inner and stage in inner, stage
    train = build(cfg.model_copy(update={"nproc_per_node": 2}), "pretrain", "params.yaml").argv
    assert "torch.distributed.run" in train[train.index("img") + 1:]
    one = build(cfg, "pretrain", "params.yaml").argv  # one rank: the stage itself, in the image
    assert one[one.index("img") + 1:][:3] == ["python", "-m", "biomed_llama"]
    # Slurm mode sends only training stages to sbatch; data stages still run here, in the image.
    slurm = cfg.model_copy(update={"mode": "slurm"})
    assert build(slurm, "pretrain", "params.yaml").argv[0] == "sbatch"
    assert "podman" in build(slurm, "tokenize", "params.yaml").argv


def test_every_dvc_stage_goes_through_launch(repo_root: Path):
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        cmd = stage.get("do", stage)["cmd"].split()
        assert cmd[:2] == ["biomed-llama", "launch"] and cmd[2] in STAGES, name


def test_container_param_is_validated(repo_root: Path):
    assert load_params(repo_root / "params.yaml").launch.container == "none"
    cfg = load_params(repo_root / "params.yaml", ["launch.container=podman", "launch.image=x"]).launch
    assert cfg.container == "podman" and cfg.image == "x"
    from biomed_llama.errors import ConfigError

    with pytest.raises(ConfigError, match="launch.container"):
        load_params(repo_root / "params.yaml", ["launch.container=docker"])


def test_missing_runtime_or_image_is_one_line(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="podman not found"):
        require_container(LaunchConfig(container="podman", image="img"))
    fake = tmp_path / "podman"  # a podman whose storage holds no image
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(UserError, match="launch.image img not found for podman; build it with `make image`"):
        require_container(LaunchConfig(container="podman", image="img"))
    (tmp_path / "apptainer").write_text("#!/bin/sh\n")
    (tmp_path / "apptainer").chmod(0o755)
    with pytest.raises(UserError, match="`make sif`"):
        require_container(LaunchConfig(container="apptainer", image=str(tmp_path / "none.sif")))
    require_container(LaunchConfig())  # none: nothing to check
