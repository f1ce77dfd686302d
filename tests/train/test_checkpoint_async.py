"""Async checkpoints (`pretrain.checkpoint_async`): a run resumed from an async-saved checkpoint ends where
the straight run ends, a crash while an async save is in flight leaves no complete-looking checkpoint,
and each save's stall is in the metrics."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from biomed_llama.train.checkpoint import SAVES_FILE
from tests.helpers import train as H

TOL = 1e-5


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return H.make_tokens(tmp_path_factory.mktemp("tokens"))


def _run(tmp: Path, tokens: Path, **kw):
    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    return run_pretrain(PretrainParams.of(H.validate(H.tiny_params(tmp, tokens, **kw))))


@pytest.fixture(scope="module")
def straight(tokens, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("straight")
    return _run(tmp, tokens, max_steps=8, checkpoint_every=4, checkpoint_async=True), tmp


def test_async_saves_are_complete_and_their_stall_is_recorded(straight):
    result, tmp = straight
    assert [s for s, _ in H.run_checkpoints(tmp / "ckpt")] == [4, 8]
    (_, folder), = H.run_checkpoints(tmp / "ckpt")[-1:]
    assert {"checkpoint-manifest.json", "trainer.json", ".metadata", "rng-rank0.json"} <= {p.name for p in folder.iterdir()}
    assert not list(folder.glob("hashes-rank*.json"))
    saves = result.metrics["checkpoint_saves"]
    assert [s["step"] for s in saves] == [4, 8]
    assert all(0 <= s["stall_s"] and s["complete_s"] is not None and s["complete_s"] >= 0 for s in saves)
    # the host copy is done before the save completes (its files are written from that copy)
    assert all(s["staged_s"] is not None and 0 <= s["staged_s"] <= s["complete_s"] for s in saves)


class _Weights:
    """A one-tensor `dcp` part."""

    def __init__(self):
        import torch

        self.w = torch.arange(64.0)

    def state_dict(self):
        return {"w": self.w}

    def load_state_dict(self, state):
        self.w = state["w"]


def test_in_flight_is_true_until_the_files_are_written(tmp_path, monkeypatch):
    """`Checkpointer.in_flight` (what the benchmark trains on until): true while this rank's async save is being
    written, false once its files and hashes are done; a sync checkpointer is never in flight."""
    import threading

    from biomed_llama.train import checkpoint as C
    from biomed_llama.train.mesh import init_distributed, shutdown

    init_distributed("cpu")
    try:
        parts = {"weights": C.Part(_Weights(), "dcp"), "rng": C.Part(C.RNGState(), "rank")}
        gate, real = threading.Event(), C._write_then_hash

        def held(*args):  # the background write waits for the gate: the save is surely still in flight
            assert gate.wait(30)
            return real(*args)

        monkeypatch.setattr(C, "_write_then_hash", held)
        ck = C.Checkpointer(tmp_path / "ck", parts, keep=1, meta={"run": "t"}, async_save=True)
        ck.save(3)
        assert ck.in_flight()
        gate.set()
        ck.wait()
        assert not ck.in_flight() and ck.saves[-1].complete_s is not None
        assert ck.saves[-1].staged_s is not None and ck.saves[-1].staged_s <= ck.saves[-1].complete_s
        ck.close()
        assert [s for s, _ in C.list_checkpoints(tmp_path / "ck")] == [3]
        assert not C.Checkpointer(tmp_path / "ck2", parts, keep=1, meta={"run": "t"}).in_flight()
    finally:
        shutdown()


def _spawn(params_file: Path, script: str | None = None) -> subprocess.Popen:
    code = script or "from biomed_llama.cli import main; main()"
    cmd = [sys.executable, "-c", code, "pretrain", "--params", str(params_file)]
    return subprocess.Popen(cmd, env=H.env_for_subprocess(), cwd=H.REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_resume_from_an_async_saved_checkpoint_is_exact(tokens, straight, tmp_path, capsys):
    full, _ = straight
    raw = H.tiny_params(tmp_path, tokens, max_steps=8, checkpoint_every=4, checkpoint_async=True)
    proc = _spawn(H.write_params_file(tmp_path / "params.yaml", raw))
    for line in proc.stdout:  # SIGUSR1 (Slurm's warning) once step 2 is logged: an async save at the stop
        if "step 2/8" in line:
            proc.send_signal(signal.SIGUSR1)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGUSR1, err[-2000:]
    step, folder = H.run_checkpoints(tmp_path / "ckpt")[-1]
    assert 2 <= step < 8 and (folder / "checkpoint-manifest.json").is_file()
    capsys.readouterr()
    resumed = _run(tmp_path, tokens, max_steps=8, checkpoint_every=4, checkpoint_async=True)
    assert f"resumed from {folder.parent.name}/{folder.name}" in capsys.readouterr().out
    assert sorted(resumed.losses) == list(range(1, 9))
    assert max(abs(resumed.losses[s] - full.losses[s]) for s in resumed.losses) < TOL


# A trainer whose background hashing of the first checkpoint never ends: the crash comes mid-save.
_HANG = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import biomed_llama.train.checkpoint as C
    def hang(upload, tmp, rank, written):
        upload.result()
        (Path(tmp).parent.parent / "in-flight").write_text(str(tmp))
        time.sleep(3600)
    C._write_then_hash = hang
    from biomed_llama.cli import main
    main()
""")


