"""`biomed-llama launch`: the torchrun / sbatch command lines built from the `launch:` params."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from biomed_llama.config import load_params
from biomed_llama.errors import ConfigError, UserError
from biomed_llama.launch.commands import build, launch, sbatch_command, torchrun_command
from biomed_llama.launch.config import LaunchConfig


def test_local_is_torchrun_standalone():
    cmd = torchrun_command(LaunchConfig(nproc_per_node=2), "pretrain", "params.yaml", ["pretrain.lr=1e-4"])
    assert cmd.argv == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "biomed_llama", "pretrain", "--params", "params.yaml", "--set", "pretrain.lr=1e-4"]


def test_slurm_is_sbatch_wait_with_sizes_and_signal():
    cfg = LaunchConfig(mode="slurm", nnodes=2, gpus_per_node=4, partition="gpu", account="bio", time="12:00:00",
                       signal_seconds=900, shutdown_timeout=600, binds=["/a:/b", "/c"], image="/img/biomed.sif",
                       extra_sbatch=["--exclusive"])
    cmd = sbatch_command(cfg, "pretrain", "configs/paper.yaml", ["pretrain.lr=1e-5"])
    argv = cmd.argv
    assert argv[:2] == ["sbatch", "--wait"]
    for opt in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=4", "--time=12:00:00",
                "--signal=B:USR1@900", "--requeue", "--partition=gpu", "--account=bio", "--exclusive"):
        assert opt in argv, opt
    script = argv.index("scripts/slurm/pretrain.sbatch")
    assert all(a.startswith("--") for a in argv[2:script])  # options before the script, stage args after
    assert argv[script + 1:] == ["--set", "pretrain.lr=1e-5"]
    assert cmd.env["BIOMED_SIF"] == "/img/biomed.sif" and cmd.env["BIOMED_BINDS"] == "/a:/b,/c"
    assert cmd.env["BIOMED_GPUS_PER_NODE"] == "4" and cmd.env["BIOMED_PARAMS"] == "configs/paper.yaml"
    assert cmd.env["BIOMED_SHARD_PARAM"] == "pretrain.shard_size"
    assert cmd.env["BIOMED_SHUTDOWN_TIMEOUT"] == "600"


def test_mode_param_switches_the_launcher(repo_root: Path):
    params = repo_root / "params.yaml"
    local = build(load_params(params).launch, "finetune", params)
    slurm = build(load_params(params, ["launch.mode=slurm"]).launch, "finetune", params)
    assert "torch.distributed.run" in local.argv and slurm.argv[0] == "sbatch"
    assert slurm.env["BIOMED_SHARD_PARAM"] == ""  # finetune: the trainer's default shard (one node)


def test_bad_stage_and_bad_timeouts_are_one_line_errors(tmp_path: Path):
    with pytest.raises(UserError, match="unknown stage 'bogus'"):
        torchrun_command(LaunchConfig(), "bogus", "params.yaml")
    with pytest.raises(ConfigError, match="launch.shutdown_timeout"):
        from biomed_llama.config import validate_params

        validate_params({"launch": {"signal_seconds": 300, "shutdown_timeout": 300}})


def test_slurm_launch_refuses_without_sbatch_or_image(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(UserError, match="sbatch not found"):
        launch(LaunchConfig(mode="slurm"), "pretrain", "params.yaml")
    (tmp_path / "sbatch").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "sbatch").chmod(0o755)
    with pytest.raises(UserError, match="launch.image .* not found"):
        launch(LaunchConfig(mode="slurm", image=str(tmp_path / "none.sif")), "pretrain", "params.yaml")


def test_slurm_launch_submits_and_returns_the_job_status(tmp_path: Path, monkeypatch):
    """A stand-in sbatch records its arguments and environment; launch returns its exit status."""
    record = tmp_path / "record"
    (tmp_path / "sbatch").write_text(f'#!/bin/sh\necho "$@" > {record}\necho "$BIOMED_SIF" >> {record}\nexit 3\n')
    (tmp_path / "sbatch").chmod(0o755)
    (tmp_path / "img.sif").write_bytes(b"sif")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    cfg = LaunchConfig(mode="slurm", nnodes=2, image=str(tmp_path / "img.sif"), log_dir="logs/slurm")
    assert launch(cfg, "pretrain", "params.yaml") == 3
    args, sif = record.read_text().splitlines()
    assert args.startswith("--wait ") and "--nodes=2" in args and sif == str(tmp_path / "img.sif")
    assert (tmp_path / "logs/slurm").is_dir()
