"""Manifests: every file hashed, tampering detected, inputs verified before use; atomic folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomed_llama.errors import IntegrityError
from biomed_llama.fsutil import atomic_dir, sha256_file
from biomed_llama.provenance import (describe_inputs, fingerprint, lock_drift, read_lock, require_current_inputs,
                                     require_verified, verify, verify_inputs, write_manifest)


def _make(folder: Path) -> None:
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"\x00\x01\x02")
    (folder / "sub" / "b.txt").write_text("hello")


def test_manifest_lists_every_file_with_hash_and_size(tmp_path: Path) -> None:
    _make(tmp_path / "out")
    m = write_manifest(tmp_path / "out", stage="unit", params={"k": 1})
    assert m["files"] == {
        "a.bin": {"sha256": sha256_file(tmp_path / "out" / "a.bin"), "bytes": 3},
        "sub/b.txt": {"sha256": sha256_file(tmp_path / "out" / "sub" / "b.txt"), "bytes": 5},
    }
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk["params"] == {"k": 1} and on_disk["stage"] == "unit"
    env = on_disk["environment"]
    for key in ("python", "torch", "git", "lock", "packages", "container"):
        assert key in env
    assert verify(tmp_path / "out") == []


@pytest.mark.parametrize("tamper", ["modify", "delete", "add"])
def test_tampering_is_detected_and_refused(tmp_path: Path, tamper: str) -> None:
    out = tmp_path / "out"
    _make(out)
    write_manifest(out, stage="unit", params={})
    if tamper == "modify":
        (out / "a.bin").write_bytes(b"\x00\x01\x03")
    elif tamper == "delete":
        (out / "sub" / "b.txt").unlink()
    else:
        (out / "extra.txt").write_text("x")
    problems = verify(out)
    assert len(problems) == 1
    with pytest.raises(IntegrityError, match="refusing input"):
        require_verified(out)
    # A stage describing this folder as its input refuses it too.
    with pytest.raises(IntegrityError):
        describe_inputs([out])


@pytest.mark.parametrize("name", [".hidden", "sub/.env", ".cache/x.bin", "sub/manifest.json"])
def test_an_added_dotfile_or_nested_manifest_fails_verify(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    _make(out)
    write_manifest(out, stage="unit", params={})
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_text("slipped in")
    assert verify(out) == [f"{out / name}: not in manifest"]


def test_dotfiles_written_by_the_stage_are_hashed_and_dvc_files_are_not(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _make(out)
    (out / ".config").write_text("part of the output")
    m = write_manifest(out, stage="unit", params={})
    assert ".config" in m["files"]
    (out / ".config").write_text("part of the outpuT")
    assert verify(out) == [f"{out / '.config'}: sha256 differs from manifest"]
    (out / ".config").write_text("part of the output")
    # DVC writes .gitignore beside the outputs it tracks; no stage reads it or .dvcignore.
    (out / ".gitignore").write_text("/tracked\n")
    (out / "sub" / ".dvcignore").write_text("*.tmp\n")
    assert verify(out) == []


def _stage_with_inputs(tmp_path: Path) -> Path:
    """`down` made from a manifest folder `up`, a plain folder `raw/` and a file `one.txt`."""
    _make(tmp_path / "up")
    write_manifest(tmp_path / "up", stage="up", params={})
    (tmp_path / "raw" / "deep").mkdir(parents=True)
    (tmp_path / "raw" / "deep" / "r.txt").write_text("r")
    (tmp_path / "one.txt").write_text("one")
    (tmp_path / "down").mkdir()
    write_manifest(tmp_path / "down", stage="down", params={},
                   inputs=[tmp_path / "up", tmp_path / "raw", tmp_path / "one.txt"])
    return tmp_path / "down"


@pytest.mark.parametrize("change, problem", [
    ("file", "one.txt: sha256 differs from the one recorded"),
    ("raw-file", "raw/deep/r.txt: sha256 differs from the recorded inputs"),
    ("raw-added", "raw/.new: not in the recorded inputs"),
    ("upstream-rerun", "up: its manifest.json differs from the one recorded (the stage that made it reran)"),
    ("upstream-tampered", "up/a.bin: sha256 differs from manifest"),
    ("missing", "one.txt: missing"),
])
def test_verify_inputs_names_the_input_that_changed(tmp_path: Path, change: str, problem: str) -> None:
    down = _stage_with_inputs(tmp_path)
    assert verify_inputs(down) == [] and require_current_inputs(down) == 3
    if change == "file":
        (tmp_path / "one.txt").write_text("two")
    elif change == "raw-file":
        (tmp_path / "raw" / "deep" / "r.txt").write_text("R")
    elif change == "raw-added":
        (tmp_path / "raw" / ".new").write_text("n")
    elif change == "upstream-rerun":
        write_manifest(tmp_path / "up", stage="up", params={"other": True})
    elif change == "upstream-tampered":
        (tmp_path / "up" / "a.bin").write_bytes(b"xyz")
    else:
        (tmp_path / "one.txt").unlink()
    problems = verify_inputs(down)
    assert len(problems) == 1 and problems[0] == f"input {tmp_path}/{problem}"
    assert verify(down) == []  # the folder itself is intact: only its inputs moved on
    with pytest.raises(IntegrityError, match="is stale: input"):
        require_current_inputs(down)


def test_input_manifest_hash_recorded(tmp_path: Path) -> None:
    _make(tmp_path / "up")
    write_manifest(tmp_path / "up", stage="up", params={})
    (tmp_path / "raw.txt").write_text("raw")
    (tmp_path / "down").mkdir()
    m = write_manifest(tmp_path / "down", stage="down", params={}, inputs=[tmp_path / "up", tmp_path / "raw.txt"])
    assert m["inputs"][str(tmp_path / "up")] == {"manifest_sha256": sha256_file(tmp_path / "up" / "manifest.json")}
    assert m["inputs"][str(tmp_path / "raw.txt")]["bytes"] == 3


def test_missing_input_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="does not exist"):
        describe_inputs([tmp_path / "nope"])


def test_atomic_dir_leaves_nothing_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "final"
    with atomic_dir(final) as tmp:
        (tmp / "x").write_text("1")
    assert (final / "x").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "x").write_text("2")
            raise RuntimeError("killed mid-write")
    # The old complete output is untouched and no temporary folder is left behind.
    assert (final / "x").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["final"]


def test_fingerprint_reads_container_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPTAINER_CONTAINER", "/images/biomed.sif")
    fp = fingerprint()
    assert fp["container"]["image"] == "/images/biomed.sif"
    monkeypatch.delenv("APPTAINER_CONTAINER")
    monkeypatch.delenv("SINGULARITY_CONTAINER", raising=False)
    monkeypatch.delenv("BIOMED_IMAGE", raising=False)
    assert fingerprint()["container"] is None or Path("/.singularity.d/labels.json").exists()


def test_atomic_outputs_have_ordinary_permissions(tmp_path: Path) -> None:
    import os

    from biomed_llama.fsutil import atomic_write_text

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "y").write_text("y")
    finally:
        os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_fingerprint_inside_podman_reads_the_baked_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """podman leaves /run/.containerenv empty for an ordinary container: the image's labels file and
    the reference the launcher passed (BIOMED_CONTAINER_IMAGE) identify the image."""
    from biomed_llama import provenance
    from biomed_llama.image_labels import main as write_labels

    env, labels = tmp_path / "containerenv", tmp_path / "labels.json"
    env.write_text("")
    write_labels([str(labels), "biomed.lock.sha256=abc", "biomed.base.sha256=def", "org.opencontainers.image.revision=r1"])
    monkeypatch.setattr(provenance, "PODMAN_ENV", env)
    monkeypatch.setattr(provenance, "IMAGE_LABELS", labels)
    monkeypatch.setattr(provenance, "APPTAINER_LABELS", tmp_path / "absent.json")
    for var in ("APPTAINER_CONTAINER", "SINGULARITY_CONTAINER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BIOMED_CONTAINER_IMAGE", "localhost/biomed-llama:cpu")
    ident = fingerprint()["container"]
    assert ident == {"runtime": "podman", "image": "localhost/biomed-llama:cpu",
                     "labels": {"biomed.lock.sha256": "abc", "biomed.base.sha256": "def",
                                "org.opencontainers.image.revision": "r1"}}
    # A privileged container's file names the image and its id; those win over the passed name.
    env.write_text('engine="podman-4.3.1"\nimage="localhost/x:1"\nimageid="0123"\nrootless=0\n')
    ident = fingerprint()["container"]
    assert ident["image"] == "localhost/x:1" and ident["image_id"] == "0123"
    env.unlink()  # not inside podman, and (labels aside) no other sign: the labels still say "image"
    monkeypatch.setattr(provenance, "IMAGE_LABELS", tmp_path / "absent.json")
    monkeypatch.delenv("BIOMED_IMAGE", raising=False)
    assert fingerprint()["container"] is None


def test_image_labels_are_key_value_pairs(tmp_path: Path) -> None:
    from biomed_llama.image_labels import parse_pairs

    assert parse_pairs(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(ValueError, match="'nokey'"):
        parse_pairs(["nokey"])


def test_a_planted_bytecode_cache_fails_verify(tmp_path: Path) -> None:
    # A .pyc beside an imported utils.py would run as code: it is not exempt from the manifest.
    from biomed_llama.provenance import verify, write_manifest

    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "utils.py").write_text("x = 1\n")
    write_manifest(tmp_path, stage="t", params={})
    assert verify(tmp_path) == []
    (tmp_path / "tasks" / "__pycache__").mkdir()
    (tmp_path / "tasks" / "__pycache__" / "utils.cpython-311.pyc").write_bytes(b"\0")
    assert verify(tmp_path) == [f"{tmp_path / 'tasks/__pycache__/utils.cpython-311.pyc'}: not in manifest"]


def test_evaluate_writes_no_bytecode_into_the_task_folders(monkeypatch) -> None:
    import sys

    from typer.testing import CliRunner

    import biomed_llama.eval.run as run
    from biomed_llama.cli.common import app

    seen = {}
    monkeypatch.setattr(run, "evaluate", lambda cfg, profile: seen.setdefault("flag", sys.dont_write_bytecode))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    from tests.helpers import REPO

    CliRunner().invoke(app, ["evaluate", "--params", str(REPO / "params.yaml")])
    assert seen == {"flag": True}


def drifted_environment(monkeypatch: pytest.MonkeyPatch, torch_version: str = "2.11.0+cu130") -> dict[str, str]:
    """Simulate the GPU machine: the installed torch is not the lock's (its distribution and the imported module)."""
    import torch

    from biomed_llama import provenance

    installed = {**provenance.packages(), "torch": torch_version}
    monkeypatch.setattr(provenance, "packages", lambda: installed)
    monkeypatch.setattr(torch, "__version__", torch_version)
    return installed


