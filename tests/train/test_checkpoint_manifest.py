"""Checkpoint manifests (issue 10.2): a resume verifies every file of the checkpoint against the sha256
manifest written when it was complete, and refuses (one line, exit 3) before anything is unpickled."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import train as H


class _Payload:
    """Unpickling this creates the file `path` (what a crafted `.metadata` could do, harmlessly)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    tmp = tmp_path_factory.mktemp("run")
    tokens = H.make_tokens(tmp / "tokens", n_docs=40)
    raw = H.tiny_params(tmp, tokens, max_steps=2, checkpoint_every=1, keep_checkpoints=1)
    run_pretrain(PretrainParams.of(H.validate(raw)))
    return tmp, raw


def _copy(finished, tmp_path) -> tuple[dict, Path]:
    src, raw = finished
    shutil.copytree(src / "ckpt", tmp_path / "ckpt")
    raw = json.loads(json.dumps(raw))
    raw["pretrain"].update(checkpoint_dir=str(tmp_path / "ckpt"), output=str(tmp_path / "model"),
                           metrics=str(tmp_path / "m.json"), plots=str(tmp_path / "plots"))
    (_, folder), = H.run_checkpoints(tmp_path / "ckpt")
    return raw, folder


def _cli(raw: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    params = H.write_params_file(tmp_path / "params.yaml", raw)
    return subprocess.run([sys.executable, "-m", "biomed_llama", "pretrain", "--params", str(params)],
                          env=H.env_for_subprocess(), cwd=H.REPO, capture_output=True, text=True, timeout=300)


def test_a_tampered_metadata_is_refused_and_never_unpickled(finished, tmp_path):
    raw, folder = _copy(finished, tmp_path)
    marker = tmp_path / "pwned"
    crafted = pickle.dumps(_Payload(str(marker)))
    pickle.loads(crafted)  # the payload works: unpickling it makes the marker
    assert marker.is_file()
    marker.unlink()
    (folder / ".metadata").write_bytes(crafted)
    proc = _cli(raw, tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: checkpoint {folder} does not verify: .metadata: sha256 differs from checkpoint-manifest.json; "
                     "refusing to resume from it (checkpoints are trusted input: resuming unpickles their "
                     ".metadata); remove that folder"], proc.stderr[-3000:]
    assert not marker.exists() and not (tmp_path / "model").exists()


@pytest.mark.parametrize("fault", ["extra", "missing", "no-manifest", "bad-manifest"])
def test_other_faults_are_refused(finished, tmp_path, fault):
    # in process: the CLI's one line and exit 3 for an IntegrityError are the test above's
    from biomed_llama.errors import IntegrityError
    from biomed_llama.train.ckpt_manifest import verify_checkpoint

    raw, folder = _copy(finished, tmp_path)
    verify_checkpoint(folder, 0, 1)  # intact before the fault
    if fault == "extra":
        (folder / "evil.distcp").write_bytes(b"x")
        expected = "evil.distcp: not in checkpoint-manifest.json"
    elif fault == "missing":
        os.remove(next(folder.glob("__0_*.distcp")))
        expected = "missing"
    elif fault == "no-manifest":
        (folder / "checkpoint-manifest.json").unlink()
        expected = "has no checkpoint-manifest.json"
    else:
        (folder / "checkpoint-manifest.json").write_text("[1, 2]")
        expected = "checkpoint-manifest.json is not a manifest"
    with pytest.raises(IntegrityError, match=re.escape(expected)):
        verify_checkpoint(folder, 0, 1)


def test_an_intact_checkpoint_resumes(finished, tmp_path):
    raw, folder = _copy(finished, tmp_path)
    proc = _cli(raw, tmp_path)
    assert proc.returncode == 0 and f"resumed from {folder.parent.name}/{folder.name}" in proc.stdout, proc.stderr


def test_a_checkpoint_of_the_old_manifest_name_is_still_verified(finished, tmp_path):
    """Checkpoints written before the rename (their manifest called `manifest.json`, as the stage outputs' is)
    still verify and resume; a file changed under the old name is still refused."""
    from biomed_llama.errors import IntegrityError
    from biomed_llama.train.ckpt_manifest import verify_checkpoint

    raw, folder = _copy(finished, tmp_path)
    (folder / "checkpoint-manifest.json").rename(folder / "manifest.json")
    verify_checkpoint(folder, 0, 1)
    trainer = (folder / "trainer.json").read_text()
    (folder / "trainer.json").write_text(trainer + " ")
    with pytest.raises(IntegrityError, match=re.escape("trainer.json: sha256 differs from manifest.json")):
        verify_checkpoint(folder, 0, 1)
    (folder / "trainer.json").write_text(trainer)
    proc = _cli(raw, tmp_path)
    assert proc.returncode == 0 and f"resumed from {folder.parent.name}/{folder.name}" in proc.stdout, proc.stderr


def test_the_hashing_is_shared_evenly_and_completely():
    from biomed_llama.train.ckpt_manifest import share

    files = {f"__{r}_{i}.distcp": {"sha256": "", "bytes": 1000 + r} for r in range(4) for i in range(4)}
    files.update({".metadata": {"sha256": "", "bytes": 10}, "trainer.json": {"sha256": "", "bytes": 5}})
    shares = [share(files, r, 4) for r in range(4)]
    assert sorted(n for s in shares for n in s) == sorted(files)
    loads = [sum(files[n]["bytes"] for n in s) for s in shares]
    assert max(loads) - min(loads) <= 1003  # within one file of each other
