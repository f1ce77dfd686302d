"""A real two-node Slurm cluster on this one machine: munged, slurmctld and one slurmd per node.

The integration tests (`tests/slurm/`, `make slurm-test`) stand it up and tear it down through
`LocalCluster`; by hand:

    python tests/slurm/localcluster.py up /tmp/slurm      # prints `export SLURM_CONF=…`
    python tests/slurm/localcluster.py down /tmp/slurm

Everything lives under one scratch folder (config, state, spool, pid and log files, the munge key
and socket), so it does not touch a system Slurm or munge. The nodes `n1`, `n2` are both this
host (`NodeHostname` = the short hostname, `NodeAddr` = 127.0.0.1, one slurmd port each, 1 CPU
each); their names must resolve for torchrun's rendezvous on the head node, so `up` adds them to
/etc/hosts (as root) when they do not resolve, and `down` removes that line again. Needs the Debian
packages slurmctld, slurmd, slurm-client and munge, and root (SlurmUser=root; munged runs as the
`munge` user). Stdlib only, so it also runs without the venv.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HOSTS = Path("/etc/hosts")
HOSTS_TAG = "# biomed-llama localcluster"
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")


class ClusterError(RuntimeError):
    """The cluster could not be started or stopped cleanly (the message says which daemon and its log)."""


def free_port_block(n: int, start: int = 17000, stop: int = 30000) -> int:
    """The first port p ≥ `start` with p … p+n-1 all free on 127.0.0.1 (TCP)."""
    for base in range(start, stop, n):
        try:
            for p in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise ClusterError(f"no {n} free consecutive ports in {start}-{stop}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child counts as gone; /proc says so
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait(cond, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            tail = "".join(log.read_text(errors="replace").splitlines(True)[-15:]) if log and log.exists() else ""
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}" + (f"; {log}:\n{tail}" if tail else ""))
        time.sleep(0.2)


@dataclass
class LocalCluster:
    """The cluster of `nodes` single-CPU nodes `n1…nN` whose files all live under `root`."""

    root: Path
    nodes: int = 2
    kill_wait: int = 5
    """Seconds between SIGTERM and SIGKILL at a time limit or cancel (real clusters: often 30)."""
    port: int = 0
    """slurmctld's port; the nodes take the next ones (0: the first free block from 17000)."""
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _known: dict[str, int] = field(default_factory=dict)  # daemons started by another process (`main down`)

    @property
    def conf(self) -> Path:
        """The cluster's slurm.conf (clients find it through `SLURM_CONF`)."""
        return self.root / "slurm.conf"

    @property
    def node_names(self) -> list[str]:
        """`n1`, `n2`, …"""
        return [f"n{i}" for i in range(1, self.nodes + 1)]

    @property
    def env(self) -> dict[str, str]:
        """This process's environment plus `SLURM_CONF` of this cluster (for sbatch, srun, scontrol)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @property
    def munge_socket(self) -> Path:
        """The socket of this cluster's own munged."""
        return self.root / "munge" / "munge.socket"

    def log(self, daemon: str) -> Path:
        """Log file of `slurmctld`, `munged` or a node name (its slurmd)."""
        return self.root / ("munge" if daemon == "munged" else "log") / f"{daemon}.log"

    def scontrol(self, *args: str, check: bool = True) -> str:
        """Run `scontrol ARGS…` against this cluster; its stdout."""
        proc = subprocess.run(["scontrol", *args], env=self.env, capture_output=True, text=True, timeout=60)
        if check and proc.returncode:
            raise ClusterError(f"scontrol {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    # -- up -----------------------------------------------------------------------------------
    def up(self) -> "LocalCluster":
        """Start munged, slurmctld and the slurmds; return once every node is idle."""
        missing = [d for d in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch") if not _which(d)]
        if missing:
            raise ClusterError(f"not installed: {', '.join(missing)} (apt-get install {' '.join(PACKAGES)})")
        if os.geteuid() != 0:
            raise ClusterError("the local Slurm cluster runs its daemons as root; run as root")
        self.port = self.port or free_port_block(self.nodes + 1)
        for sub in ("state", "log", "pid", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # munged (user munge) must reach its folder
        become_subreaper()
        try:
            self._start_munge()
            self._write_conf()
            self._add_hosts()
            self._start_slurm()
        except BaseException:
            self.down()
            raise
        return self

    def _start_munge(self) -> None:
        m = self.root / "munge"
        m.mkdir(exist_ok=True)
        m.chmod(0o755)  # clients must reach the socket; the key itself is 0600
        key = m / "munge.key"
        munge = pwd.getpwnam("munge")
        if not key.exists():
            subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
        for p in (m, key):
            os.chown(p, munge.pw_uid, munge.pw_gid)
        key.chmod(0o600)
        self._spawn("munged", ["munged", "--foreground", f"--socket={self.munge_socket}", f"--key-file={key}",
                               f"--pid-file={m / 'munged.pid'}", f"--log-file={self.log('munged')}",
                               f"--seed-file={m / 'munged.seed'}"], user="munge")
        _wait(self.munge_socket.exists, 20, "munged", self.log("munged"))

    def _write_conf(self) -> None:
        r, host, first = self.root, socket.gethostname().split(".")[0], self.port + 1
        last = self.port + self.nodes
        names = f"n[1-{self.nodes}]"
        self.conf.write_text(f"""\
# Written by tests/slurm/localcluster.py: {self.nodes} nodes of one CPU, all on this host.
ClusterName=biomedlocal
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={self.port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire=10
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/pid/slurmctld.pid
SlurmdPidFile={r}/pid/slurmd-%n.pid
SlurmctldLogFile={self.log('slurmctld')}
SlurmdLogFile={r}/log/%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={r}/log/jobcomp.txt
JobRequeue=1
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait={self.kill_wait}
InactiveLimit=0
SlurmdTimeout=60
NodeName={names} NodeHostname={host} NodeAddr=127.0.0.1 Port={first}-{last} CPUs=1 State=UNKNOWN
PartitionName=debug Nodes={names} Default=YES MaxTime=INFINITE State=UP
""")

    def _add_hosts(self) -> None:
        if all(_resolves(n) for n in self.node_names):
            return
        with HOSTS.open("a") as f:
            f.write(f"127.0.0.1 {' '.join(self.node_names)} {HOSTS_TAG}\n")

    def _start_slurm(self) -> None:
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        for n in self.node_names:
            (self.root / "spool" / n).mkdir(exist_ok=True)
            self._spawn(f"slurmd-{n}", ["slurmd", "-D", "-f", str(self.conf), "-N", n])
        _wait(self._all_idle, 60, "the nodes to become idle", self.log("slurmctld"))

    def _spawn(self, name: str, argv: list[str], user: str | None = None) -> None:
        """Start a daemon in the foreground as our child (so we reap it), in its own session."""
        proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=(self.root / "log" / f"{name}.stderr").open("w"), start_new_session=True,
                                user=user, group=user)
        time.sleep(0.3)
        if proc.poll() is not None:
            raise ClusterError(f"{name} exited at once (status {proc.returncode}); "
                               f"see {self.root / 'log' / (name + '.stderr')} and its log under {self.root}")
        self._procs[name] = proc

    def _all_idle(self) -> bool:
        out = self.scontrol("show", "nodes", "-o", check=False)
        states = [w.split("=", 1)[1] for w in out.split() if w.startswith("State=")]
        return len(states) == self.nodes and all(s.startswith("IDLE") for s in states)

    def _no_jobs(self) -> bool:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True, text=True, timeout=30)
        return out.returncode == 0 and not out.stdout.strip()

    # -- down ---------------------------------------------------------------------------------
    @property
    def pids(self) -> dict[str, int]:
        """Daemon name → pid."""
        return {**self._known, **{k: p.pid for k, p in self._procs.items()}}

    def down(self) -> None:
        """Cancel every job, stop the daemons by pid, reap them, and check that no process of the cluster is left."""
        pids = self.pids
        if "slurmctld" in pids and _alive(pids["slurmctld"]):
            subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True, timeout=30)
            with contextlib.suppress(ClusterError):  # jobs left then are killed below
                _wait(self._no_jobs, 60, "the cancelled jobs to end")
            self.scontrol("shutdown", check=False)  # slurmctld and every slurmd
        _stop([p for k, p in pids.items() if k != "munged"], grace=30, term=False)
        _stop([p for k, p in pids.items() if k == "munged"], grace=10, term=True)
        for proc in self._procs.values():
            proc.poll()
        self._procs.clear()
        self._known.clear()
        self._remove_hosts()
        left = self.leftovers()
        for pid in left:  # a job's process that outlived its slurmstepd
            _kill(pid, signal.SIGKILL)
        _stop(left, grace=10, term=False)
        _reap_orphans()
        if left:
            raise ClusterError(f"processes of the cluster were still running after shutdown (killed): {left}")

    def leftovers(self) -> list[int]:
        """Pids of live processes that belong to this cluster: its daemons, slurmstepds, job processes.

        A process belongs to it when its command line names the scratch folder or its environment
        carries this cluster's `SLURM_CONF` (slurmd, slurmstepd and every job process inherit it).
        """
        mark, conf = str(self.root).encode(), f"SLURM_CONF={self.conf}".encode()
        found = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                cmd = (d / "cmdline").read_bytes()
                env = (d / "environ").read_bytes()
            except OSError:
                continue
            if (mark in cmd or conf in env.split(b"\0")) and _alive(int(d.name)):
                found.append(int(d.name))
        return sorted(found)

    def _remove_hosts(self) -> None:
        try:
            lines = HOSTS.read_text().splitlines(True)
        except OSError:
            return
        kept = [ln for ln in lines if HOSTS_TAG not in ln]
        if kept != lines:
            HOSTS.write_text("".join(kept))

    def __enter__(self) -> "LocalCluster":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()