def test_fingerprint_records_the_environment_that_ran_not_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 repo_root: Path) -> None:
    lock = repo_root / "requirements/cpu.lock"
    monkeypatch.setenv("BIOMED_LOCK", str(lock))
    locked_torch = read_lock(lock)["torch"]
    drifted_environment(monkeypatch)
    _make(tmp_path / "out")
    env = write_manifest(tmp_path / "out", stage="unit", params={})["environment"]
    assert env["torch"] == "2.11.0+cu130" and env["packages"]["torch"] == "2.11.0+cu130"
    assert env["lock"] == {"path": str(lock), "sha256": sha256_file(lock),
                           "drift": [f"torch: locked {locked_torch}, installed 2.11.0+cu130"]}
    monkeypatch.setenv("BIOMED_LOCK", str(tmp_path / "absent.lock"))
    assert fingerprint()["lock"] == {"path": str(tmp_path / "absent.lock"), "sha256": None, "drift": None}


def test_lock_drift_counts_locked_packages_only(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text("torch==2.13.0 \\\n    --hash=sha256:" + "a" * 64 + "\nnumpy==2.3.0\n")
    assert lock_drift(lock, {"torch": "2.13.0+cpu", "numpy": "2.3.0", "extra-tool": "1"}) == []
    assert lock_drift(lock, {"torch": "2.11.0+cu130"}) == ["numpy: locked 2.3.0, not installed",
                                                          "torch: locked 2.13.0, installed 2.11.0+cu130"]
