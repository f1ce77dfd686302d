"""Submit a Slurm batch job, follow its log and wait for its final state across requeues.

Why not `sbatch --wait`: in Slurm 22.05 it polls the job and, once the job is in any finished
state, returns the job's exit status (src/sbatch/sbatch.c `_job_wait`). Measured on the local
two-node cluster of the tests: a job cancelled while pending ends CANCELLED with ExitCode 0:0 and
`sbatch --wait` returns 0; a requeue by the job itself (`scontrol requeue`) leaves the job PENDING,
which `sbatch --wait` does wait through. By its source, a job purged from slurmctld before it
looked (MinJobAge) is reported "no longer found" and also gives 0. So the launcher submits with
`--parsable` and waits itself: success is the state COMPLETED with exit code 0:0 and nothing else.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from biomed_llama.errors import UserError

# Base states after which the job will not run again (squeue(1) JOB STATE CODES). REQUEUED,
# PENDING, RUNNING, COMPLETING, CONFIGURING, SUSPENDED, … are not final.
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "SPECIAL_EXIT",
        "REVOKED",
    }
)
START_MARK = "biomed-llama: job "  # scripts/slurm/common.sh prints `biomed-llama: job ID start … restart N …`


class JobFailed(UserError):
    """The Slurm job ended in a state other than COMPLETED 0:0; exit code = the job's exit status (or 1)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code or 1


@dataclass(frozen=True)
class JobInfo:
    """What the launcher needs of a job: its state, exit status and signal, and how often it was requeued."""

    job_id: str
    state: str
    exit_status: int = 0
    exit_signal: int = 0
    restarts: int = 0
    reason: str = ""

    @property
    def final(self) -> bool:
        """True once the job will not run again."""
        return self.state in FINAL_STATES

    @property
    def succeeded(self) -> bool:
        """True only for COMPLETED with exit code 0:0."""
        return self.state == "COMPLETED" and self.exit_status == 0 and self.exit_signal == 0


def _field(text: str, key: str) -> str | None:
    m = re.search(rf"(?:^|\s){key}=(\S*)", text)
    return m.group(1) if m else None


def parse_scontrol(job_id: str, text: str) -> JobInfo:
    """A JobInfo from `scontrol show job -o ID` output (one line of KEY=VALUE)."""
    state = _field(text, "JobState")
    if state is None:
        raise UserError(f"scontrol show job {job_id}: no JobState in {text.strip()[:200]!r}")
    status, _, sig = (_field(text, "ExitCode") or "0:0").partition(":")
    return JobInfo(
        job_id, state, int(status or 0), int(sig or 0), int(_field(text, "Restarts") or 0), _field(text, "Reason") or ""
    )


def parse_sacct(job_id: str, text: str) -> JobInfo | None:
    """A JobInfo from `sacct -X -n -P -o State,ExitCode` output; None when it lists nothing."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    state, code = lines[-1].split("|")[:2]
    status, _, sig = code.partition(":")
    return JobInfo(job_id, state.split()[0], int(status or 0), int(sig or 0))  # "CANCELLED by 0" → CANCELLED


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def job_info(job_id: str, run: Callable[[list[str]], subprocess.CompletedProcess] = _run) -> JobInfo:
    """The job's state from slurmctld (`scontrol show job`), else from accounting (`sacct`) once it was purged."""
    proc = run(["scontrol", "show", "job", "-o", job_id])
    if proc.returncode == 0:
        return parse_scontrol(job_id, proc.stdout)
    acct = run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State,ExitCode"])
    info = parse_sacct(job_id, acct.stdout) if acct.returncode == 0 else None
    if info is None:
        raise UserError(
            f"Slurm job {job_id}: slurmctld no longer knows it ({proc.stderr.strip()}) and sacct has "
            f"no record ({acct.stderr.strip() or 'empty'}); its outcome is unknown"
        )
    return info


def submit(argv: list[str], env: dict[str, str]) -> str:
    """Run `sbatch --parsable …`; the job id."""
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode:
        raise UserError(f"sbatch failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    job_id = proc.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise UserError(f"sbatch --parsable printed {proc.stdout.strip()!r}, not a job id")
    return job_id


class LogFollower:
    """Copies what the job appends to its log (shared file system) to `out`, as `tail -f` would."""

    def __init__(self, path: Path, out: TextIO):
        self.path, self.out, self.pos = Path(path), out, 0

    def pump(self) -> None:
        """Write the log's new bytes since the last call (nothing while the file does not exist yet)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        self.pos += len(data)
        if data:
            self.out.write(data.decode(errors="replace"))
            self.out.flush()


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def wait_for_job(
    job_id: str,
    poll: float,
    log: Path,
    *,
    info: Callable[[str], JobInfo] = job_info,
    out: TextIO | None = None,
    say: Callable[[str], None] = _say,
) -> JobInfo:
    """Poll the job every `poll` s until a final state, copying its log to `out` (stdout) and saying each
    change of state; its last JobInfo."""
    follower, last = LogFollower(log, out or sys.stdout), None
    while True:
        now = info(job_id)
        follower.pump()
        seen = (now.state, now.restarts)
        if seen != last:
            say(
                f"launch: Slurm job {job_id} {now.state}"
                + (f" (restart {now.restarts})" if now.restarts else "")
                + (f", reason {now.reason}" if now.reason not in ("", "None") else "")
            )
            last = seen
        if now.final:
            return now
        time.sleep(poll)


def stage_error(log: Path) -> str | None:
    """The first `error: …` line the stage printed in the job's last run (after the last start mark), if any."""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    starts = [i for i, ln in enumerate(lines) if ln.startswith(START_MARK) and " start " in ln]
    for ln in lines[starts[-1] if starts else 0 :]:
        if ln.startswith("error: "):
            return ln[len("error: ") :]
    return None


def outcome(stage: str, job: JobInfo, log: Path) -> int:
    """0 when the job COMPLETED 0:0; otherwise raise JobFailed with one line (state, exit code, the stage's error)."""
    if job.succeeded:
        return 0
    err = stage_error(log)
    raise JobFailed(
        f"{stage}: Slurm job {job.job_id} ended {job.state} (exit {job.exit_status}:{job.exit_signal}"
        f", {job.restarts} requeues)" + (f": {err}" if err else "") + f"; log {log}",
        job.exit_status,
    )
