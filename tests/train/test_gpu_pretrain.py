"""The engine on one CUDA GPU: bf16 params, per-block compile, selective AC; close to the fp32 CPU losses."""

from __future__ import annotations

import math
import shutil

import pytest

from tests.helpers import train as H

pytestmark = pytest.mark.gpu


def test_bf16_compiled_run_tracks_fp32(tmp_path):
    from biomed_llama.train.pretrain import run_pretrain

    tokens = H.make_tokens(tmp_path / "tokens")
    fp32 = run_pretrain(H.validate(H.tiny_params(tmp_path / "cpu", tokens)))
    gpu = run_pretrain(H.validate(H.tiny_params(
        tmp_path / "gpu", tokens, device="cuda", param_dtype="bfloat16", compile=True,
        activation_checkpointing="selective")))
    assert all(math.isfinite(v) for v in gpu.losses.values())
    assert max(abs(gpu.losses[s] - fp32.losses[s]) for s in fp32.losses) < 0.05
    assert gpu.metrics["peak_memory_gib"] > 0 and gpu.metrics["device"] == "cuda"
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "gpu" / "model")


def test_async_checkpoints_on_gpu_resume_exactly(tmp_path):
    """CUDA path of async saves (pinned side-stream staging, the warm-up copy): an interrupted-and-resumed run
    gives the straight run's losses, and every checkpoint carries its manifest."""
    from biomed_llama.train.checkpoint import latest_checkpoint
    from biomed_llama.train.pretrain import run_pretrain

    tokens = H.make_tokens(tmp_path / "tokens")
    kw = dict(device="cuda", max_steps=6, checkpoint_every=2, checkpoint_async=True, keep_checkpoints=3)
    straight = run_pretrain(H.validate(H.tiny_params(tmp_path / "a", tokens, **kw)))
    run_pretrain(H.validate(H.tiny_params(tmp_path / "b", tokens, **kw)))
    (run,) = H.run_dirs(tmp_path / "b" / "ckpt")
    for _, folder in H.run_checkpoints(tmp_path / "b" / "ckpt"):
        assert (folder / "manifest.json").is_file()
    # drop the last checkpoint: the rerun resumes step 4 and must end where the straight run ends

    shutil.rmtree(latest_checkpoint(run))
    again = run_pretrain(H.validate(H.tiny_params(tmp_path / "b", tokens, **kw)))
    # fp32 on CUDA: only the order of atomic adds (embedding backward) may differ between the runs
    assert max(abs(again.losses[s] - straight.losses[s]) for s in straight.losses) < 1e-4
    assert [s["step"] for s in again.metrics["checkpoint_saves"]] == [6]