def test_a_crash_during_an_async_save_leaves_no_complete_checkpoint(tokens, straight, tmp_path):
    from biomed_llama.train.checkpoint import list_checkpoints

    full, _ = straight
    raw = H.tiny_params(tmp_path, tokens, max_steps=8, checkpoint_every=4, checkpoint_async=True)
    proc = _spawn(H.write_params_file(tmp_path / "params.yaml", raw), _HANG)
    marker, t0 = tmp_path / "ckpt" / "in-flight", time.time()
    while not marker.is_file():
        assert proc.poll() is None and time.time() - t0 < 120, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.kill()
    proc.communicate(timeout=60)
    (run,) = H.run_dirs(tmp_path / "ckpt")
    assert list_checkpoints(run) == [] and [p.name for p in run.iterdir()] == ["step-00000004.tmp"]
    again = _run(tmp_path, tokens, max_steps=8, checkpoint_every=4, checkpoint_async=True)
    assert sorted(again.losses) == list(range(1, 9))  # nothing resumed: trained from the start
    assert max(abs(again.losses[s] - full.losses[s]) for s in again.losses) < TOL
    # the stale .tmp is gone; beside the checkpoints, the run's save records
    assert sorted(p.name for p in run.iterdir()) == [SAVES_FILE, "step-00000004", "step-00000008"]


@pytest.mark.integration  # two torchrun processes on two cores: the integration tier
def test_async_saves_on_two_ranks_then_resume_on_one(tokens, straight, tmp_path):
    """Two gloo ranks save asynchronously (the background save over its own group); the final checkpoint is
    complete with both ranks' files, and a 1-process rerun resumes it as finished and reports the first run's
    saves (the run's history comes from its checkpoints, not from the process: issue 25)."""
    from biomed_llama.train.metrics import read_loss_curve

    full, _ = straight
    raw = H.tiny_params(tmp_path, tokens, max_steps=8, checkpoint_every=4, checkpoint_async=True, micro_batch_size=1)
    proc = H.torchrun(2, H.write_params_file(tmp_path / "params.yaml", raw))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = [r["loss"] for r in read_loss_curve(tmp_path / "plots")]
    assert max(abs(a - full.losses[s]) for s, a in enumerate(got, 1)) < TOL
    step, folder = H.run_checkpoints(tmp_path / "ckpt")[-1]
    manifest = json.loads((folder / "checkpoint-manifest.json").read_text())["files"]
    assert step == 8 and {"rng-rank0.json", "rng-rank1.json", ".metadata"} <= set(manifest)
    assert any(n.startswith("__1_") for n in manifest) and any(n.startswith("__0_") for n in manifest)
    again = _run(tmp_path, tokens, max_steps=8, checkpoint_every=4, checkpoint_async=True, micro_batch_size=1)
    assert again.metrics["steps"] == 8 and [s["step"] for s in again.metrics["checkpoint_saves"]] == [4, 8]


def test_async_saves_survive_torch_2_11_closing_its_stager_after_each_stage(tokens, straight, tmp_path, monkeypatch):
    """torch 2.11.0's `DefaultStager._stage` closes its deep-copy stager after every stage (pytorch#170431,
    reported as pytorch#183413), so a stager kept across saves fails the next one with `KeyError: <class 'type'>`
    (the crash on the H200s). Emulated here on the venv's torch: async saves must not depend on DCP's stager."""
    from torch.distributed.checkpoint.staging import DefaultStager

    stage = DefaultStager._stage

    def stage_then_close(self, state_dict, **kwargs):
        try:
            return stage(self, state_dict, **kwargs)
        finally:
            self._state_dict_stager.close()

    monkeypatch.setattr(DefaultStager, "_stage", stage_then_close)
    full, _ = straight
    result = _run(tmp_path, tokens, max_steps=8, checkpoint_every=4, checkpoint_async=True)
    assert [s for s, _ in H.run_checkpoints(tmp_path / "ckpt")] == [4, 8]
    assert max(abs(result.losses[s] - full.losses[s]) for s in full.losses) < TOL
