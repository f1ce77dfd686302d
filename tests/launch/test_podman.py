"""The podman path for real (integration tier): a stage inside the CPU twin image, env check there,
and a tampered lock that stops the image build. `make image-test` runs the whole demo the same way."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from biomed_llama.launch.config import LaunchConfig
from biomed_llama.launch.container import container_prefix

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("BIOMED_TEST_IMAGE", "localhost/biomed-llama:cpu")
CONF = {"CONTAINERS_CONF": str(REPO / "containers" / "containers.conf")}
BIN = Path(sys.executable).parent


def _podman(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, env={**os.environ, **CONF})


@pytest.fixture(scope="module")
def image() -> str:
    """The CPU twin; built with `make image` when podman's storage lacks it (layers are cached)."""
    if shutil.which("podman") is None:
        pytest.skip("podman not installed (apt-get install -y podman runc debootstrap)")
    if _podman("image", "exists", IMAGE).returncode != 0:
        proc = subprocess.run(["make", "-C", str(REPO), "image", f"IMAGE={IMAGE}"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return IMAGE


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    """The tracked files of this checkout in a fresh git repository (what a stage needs to run)."""
    dst = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (REPO / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst / rel)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "snapshot"]):
        subprocess.run([*git, *cmd], cwd=dst, check=True, capture_output=True)
    return dst


def _launch(repo: Path, *sets: str) -> subprocess.CompletedProcess:
    args = [a for s in sets for a in ("--set", s)]
    return subprocess.run([str(BIN / "biomed-llama"), "launch", "instruct-mix", *args], cwd=repo, capture_output=True,
                          text=True, env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}, timeout=600)


def test_stage_runs_inside_the_image_with_the_same_output(image: str, checkout: Path):
    inside = _launch(checkout, "launch.container=podman", f"launch.image={image}")
    assert inside.returncode == 0, inside.stderr
    manifest = json.loads((checkout / "data/instruct/manifest.json").read_text())
    ident = manifest["environment"]["container"]
    assert ident["runtime"] == "podman" and ident["image"] == image
    lock_sha = manifest["environment"]["lock"]["sha256"]
    assert ident["labels"]["biomed.lock.sha256"] == lock_sha and ident["labels"]["biomed.lock"] == "cpu.lock"
    assert manifest["environment"]["lock"]["path"] == "/opt/biomed/cpu.lock"
    host = _launch(checkout)  # launch.container: none, this venv
    assert host.returncode == 0, host.stderr
    again = json.loads((checkout / "data/instruct/manifest.json").read_text())
    assert again["environment"]["container"] is None
    assert again["files"] == manifest["files"], "the image and the host wrote different bytes"


def test_env_check_passes_inside_the_image(image: str, tmp_path: Path):
    prefix = container_prefix(LaunchConfig(container="podman", image=image, podman_conf=str(CONF["CONTAINERS_CONF"])),
                              workdir=tmp_path, gpu=False)
    proc = subprocess.run([*prefix, "biomed-llama", "env", "check"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: installed packages match /opt/biomed/cpu.lock")
    assert f"image: {image}" in proc.stderr


def _tamper_single_hash(lock: str) -> tuple[str, str]:
    """Change the one hash of the first pin that has exactly one: (package, tampered lock).

    A pin with several hashes (wheels and sdist) would still install from a file whose hash is
    listed, so only a package with a single file shows the check on its own.
    """
    for entry in re.split(r"\n(?=[A-Za-z0-9])", lock):
        if entry.count("--hash=sha256:") == 1 and re.match(r"^[A-Za-z0-9][\w.-]*==", entry):
            name = entry.split("==", 1)[0]
            digest = re.search(r"--hash=sha256:([0-9a-f]{64})", entry).group(1)
            flipped = ("0" if digest[0] != "0" else "1") + digest[1:]
            return name, lock.replace(entry, entry.replace(digest, flipped))
    raise AssertionError("no pin with a single hash")


def test_tampered_lock_fails_the_build_naming_the_package(image: str, tmp_path: Path):
    ctx = tmp_path / "ctx"
    shutil.copytree(REPO / "containers", ctx / "containers")
    shutil.copy2(REPO / ".containerignore", ctx)
    (ctx / "requirements").mkdir()
    name, tampered = _tamper_single_hash((REPO / "requirements/cpu.lock").read_text())
    (ctx / "requirements/tampered.lock").write_text(tampered)
    (ctx / "dist").mkdir()
    (ctx / "dist/biomed_llama-0.1.0-py3-none-any.whl").write_bytes(b"")  # never reached
    proc = subprocess.run(["containers/build.sh"], cwd=ctx, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **CONF, "LOCK": "tampered.lock", "IMAGE": "localhost/biomed-llama:tampered"})
    assert proc.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in proc.stderr, proc.stderr[-3000:]
    assert re.search(rf"^\s+{re.escape(name)}==\S+ from ", proc.stderr, re.M), proc.stderr[-3000:]
    assert _podman("image", "exists", "localhost/biomed-llama:tampered").returncode != 0
