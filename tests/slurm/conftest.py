"""Fixtures of the Slurm integration tier: the local two-node cluster and a demo checkout whose data
stages have run, copied per test, with `launch:` set to Slurm on 2 nodes × 1 CPU rank.

The cluster needs root and the Debian packages slurmctld, slurmd, slurm-client and munge; without
them these tests are skipped, unless BIOMED_REQUIRE_SLURM=1 (set by `make slurm-test`, which
installs them) makes that a failure. The jobs inside the image (`launch.container: podman`) also
need podman and the CPU twin image built from this checkout (`make image`, which `make slurm-test`
runs first); without podman they are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from localcluster import PACKAGES, ClusterError, LocalCluster, free_port_block
from tests.helpers.dvc import copy_files

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

# The demo's training stages on 2 nodes × 1 CPU rank (mesh replicate 2 × shard 1), logging every
# step so loss curves compare step by step; everything else is the demo's params.
# The image of the podman jobs (the CPU twin, `make image`); BIOMED_TEST_IMAGE as in tests/launch/test_podman.py.
IMAGE = os.environ.get("BIOMED_TEST_IMAGE", "localhost/biomed-llama:cpu")
# One digest of the installed package's Python files, run inside the image and here: the image must
# hold this checkout's code, or its runs cannot equal the venv's (a stale image fails at once).
CODE_DIGEST = """import hashlib, pathlib, biomed_llama
root, h = pathlib.Path(biomed_llama.__file__).parent, hashlib.sha256()
for p in sorted(root.rglob("*.py")):
    h.update(p.relative_to(root).as_posix().encode() + b"\\0" + p.read_bytes())
print(h.hexdigest())"""
SLURM_LAUNCH = {"mode": "slurm", "nnodes": 2, "gpus_per_node": 0, "nproc_per_node": 1, "cpus_per_task": 1,
                "time": "00:15:00", "signal_seconds": 60, "shutdown_timeout": 30, "poll_seconds": 1.0}


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the local Slurm cluster needs root"
    need = ("slurmctld", "slurmd", "sbatch", "munged")
    if any(shutil.which(c, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") is None for c in need):
        return f"Slurm/munge not installed (apt-get install {' '.join(PACKAGES)}; `make slurm-test` does)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    """The running two-node cluster; torn down at the end, with a check that no process of it is left."""
    why = _missing()
    if why:
        if os.environ.get("BIOMED_REQUIRE_SLURM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="biomed-slurm-", dir="/tmp"))  # munged (user munge) must reach it
    # KillWait=0: the shortest grace between SIGTERM and SIGKILL at a time limit (srun still waits about
    # 2 s), the harshest case for what a killed job leaves behind; nothing else here waits on KillWait.
    cluster = LocalCluster(root, kill_wait=0)
    cluster.up()
    try:
        yield cluster
    finally:
        try:
            cluster.down()
            assert cluster.leftovers() == []
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def image() -> str:
    """IMAGE, checked to exist and to hold this checkout's `biomed_llama`; skipped without podman."""
    if shutil.which("podman") is None:
        pytest.skip("podman not installed: jobs inside the image need it (apt-get install podman runc debootstrap)")
    env = {**os.environ, "CONTAINERS_CONF": str(REPO / "containers" / "containers.conf")}
    inside = subprocess.run(["podman", "run", "--rm", "--pull", "never", "--entrypoint", "", IMAGE,
                             "python", "-c", CODE_DIGEST], env=env, capture_output=True, text=True, timeout=300)
    if inside.returncode != 0:
        why = (inside.stderr.strip().splitlines() or ["?"])[-1]
        pytest.fail(f"image {IMAGE} does not run ({why}); `make image` builds it")
    here = subprocess.run([sys.executable, "-c", CODE_DIGEST], capture_output=True, text=True, check=True)
    if inside.stdout != here.stdout:
        pytest.fail(f"image {IMAGE} holds other biomed_llama code than this checkout; rebuild it with `make image`")
    return IMAGE


def run_env(cluster: LocalCluster) -> dict[str, str]:
    """Environment of the commands a test runs: the venv first on PATH, this cluster, one thread per rank."""
    return {**cluster.env, **GIT_ENV, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def run(cmd: list[str], cwd: Path, env: dict[str, str], check: bool = True, timeout: int = 900):
    """Run a command; on failure (with `check`) the assertion shows its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} → {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc


def set_params(checkout: Path, **sections: dict) -> None:
    """Update sections of the checkout's params.yaml key by key."""
    path = checkout / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        params[name].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="session")
def demo_base(slurm_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git checkout of the working tree with the data stages (extract, tokenize, instruct-mix) run
    locally and the training stages set to Slurm; tests work on copies of it (`demo_checkout`)."""
    # the checkout's files without a run's records: a `make demo` here must not leave its dvc.lock in the copy
    dst = copy_files(tmp_path_factory.mktemp("slurm-base") / "repo")
    env = run_env(slurm_cluster)
    try:
        port = free_port_block(1, start=29500)
    except ClusterError as e:
        pytest.fail(str(e))
    set_params(dst, launch={**SLURM_LAUNCH, "rdzv_port": port}, pretrain={"log_every": 1, "progress": False})
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "snapshot"],
                [str(BIN / "dvc"), "repro", "tokenize", "instruct-mix"]):
        run(cmd, dst, env)
    return dst


@pytest.fixture
def demo_checkout(demo_base: Path, tmp_path: Path) -> Path:
    """A fresh copy of `demo_base` (its DVC cache and data outputs included), for one test."""
    dst = tmp_path / "repo"
    shutil.copytree(demo_base, dst, symlinks=True)
    return dst
