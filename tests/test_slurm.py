"""The sbatch scripts: shellcheck-clean, and the srun/torchrun line they render for 2 nodes × 4 GPUs."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = ["scripts/slurm/pretrain.sbatch", "scripts/slurm/finetune.sbatch", "scripts/slurm/common.sh"]


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (Debian package `shellcheck`; .ci/run installs it)")
def test_shellcheck(repo_root: Path):
    proc = subprocess.run(["shellcheck", "--external-sources", "--severity=style", *SCRIPTS],
                          cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _render(repo_root: Path, tmp_path: Path, stage: str, extra_env: dict[str, str], *args: str) -> list[str]:
    """Run the sbatch script as Slurm would (inside a 2-node allocation), in dry-run mode."""
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    # scontrol expands the node list; this stand-in answers like `scontrol show hostnames gpu-a[01-02]`.
    (shim / "scontrol").write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && printf "gpu-a01\\ngpu-a02\\n"\n')
    (shim / "scontrol").chmod(0o755)
    env = {"PATH": f"{shim}:{os.environ['PATH']}", "HOME": str(tmp_path), "SLURM_SUBMIT_DIR": str(repo_root),
           "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu-a[01-02]", "SLURM_JOB_ID": "4242",
           "SLURM_GPUS_ON_NODE": "4", "BIOMED_DRY_RUN": "1", **extra_env}
    proc = subprocess.run(["bash", str(repo_root / f"scripts/slurm/{stage}.sbatch"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return shlex.split(proc.stdout)


def _opt(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_pretrain_command_for_2_nodes_x_4_gpus(repo_root: Path, tmp_path: Path):
    """The launcher's apptainer prefix (BIOMED_TORCHRUN) reaches srun word for word, paths with spaces included."""
    from biomed_llama.launch.commands import sbatch_command
    from biomed_llama.launch.config import LaunchConfig
    from biomed_llama.launch.container import git_common_dir

    cfg = LaunchConfig(mode="slurm", nnodes=2, gpus_per_node=4, container="apptainer", image="/images/biomed.sif",
                       binds=["/scratch/pile:/data/pile:ro", "/models/with space"])
    env = sbatch_command(cfg, "pretrain", "params.yaml", workdir=repo_root).env
    argv = _render(repo_root, tmp_path, "pretrain", env, "--set", "pretrain.optim.lr=1e-5")
    srun, rest = argv[:argv.index("apptainer")], argv[argv.index("apptainer"):]
    assert srun[0] == "srun" and _opt(srun, "--nodes") == "2" and _opt(srun, "--ntasks-per-node") == "1"
    # apptainer exec --nv IMAGE, the checkout and the extra binds mounted, working dir = the checkout
    assert rest[:3] == ["apptainer", "exec", "--nv"]
    binds = [rest[i + 1] for i, a in enumerate(rest) if a == "--bind"]
    common = git_common_dir(repo_root)  # a `git worktree` checkout binds its shared git folder too
    assert binds == [str(repo_root), *([str(common)] if common else []), "/scratch/pile:/data/pile:ro",
                     "/models/with space"]
    assert _opt(rest, "--pwd") == str(repo_root)
    tr = rest[rest.index("torchrun"):]
    assert rest[rest.index("torchrun") - 1] == "/images/biomed.sif"
    # mesh: replicate = nodes (torchrun's nnodes), shard = GPUs per node (nproc + the shard param)
    assert _opt(tr, "--nnodes") == "2" and _opt(tr, "--nproc-per-node") == "4"
    assert _opt(tr, "--rdzv-backend") == "c10d"
    assert _opt(tr, "--rdzv-endpoint") == "gpu-a01:29500" and _opt(tr, "--rdzv-id") == "4242"
    assert "SIGUSR1" in _opt(tr, "--signals-to-handle").split(",")
    stage = tr[tr.index("-m"):]
    assert stage[:5] == ["-m", "biomed_llama", "pretrain", "--params", "params.yaml"]
    sets = [stage[i + 1] for i, a in enumerate(stage) if a == "--set"]
    assert sets == ["pretrain.shard_size=4", "pretrain.optim.lr=1e-5"]


def test_without_a_container_the_job_runs_the_submitting_venv(repo_root: Path, tmp_path: Path):
    from biomed_llama.launch.commands import sbatch_command
    from biomed_llama.launch.config import LaunchConfig

    cfg = LaunchConfig(mode="slurm", nnodes=2, gpus_per_node=0, nproc_per_node=1, cpus_per_task=1)
    env = sbatch_command(cfg, "pretrain", "params.yaml", workdir=repo_root).env
    argv = _render(repo_root, tmp_path, "pretrain", env)
    run = argv.index("--cpu-bind=none") + 1
    # the node's announcement (bash -c '… exec "$@"' NAME) execs the venv's torchrun: no container
    assert argv[run:run + 2] == ["bash", "-c"] and 'exec "$@"' in argv[run + 2]
    assert argv[run + 4:run + 7] == [sys.executable, "-m", "torch.distributed.run"]
    assert _opt(argv, "--nproc-per-node") == "1" and "apptainer" not in argv
    assert "pretrain.shard_size=1" in argv  # mesh 2 × 1: replicate across the two nodes


def test_finetune_command_uses_the_job_sizes(repo_root: Path, tmp_path: Path):
    argv = _render(repo_root, tmp_path, "finetune", {"BIOMED_RANKS_PER_NODE": "8", "BIOMED_RDZV_PORT": "29611",
                                                      "BIOMED_PARAMS": "configs/paper.yaml"})
    tr = argv[argv.index("torchrun"):]
    assert _opt(tr, "--nproc-per-node") == "8" and _opt(tr, "--rdzv-endpoint") == "gpu-a01:29611"
    assert tr[tr.index("-m"):][:5] == ["-m", "biomed_llama", "finetune", "--params", "configs/paper.yaml"]


def test_sbatch_headers_one_task_per_node_signal_requeue(repo_root: Path):
    for stage in ("pretrain", "finetune"):
        text = (repo_root / f"scripts/slurm/{stage}.sbatch").read_text()
        directives = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", text, re.M))
        assert directives["ntasks-per-node"] == "1"
        assert re.fullmatch(r"B:USR1@\d+", directives["signal"])
        assert "requeue" in directives
