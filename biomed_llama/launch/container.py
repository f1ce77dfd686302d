"""The container a stage runs in: the argv prefix of `apptainer exec` or `podman run` (`launch.container`).

`container_prefix` is the one place that knows these command lines: `biomed-llama launch` puts it
in front of every stage's command (`python -m biomed_llama STAGE …` or torchrun), and the Slurm
scripts use the same prefix on the compute nodes. Inside, the checkout is bound at its own path
and is the working directory, so relative params paths and DVC outputs mean the same inside and
out; the image's own Python and `biomed-llama` run, never the checkout's `.venv`.
"""

from __future__ import annotations

from pathlib import Path

from biomed_llama.launch.config import LaunchConfig

# Host variables a stage needs inside podman (which, unlike Apptainer, passes none by default):
# Slurm's job description, torchrun/c10d rendezvous and rank variables, NCCL/Gloo tuning, the
# BIOMED_* variables of the launch scripts, and the thread and device selection. A trailing `*`
# passes every variable of that prefix; a bare name passes the variable when it is set.
PODMAN_PASS_ENV = (
    "SLURM_*",
    "NCCL_*",
    "GLOO_*",
    "TORCH_*",
    "TORCHELASTIC_*",
    "BIOMED_*",
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "LOCAL_RANK",
    "GROUP_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "PYTHONHASHSEED",
    "TERM",
)


def git_common_dir(workdir: Path) -> Path | None:
    """The repository's shared git folder when `workdir` is a `git worktree` (its .git is a file).

    A worktree's `.git` points outside the checkout; it must be bound too, or git (and so the
    manifests' commit) cannot be read inside the container. None for an ordinary checkout.
    """
    dotgit = workdir / ".git"
    if not dotgit.is_file():
        return None
    key, _, value = dotgit.read_text().strip().partition(":")
    if key != "gitdir":
        return None
    gitdir = (workdir / value.strip()).resolve()
    common = gitdir / "commondir"
    return (gitdir / common.read_text().strip()).resolve() if common.is_file() else gitdir


def bind_specs(cfg: LaunchConfig, workdir: Path) -> list[str]:
    """Bind specs `SRC[:DST[:OPTS]]`: the checkout, a worktree's git folder, then `launch.binds`."""
    common = git_common_dir(workdir)
    return [str(workdir), *([str(common)] if common else []), *cfg.binds]


def apptainer_prefix(cfg: LaunchConfig, workdir: Path, gpu: bool) -> list[str]:
    """`apptainer exec [--nv] --bind … --pwd WORKDIR IMAGE` (Apptainer passes the environment itself)."""
    binds = [a for spec in bind_specs(cfg, workdir) for a in ("--bind", spec)]
    return ["apptainer", "exec", *(["--nv"] if gpu else []), *binds, "--pwd", str(workdir), cfg.image]


def podman_prefix(cfg: LaunchConfig, workdir: Path, gpu: bool) -> list[str]:
    """`podman run --rm --network host --ipc host --pid host … -w WORKDIR IMAGE` with the binds, env and GPUs.

    Host network, IPC and PIDs as under Apptainer: the c10d rendezvous and NCCL's shared memory,
    and torchrun's node id in the rendezvous, `hostname_pid`, which in a private PID namespace is
    `host_1` in every container (torchrun is PID 1), so two nodes of one host (or two jobs'
    containers) would count as one and the rendezvous would never fill. GPUs through CDI
    (`nvidia-ctk cdi generate` on the host). The image's entrypoint is cleared: the command that
    follows the prefix names its own program.
    """
    conf = ["env", f"CONTAINERS_CONF={(workdir / cfg.podman_conf).resolve()}"] if cfg.podman_conf else []
    volumes = [a for spec in bind_specs(cfg, workdir) for a in ("-v", spec if ":" in spec else f"{spec}:{spec}")]
    env = [a for name in PODMAN_PASS_ENV for a in ("--env", name)]
    return [
        *conf,
        "podman",
        "run",
        "--rm",
        "--network",
        "host",
        "--ipc",
        "host",
        "--pid",
        "host",
        "--security-opt",
        "label=disable",
        "--entrypoint",
        "",
        *volumes,
        "-w",
        str(workdir),
        *env,
        "--env",
        f"BIOMED_CONTAINER_IMAGE={cfg.image}",
        *(["--device", "nvidia.com/gpu=all"] if gpu else []),
        cfg.image,
    ]


def container_prefix(cfg: LaunchConfig, *, workdir: Path, gpu: bool) -> list[str]:
    """The argv to put before a command so it runs inside `cfg.image` (`[]` for `launch.container: none`).

    `workdir` (the checkout) is bound at its own path and becomes the working directory; `gpu`
    adds the runtime's GPU option (`--nv`, or the CDI device `nvidia.com/gpu=all`).
    """
    if cfg.container == "none":
        return []
    make = apptainer_prefix if cfg.container == "apptainer" else podman_prefix
    return make(cfg, workdir, gpu)
