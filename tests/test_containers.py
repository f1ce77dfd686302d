"""singularity/biomed.def and containers/Dockerfile: parsed with spython, pinned, and kept in step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

spython = pytest.importorskip("spython.main.parse.parsers", reason="spython (test extra) parses the definitions")

DIGEST = re.compile(r"^[^\s@]+(:[^\s@]+)?@sha256:[0-9a-f]{64}$")
# The two syntaxes of a build argument: Apptainer `{{ NAME }}`, Docker `${NAME}`.
APPTAINER_ARG = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _layer(recipe: dict):
    assert len(recipe) == 1, "one build stage expected"
    return next(iter(recipe.values()))


@pytest.fixture(scope="module")
def sing(repo_root: Path):
    return _layer(spython.SingularityParser(str(repo_root / "singularity/biomed.def")).recipe)


@pytest.fixture(scope="module")
def dock(repo_root: Path):
    return _layer(spython.DockerParser(str(repo_root / "containers/Dockerfile")).recipe)


def _commands(install: list[str]) -> list[str]:
    """Shell commands of %post / RUN in order: continuation lines joined, `&&` chains split; comments,
    `set` and spython's own lines (ARG/ENV assignments, the %test script it echoes) dropped."""
    joined: list[str] = []
    for line in install:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line
        else:
            joined.append(line)
    out = []
    for chunk in joined:
        for cmd in re.split(r"\s*&&\s*", chunk):
            cmd = " ".join(cmd.split())
            if not cmd or cmd.startswith(("#", "set ", "echo ", "chmod u+x /")) or re.fullmatch(r"\w+=\S*", cmd):
                continue
            out.append(APPTAINER_ARG.sub(r"${\1}", cmd))
    return out


def _env(environ: list[str]) -> dict[str, str]:
    pairs = (" ".join(e.replace("\\", " ").split()).split("=", 1) for e in environ)
    return {k.strip(): APPTAINER_ARG.sub(r"${\1}", v.strip()) for k, v in pairs}


def _docker_args(repo_root: Path) -> dict[str, str]:
    """`ARG NAME=default` of containers/Dockerfile (a name declared twice must keep one default)."""
    args: dict[str, str] = {}
    for name, value in re.findall(r"^ARG\s+(\w+)=(\S+)", (repo_root / "containers/Dockerfile").read_text(), re.M):
        assert args.setdefault(name, value) == value, f"ARG {name} has two defaults"
    return args


def _apptainer_args(repo_root: Path) -> dict[str, str]:
    text = (repo_root / "singularity/biomed.def").read_text()
    block = re.search(r"^%arguments\n((?:[ \t]+\S.*\n)+)", text, re.M).group(1)
    return dict(line.strip().split("=", 1) for line in block.splitlines())


def test_base_images_pinned_by_digest(repo_root: Path, sing, dock):
    assert DIGEST.match(sing.fromHeader), sing.fromHeader
    assert re.search(r"^Bootstrap:\s*docker\s*$", (repo_root / "singularity/biomed.def").read_text(), re.M)
    # The Dockerfile's base is a build argument (the CPU twin passes its bootstrapped base); its
    # default, what spython resolves FROM to, is the production base, pinned like the def's.
    froms = re.findall(r"^FROM\s+(\S+)", (repo_root / "containers/Dockerfile").read_text(), re.M)
    assert froms == ["${BASE}"], froms
    assert DIGEST.match(dock.fromHeader) and sing.fromHeader == dock.fromHeader, "the two must start from the same digest"
    d_args, s_args = _docker_args(repo_root), _apptainer_args(repo_root)
    assert d_args["BASE"] == s_args["BASE"] == sing.fromHeader
    assert d_args["BASE_SHA256"] == s_args["BASE_SHA256"] == sing.fromHeader.rsplit("@sha256:", 1)[1]
    assert d_args == s_args, "build arguments and their defaults must agree"


def test_same_lock_and_wheel(repo_root: Path, sing, dock):
    s_files = [tuple(APPTAINER_ARG.sub(r"${\1}", f).split()) for f in sing.files]
    d_files = [tuple(f) for f in dock.files]
    assert s_files == d_files
    assert ("requirements/${LOCK}", "/opt/biomed/${LOCK}") in s_files
    assert _docker_args(repo_root)["LOCK"] == "cuda.lock"  # production; `make image` passes cpu.lock


