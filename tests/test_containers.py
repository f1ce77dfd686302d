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


def test_base_images_pinned_by_digest(repo_root: Path, sing, dock):
    assert DIGEST.match(sing.fromHeader), sing.fromHeader
    assert re.search(r"^Bootstrap:\s*docker\s*$", (repo_root / "singularity/biomed.def").read_text(), re.M)
    froms = re.findall(r"^FROM\s+(\S+)", (repo_root / "containers/Dockerfile").read_text(), re.M)
    assert froms and all(DIGEST.match(f) for f in froms), froms
    assert sing.fromHeader == dock.fromHeader, "the two definitions must start from the same digest"


def test_same_lock_and_wheel(sing, dock):
    s_files = [tuple(APPTAINER_ARG.sub(r"${\1}", f).split()) for f in sing.files]
    d_files = [tuple(f) for f in dock.files]
    assert s_files == d_files
    assert ("requirements/cuda.lock", "/opt/biomed/cuda.lock") in s_files


def test_same_install_commands(sing, dock):
    s_cmds, d_cmds = _commands(sing.install), _commands(dock.install)
    assert s_cmds == d_cmds
    pip = [c for c in s_cmds if " -m pip " in c]
    assert pip[0].endswith("pip install --no-cache-dir --require-hashes --no-deps -r /opt/biomed/cuda.lock")
    assert "--no-deps" in pip[1] and "--no-index" in pip[1] and "biomed_llama-" in pip[1]
    assert pip[-1].endswith("-m pip check") and s_cmds[-1] == pip[-1], "pip check must run last"
    assert any("libibverbs1" in c for c in s_cmds), "InfiniBand verbs libraries belong in the image (NCCL over IB)"


def test_same_environment_offline_and_locked(sing, dock):
    s_env, d_env = _env(sing.environ), _env(dock.environ)
    assert s_env == d_env
    assert s_env["PYTHONNOUSERSITE"] == "1"  # user site-packages off
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "PIP_NO_INDEX"):
        assert s_env[var] == "1", var  # nothing downloads at run time
    assert s_env["BIOMED_LOCK"] == "/opt/biomed/cuda.lock"


def test_runscript_test_and_labels(repo_root: Path, sing, dock):
    assert sing.cmd == 'exec biomed-llama "$@"'
    assert dock.entrypoint == ["biomed-llama"]
    assert 'echo "biomed-llama env check" >> /tests.sh' in sing.install and sing.test  # %test
    s_labels = {k: APPTAINER_ARG.sub(r"${\1}", v) for k, v in (line.split(None, 1) for line in sing.labels)}
    d_labels = dict(item[0].rstrip(" \\").split("=", 1) for item in dock.labels)
    assert s_labels == d_labels
    assert s_labels["biomed.lock.sha256"] == "${LOCK_SHA256}"
    assert s_labels["org.opencontainers.image.version"] == "${VERSION}"
    assert s_labels["org.opencontainers.image.revision"] == "${GIT_COMMIT}"
    # `make sif` fills the three build args; the definition gives each a default.
    text = (repo_root / "singularity/biomed.def").read_text()
    args = set(APPTAINER_ARG.findall(text))
    defaults = re.search(r"^%arguments\n((?:[ \t]+\S.*\n)+)", text, re.M).group(1)
    assert args == {line.split("=")[0].strip() for line in defaults.splitlines()}
    make_sif = (repo_root / "Makefile").read_text().split("\nsif:", 1)[1]
    assert all(f"--build-arg {a}=" in make_sif for a in args)
