"""`biomed-llama launch`: the torchrun / sbatch command lines built from the `launch:` params."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from biomed_llama.config import load_params
from biomed_llama.errors import ConfigError, UserError
from biomed_llama.launch.commands import build, launch, sbatch_command, torchrun_command
from biomed_llama.launch.config import LaunchConfig
from biomed_llama.launch.slurm import JobFailed


def test_local_is_torchrun_standalone():
    cmd = torchrun_command(LaunchConfig(nproc_per_node=2), "pretrain", "params.yaml", ["pretrain.optim.lr=1e-4"])
    assert cmd.argv == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "biomed_llama", "pretrain", "--params", "params.yaml", "--set", "pretrain.optim.lr=1e-4"]


def test_one_local_rank_is_the_stage_itself_without_torchrun():
    # world of one: no agent process, no rendezvous (commands.torchrun_command's docstring); the stage's own argv
    for stage, extra in (("pretrain", []), ("finetune", ["--mode", "instruct"])):
        cmd = torchrun_command(LaunchConfig(nproc_per_node=1), stage, "params.yaml", ["seed=1"], extra)
        assert cmd.argv == [sys.executable, "-m", "biomed_llama", stage, "--params", "params.yaml", "--set", "seed=1",
                            *extra]


def test_slurm_is_sbatch_with_sizes_and_signal():
    cfg = LaunchConfig(mode="slurm", nnodes=2, gpus_per_node=4, partition="gpu", account="bio", time="12:00:00",
                       signal_seconds=900, shutdown_timeout=600, binds=["/a:/b", "/c"], image="/img/biomed.sif",
                       container="apptainer", extra_sbatch=["--exclusive"])
    cmd = sbatch_command(cfg, "pretrain", "configs/paper.yaml", ["pretrain.optim.lr=1e-5"], workdir=Path("/ck"))
    argv = cmd.argv
    assert argv[:2] == ["sbatch", "--parsable"]
    for opt in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=4", "--time=12:00:00",
                "--signal=B:USR1@900", "--requeue", "--partition=gpu", "--account=bio", "--exclusive"):
        assert opt in argv, opt
    script = argv.index("scripts/slurm/pretrain.sbatch")
    assert all(a.startswith("--") for a in argv[2:script])  # options before the script, stage args after
    assert argv[script + 1:] == ["--set", "pretrain.optim.lr=1e-5"]
    assert shlex.split(cmd.env["BIOMED_TORCHRUN"]) == ["apptainer", "exec", "--nv", "--bind", "/ck", "--bind", "/a:/b",
                                                       "--bind", "/c", "--pwd", "/ck", "/img/biomed.sif", "torchrun"]
    assert cmd.env["BIOMED_RANKS_PER_NODE"] == "4" and cmd.env["BIOMED_PARAMS"] == "configs/paper.yaml"
    assert cmd.env["BIOMED_SHARD_PARAM"] == "pretrain.shard_size"
    assert cmd.env["BIOMED_SHUTDOWN_TIMEOUT"] == "600"


def test_mode_param_switches_the_launcher(repo_root: Path):
    params = repo_root / "params.yaml"
    local = build(load_params(params, ["launch.nproc_per_node=2"]).launch, "finetune", params)
    slurm = build(load_params(params, ["launch.mode=slurm"]).launch, "finetune", params)
    assert "torch.distributed.run" in local.argv and slurm.argv[0] == "sbatch"
    assert slurm.env["BIOMED_SHARD_PARAM"] == ""  # finetune: the trainer's default shard (one node)


def test_bad_stage_and_bad_timeouts_are_one_line_errors(tmp_path: Path):
    with pytest.raises(UserError, match="unknown stage 'bogus'"):
        torchrun_command(LaunchConfig(), "bogus", "params.yaml")
    with pytest.raises(ConfigError, match="launch.shutdown_timeout"):
        from biomed_llama.config import validate_params

        validate_params({"launch": {"signal_seconds": 300, "shutdown_timeout": 300}})


def test_cpu_nodes_ask_no_gpus_and_run_this_venv():
    cfg = LaunchConfig(mode="slurm", nnodes=2, gpus_per_node=0, nproc_per_node=3, signal_seconds=0, requeue=False)
    cmd = sbatch_command(cfg, "finetune", "params.yaml")
    assert "--gpus-per-node=0" in cmd.argv and "--signal=B:USR1@0" in cmd.argv and "--no-requeue" in cmd.argv
    assert shlex.split(cmd.env["BIOMED_TORCHRUN"]) == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd.env["BIOMED_RANKS_PER_NODE"] == "3" and cmd.env["BIOMED_REQUEUE"] == "0"


def test_time_limit_must_leave_room_for_the_warning():
    with pytest.raises(ValueError, match="must exceed launch.signal_seconds"):
        LaunchConfig(time="10", signal_seconds=600, shutdown_timeout=60)
    with pytest.raises(ValueError, match="expected M, M:S"):
        LaunchConfig(time="ten hours")
    assert LaunchConfig(time="1", signal_seconds=0).time == "1"  # no warning: any limit
    assert LaunchConfig(time="2-0", signal_seconds=600).time == "2-0"


def _stand_in(folder: Path, name: str, body: str) -> None:
    (folder / name).write_text("#!/bin/sh\n" + body)
    (folder / name).chmod(0o755)


def test_slurm_launch_refuses_without_sbatch_or_image(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(UserError, match="sbatch not found"):
        launch(LaunchConfig(mode="slurm"), "pretrain", "params.yaml")
    _stand_in(tmp_path, "sbatch", "exit 0\n")
    with pytest.raises(UserError, match="launch.image .* not found"):
        launch(LaunchConfig(mode="slurm", container="apptainer", image=str(tmp_path / "none.sif")), "pretrain",
               "params.yaml")


def test_slurm_launch_waits_for_the_final_state(tmp_path: Path, monkeypatch, capsys):
    """Stand-in sbatch/scontrol: the job is requeued once, then fails; launch names the stage's error line."""
    record, polls = tmp_path / "record", tmp_path / "polls"
    _stand_in(tmp_path, "sbatch", f'echo "$@" > {record}\necho "$BIOMED_RANKS_PER_NODE" >> {record}\necho 42\n')
    states = ["JobState=PENDING Restarts=0 ExitCode=0:0", "JobState=RUNNING Restarts=0 ExitCode=0:0",
              "JobState=REQUEUED Restarts=1 ExitCode=0:0", "JobState=FAILED Restarts=1 ExitCode=3:0"]
    cases = "".join(f"{i}) echo 'JobId=42 {s} Reason=None' ;;\n" for i, s in enumerate(states))
    _stand_in(tmp_path, "scontrol", f'n=$(cat {polls} 2>/dev/null || echo 0); echo $((n + 1)) > {polls}\n'
                                    f'case $n in\n{cases}*) echo "JobId=42 {states[-1]}" ;;\nesac\n')
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "logs/slurm/biomed-pretrain-42.out"
    log.parent.mkdir(parents=True)
    log.write_text("biomed-llama: job 42 start x restart 0 on n1: pretrain\nerror: stopped by signal 10\n"
                   "biomed-llama: job 42 start x restart 1 on n1: pretrain\nerror: tokens do not match\n")
    cfg = LaunchConfig(mode="slurm", nnodes=2, gpus_per_node=2, log_dir="logs/slurm", poll_seconds=0.01)
    with pytest.raises(JobFailed, match=r"job 42 ended FAILED \(exit 3:0, 1 requeues\): tokens do not match") as e:
        launch(cfg, "pretrain", "params.yaml")
    assert e.value.exit_code == 3
    args, ranks = record.read_text().splitlines()
    assert args.startswith("--parsable ") and "--nodes=2" in args and ranks == "2"
    out = capsys.readouterr()
    assert "error: tokens do not match" in out.out  # the job's log, followed
    assert "REQUEUED (restart 1)" in out.err and "FAILED" in out.err