def test_same_install_commands(sing, dock):
    s_cmds, d_cmds = _commands(sing.install), _commands(dock.install)
    assert s_cmds == d_cmds
    pip = [c for c in s_cmds if " -m pip " in c]
    assert pip[0].endswith("pip install --no-cache-dir --require-hashes --no-deps -r /opt/biomed/${LOCK}")
    assert "--no-deps" in pip[1] and "--no-index" in pip[1] and "biomed_llama-" in pip[1]
    assert pip[-1].endswith("-m pip check") and s_cmds[-1] == pip[-1], "pip check must run last"
    assert any("libibverbs1" in c for c in s_cmds), "InfiniBand verbs libraries belong in the image (NCCL over IB)"


def test_same_environment_offline_and_locked(sing, dock):
    s_env, d_env = _env(sing.environ), _env(dock.environ)
    assert s_env == d_env
    assert s_env["PYTHONNOUSERSITE"] == "1"  # user site-packages off
    assert s_env["PYTHONSAFEPATH"] == "1"  # `python -m` from the bound checkout imports the image's package
    assert s_env["PYTHONDONTWRITEBYTECODE"] == "1"  # no __pycache__ in the bound checkout (DVC deps)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "PIP_NO_INDEX"):
        assert s_env[var] == "1", var  # nothing downloads at run time
    assert s_env["BIOMED_LOCK"] == "/opt/biomed/${LOCK}"
    # What the nvidia/cuda bases set and a plain base must too: with the NVIDIA container runtime's
    # default (`utility` only) the driver's CUDA library would not be mounted.
    assert set(s_env["NVIDIA_DRIVER_CAPABILITIES"].split(",")) >= {"compute", "utility"}


def _baked_labels(cmds: list[str]) -> dict[str, str]:
    """The KEY=VALUE pairs the recipe writes into /opt/biomed/labels.json."""
    (line,) = [c for c in cmds if "biomed_llama.image_labels" in c]
    words = line.split()
    assert words[words.index("biomed_llama.image_labels") + 1] == "/opt/biomed/labels.json"
    return dict(w.split("=", 1) for w in words[words.index("biomed_llama.image_labels") + 2:])


def test_runscript_test_and_labels(repo_root: Path, sing, dock):
    assert sing.cmd == 'exec biomed-llama "$@"'
    assert dock.entrypoint == ["biomed-llama"]
    assert 'echo "biomed-llama env check" >> /tests.sh' in sing.install and sing.test  # %test
    s_labels = {k: APPTAINER_ARG.sub(r"${\1}", v) for k, v in (line.split(None, 1) for line in sing.labels)}
    d_labels = dict(item[0].rstrip(" \\").split("=", 1) for item in dock.labels)
    assert s_labels == d_labels
    # Inside a podman/Docker container the labels are read from the file baked at build time.
    assert _baked_labels(_commands(dock.install)) == d_labels
    assert s_labels["biomed.lock.sha256"] == "${LOCK_SHA256}" and s_labels["biomed.lock"] == "${LOCK}"
    assert s_labels["biomed.base.sha256"] == "${BASE_SHA256}"
    assert s_labels["org.opencontainers.image.base.name"] == "${BASE}"
    assert s_labels["org.opencontainers.image.version"] == "${VERSION}"
    assert s_labels["org.opencontainers.image.revision"] == "${GIT_COMMIT}"
    # Every argument the definition uses has a default; `make sif` fills those that have no
    # production value (the base and the lock default to production's).
    text = (repo_root / "singularity/biomed.def").read_text()
    assert set(APPTAINER_ARG.findall(text)) == set(_apptainer_args(repo_root))
    make_sif = (repo_root / "Makefile").read_text().split("\nsif:", 1)[1].split("\n\n", 1)[0]
    assert all(f"--build-arg {a}=" in make_sif for a in ("VERSION", "LOCK_SHA256", "GIT_COMMIT"))
