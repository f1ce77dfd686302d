"""Reading a Slurm job's state (scontrol, then sacct), its final outcome and the stage's error line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from biomed_llama.errors import UserError
from biomed_llama.launch.slurm import JobFailed, JobInfo, job_info, outcome, parse_sacct, parse_scontrol, stage_error

# `scontrol show job -o 1` of Slurm 22.05 (the local test cluster), shortened in the middle.
SCONTROL = ("JobId=1 JobName=s0.sh UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901759 Nice=0 "
            "Account=(null) QOS=(null) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) Requeue=1 Restarts=0 "
            "BatchFlag=1 Reboot=0 ExitCode=0:9 RunTime=00:01:27 TimeLimit=00:01:00 TimeMin=N/A NodeList=n1 "
            "Command=/tmp/sl1/s0.sh WorkDir=/tmp/sl1 StdOut=/tmp/sl1/s0-1.out Power= TresPerNode=gres:gpu:0\n")


def test_scontrol_line():
    info = parse_scontrol("1", SCONTROL)
    assert info == JobInfo("1", "TIMEOUT", 0, 9, 0, "TimeLimit")
    assert info.final and not info.succeeded
    running = parse_scontrol("5", "JobId=5 JobState=REQUEUED Reason=BeginTime Restarts=1 ExitCode=0:0")
    assert not running.final and running.restarts == 1


def test_only_completed_0_0_succeeds():
    assert JobInfo("1", "COMPLETED").succeeded
    assert not JobInfo("1", "COMPLETED", 1, 0).succeeded
    assert not JobInfo("1", "CANCELLED").succeeded  # cancelled while pending: exit 0:0, yet no result


def test_sacct_after_the_job_left_slurmctld():
    def run(argv):
        if argv[0] == "scontrol":
            return subprocess.CompletedProcess(argv, 1, "", "slurm_load_jobs error: Invalid job id specified")
        return subprocess.CompletedProcess(argv, 0, "CANCELLED by 0|0:15\n", "")

    assert job_info("9", run) == JobInfo("9", "CANCELLED", 0, 15)
    assert parse_sacct("9", "\n") is None


def test_unknown_outcome_is_one_line():
    def run(argv):
        return subprocess.CompletedProcess(argv, 1, "", "Slurm accounting storage is disabled")

    with pytest.raises(UserError, match="outcome is unknown"):
        job_info("9", run)


def test_stage_error_of_the_last_run_only(tmp_path: Path):
    log = tmp_path / "job.out"
    log.write_text("biomed-llama: job 3 start T restart 0 on n[1-2]: pretrain\nerror: stopped by signal 10 at step 4\n"
                   "biomed-llama: job 3 start T restart 1 on n[1-2]: pretrain\n[rank0]: Traceback\n")
    assert stage_error(log) is None  # the first run's interruption is not the second run's failure
    log.write_text(log.read_text() + "error: pretrain.tokens: manifest mismatch\nerror: rank 0 refused an input\n")
    assert stage_error(log) == "pretrain.tokens: manifest mismatch"
    assert stage_error(tmp_path / "missing.out") is None


def test_outcome(tmp_path: Path):
    log = tmp_path / "job.out"
    assert outcome("pretrain", JobInfo("3", "COMPLETED", restarts=1), log) == 0
    with pytest.raises(JobFailed, match=r"^pretrain: Slurm job 3 ended TIMEOUT \(exit 0:9, 0 requeues\); log ") as e:
        outcome("pretrain", JobInfo("3", "TIMEOUT", 0, 9), log)
    assert e.value.exit_code == 1  # killed by a signal: no exit status of its own