def test_slurm_launch_returns_0_only_for_completed(tmp_path: Path, monkeypatch):
    _stand_in(tmp_path, "sbatch", "echo 7\n")
    _stand_in(tmp_path, "scontrol", "echo 'JobId=7 JobState=COMPLETED Restarts=2 ExitCode=0:0'\n")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    assert launch(LaunchConfig(mode="slurm", poll_seconds=0.01), "pretrain", "params.yaml") == 0


def _drift_torch(tmp_path: Path, monkeypatch) -> None:
    """A lock that pins this environment except torch (2.13.0), and an installed torch 2.11 (the GPU machine's)."""
    from biomed_llama import env_check, provenance

    installed = {**provenance.packages(), "torch": "2.11.0+cu130"}
    for module in (provenance, env_check):  # env_check holds its own name for it
        monkeypatch.setattr(module, "packages", lambda: installed)
    lock = tmp_path / "env.lock"
    lock.write_text("".join(f"{n}=={'2.13.0' if n == 'torch' else v}\n" for n, v in installed.items()))
    monkeypatch.setenv("BIOMED_LOCK", str(lock))


def test_a_drifted_environment_is_refused_only_when_a_param_asks(tmp_path: Path, monkeypatch):
    from biomed_llama.launch.commands import require_locked_env

    _drift_torch(tmp_path, monkeypatch)
    started = []

    class Started(Exception):
        pass

    def execvpe(prog, argv, env):  # where the stage would replace this process
        started.append(argv)
        raise Started

    monkeypatch.setattr("os.execvpe", execvpe)
    with pytest.raises(Started):
        launch(LaunchConfig(), "evaluate", "params.yaml")  # the default: the stage starts in whatever it finds
    assert started[0][-3:] == ["evaluate", "--params", "params.yaml"]
    with pytest.raises(UserError, match=r"differs from .*env.lock: torch 2.11.0\+cu130 \(locked 2.13.0\); run inside"):
        launch(LaunchConfig(require_locked_env=True), "evaluate", "params.yaml")
    assert len(started) == 1
    (tmp_path / "env.lock").write_text((tmp_path / "env.lock").read_text().replace("torch==2.13.0", "torch==2.11.0"))
    require_locked_env(LaunchConfig(require_locked_env=True), "evaluate")  # matches now: no error


def test_the_lock_check_runs_inside_the_image(tmp_path: Path, monkeypatch):
    """With a container the environment is the image's: `env check` runs through the stage's own prefix."""
    from biomed_llama.launch.commands import require_locked_env

    record = tmp_path / "record"
    _stand_in(tmp_path, "apptainer", f'echo "$@" > {record}\n'
                                     'echo "error: environment differs from requirements/cuda.lock (1): torch" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    cfg = LaunchConfig(container="apptainer", image="/img/biomed.sif", require_locked_env=True)
    with pytest.raises(UserError, match=r"pretrain not started: inside /img/biomed.sif, error: environment differs "
                                        r"from requirements/cuda.lock \(1\): torch"):
        require_locked_env(cfg, "pretrain")
    assert record.read_text().split()[-4:] == ["biomed-llama", "env", "check", "--allow-extra"]
    assert "/img/biomed.sif" in record.read_text().split()
    require_locked_env(cfg.model_copy(update={"require_locked_env": False}), "pretrain")  # off: not even asked