def _stop(pids: list[int], grace: float, term: bool) -> None:
    """Wait up to `grace` s for `pids` to end (after a SIGTERM if `term`); then TERM, then KILL what is left."""
    for pid in pids:
        if term:
            _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            _kill(pid, signal.SIGTERM)
            time.sleep(1)
            _kill(pid, signal.SIGKILL)


def become_subreaper() -> None:
    """Make this process adopt orphaned descendants (slurmstepd, job processes) so it can reap them.

    Without it they are reparented to PID 1, and an init that does not reap (as in some sandboxes)
    leaves them as zombies in the process table.
    """
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _reap_orphans() -> None:
    """Collect exited children (orphans adopted as subreaper); live ones are left alone."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _which(cmd: str) -> bool:
    from shutil import which

    return which(cmd) is not None or which(cmd, path="/usr/sbin:/sbin") is not None


def _resolves(name: str) -> bool:
    try:
        return socket.gethostbyname(name) == "127.0.0.1"
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    """`up DIR` (leaves the cluster running, records its pids in DIR/pids) or `down DIR`."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("root", type=Path)
    args = ap.parse_args(argv)
    root = args.root.resolve()
    pids = root / "pids"
    cluster = LocalCluster(root)
    if args.action == "up":
        cluster.up()
        pids.write_text("".join(f"{k} {v}\n" for k, v in cluster.pids.items()))
        print(f"export SLURM_CONF={cluster.conf}")
        return 0
    cluster._known = {k: int(v) for k, v in (ln.split() for ln in pids.read_text().splitlines())}
    cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
