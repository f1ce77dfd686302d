"""The engine on one CUDA GPU: bf16 params, per-block compile, selective AC; close to the fp32 CPU losses."""

from __future__ import annotations

import math
import shutil

import pytest

from tests.helpers import train as H

pytestmark = pytest.mark.gpu


def test_bf16_compiled_run_tracks_fp32(tmp_path):
    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    tokens = H.make_tokens(tmp_path / "tokens")
    fp32 = run_pretrain(PretrainParams.of(H.validate(H.tiny_params(tmp_path / "cpu", tokens))))
    gpu = run_pretrain(PretrainParams.of(H.validate(H.tiny_params(
        tmp_path / "gpu", tokens, device="cuda", param_dtype="bfloat16", compile=True,
        activation_checkpointing="selective"))))
    assert all(math.isfinite(v) for v in gpu.losses.values())
    assert max(abs(gpu.losses[s] - fp32.losses[s]) for s in fp32.losses) < 0.05
    assert gpu.metrics["peak_memory_gib"] > 0 and gpu.metrics["device"] == "cuda"
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "gpu" / "model")


def test_memory_levers_keep_the_bf16_losses(tmp_path):
    """The 80 GiB levers on CUDA in bf16: a recomputation budget for the compiled layers and a layer kept gathered
    across the micro batches (accumulation 2) change speed and memory, not the losses (beyond bf16 rounding)."""
    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    tokens = H.make_tokens(tmp_path / "tokens")
    kw = dict(device="cuda", param_dtype="bfloat16", compile=True, grad_sync="every")
    plain = run_pretrain(PretrainParams.of(H.validate(H.tiny_params(tmp_path / "plain", tokens, **kw))))
    levers = run_pretrain(PretrainParams.of(H.validate(H.tiny_params(tmp_path / "levers", tokens, activation_memory_budget=0.7,
                                                   gathered_layers=1, **kw))))
    assert all(math.isfinite(v) for v in levers.losses.values())
    assert max(abs(levers.losses[s] - plain.losses[s]) for s in plain.losses) < 0.01, (levers.losses, plain.losses)


def test_float8_tracks_the_bf16_losses_in_a_run_of_its_own(tmp_path):
    """`pretrain.float8` (torchao, tensorwise with float8 all-gathers, and rowwise) through the whole CLI path on an
    FP8 GPU (SM 8.9+): compiled, bf16 params, checkpointed and exported; its losses stay within FP8 rounding of the
    bf16 run's, and it is a run of its own (another run id, so another checkpoint folder)."""
    import torch

    pytest.importorskip("torchao.float8")
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 matmuls need compute capability 8.9+")
    from biomed_llama.train.pretrain import run_pretrain

    tokens = H.make_tokens(tmp_path / "tokens")
    # widths of the FP8 matmul's liking (multiples of 16) and a few more steps than the default
    model = {"hidden_size": 64, "intermediate_size": 176, "num_heads": 4}
    kw = dict(device="cuda", param_dtype="bfloat16", compile=True, max_steps=10)

    def run(name, **extra):
        raw = H.tiny_params(tmp_path / name, tokens, **kw, **extra)
        raw["model"].update(model)
        raw["pretrain"]["checkpoint_dir"] = str(tmp_path / "ckpt")  # one root: each run id gets its folder
        return run_pretrain(H.validate(raw))

    bf16 = run("bf16")
    for recipe in ("tensorwise", "rowwise"):
        fp8 = run(recipe, float8=recipe)
        assert all(math.isfinite(v) for v in fp8.losses.values())
        rel = max(abs(fp8.losses[s] - bf16.losses[s]) / bf16.losses[s] for s in bf16.losses)
        assert rel < 0.02, (recipe, fp8.losses, bf16.losses)
    assert len(H.run_dirs(tmp_path / "ckpt")) == 3


def test_async_checkpoints_on_gpu_resume_exactly(tmp_path):
    """CUDA path of async saves (pinned side-stream staging, the buffers reserved ahead): an interrupted-and-resumed run
    gives the straight run's losses, and every checkpoint carries its manifest."""
    from biomed_llama.train.checkpoint import latest_checkpoint
    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    tokens = H.make_tokens(tmp_path / "tokens")
    kw = dict(device="cuda", max_steps=6, checkpoint_every=2, checkpoint_async=True, keep_checkpoints=3)
    straight = run_pretrain(PretrainParams.of(H.validate(H.tiny_params(tmp_path / "a", tokens, **kw))))
    run_pretrain(PretrainParams.of(H.validate(H.tiny_params(tmp_path / "b", tokens, **kw))))
    (run,) = H.run_dirs(tmp_path / "b" / "ckpt")
    for _, folder in H.run_checkpoints(tmp_path / "b" / "ckpt"):
        assert (folder / "manifest.json").is_file()
    # drop the last checkpoint: the rerun resumes step 4 and must end where the straight run ends

    shutil.rmtree(latest_checkpoint(run))
    again = run_pretrain(PretrainParams.of(H.validate(H.tiny_params(tmp_path / "b", tokens, **kw))))
    # fp32 on CUDA: only the order of atomic adds (embedding backward) may differ between the runs
    assert max(abs(again.losses[s] - straight.losses[s]) for s in straight.losses) < 1e-4
    assert [s["step"] for s in again.metrics["checkpoint_saves"]] == [6]


def test_host_stager_pins_and_copies_after_the_queued_update(tmp_path):
    """`HostStager` on CUDA: pinned host buffers (cudaHostRegister), side-stream copies that start after the work
    already queued on the training stream, a snapshot that later updates leave alone, buffers reused by the next
    save, and a DCP `async_save` of CUDA-mesh DTensors staged over host shards that loads back exactly."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    from biomed_llama.train.ckpt_staging import HostStager
    from biomed_llama.train.mesh import init_distributed, shutdown

    env = init_distributed("cuda")
    try:
        mesh = init_device_mesh("cuda", (1,))
        w = distribute_tensor(torch.zeros(4096, 1024, device="cuda"), mesh, [Shard(0)])
        b = torch.zeros(1024, device="cuda", dtype=torch.bfloat16)
        state = {"model": {"w": w, "b": b}, "optim": {"step": torch.tensor(3.0), "lr": [1e-4]}}
        stager = HostStager(env.device)
        for _ in range(50):  # a queued update the copy must wait for (no host sync in between)
            w.to_local().add_(1.0)
        b.fill_(2.0)
        staged = stager.stage(state).result()
        assert isinstance(staged["model"]["w"], DTensor) and staged["model"]["w"].to_local().is_pinned()
        assert staged["model"]["b"].is_pinned() and not staged["model"]["b"].is_cuda
        assert torch.all(staged["model"]["w"].to_local() == 50.0) and torch.all(staged["model"]["b"] == 2.0)
        w.to_local().add_(1.0)  # the next update: the snapshot stays
        assert torch.all(staged["model"]["w"].to_local() == 50.0)
        ptr = staged["model"]["w"].to_local().data_ptr()
        response = dcp.async_save(state, storage_writer=FileSystemWriter(str(tmp_path)), async_stager=stager)
        response.staging_completion.result()
        w.to_local().add_(1.0)  # after staging, before the files are written
        response.upload_completion.result()
        assert stager._buffers[("model", "w")].data_ptr() == ptr  # refilled, not reallocated
        back = {"model": {"w": distribute_tensor(torch.zeros(4096, 1024, device="cuda"), mesh, [Shard(0)]),
                          "b": torch.zeros(1024, device="cuda", dtype=torch.bfloat16)},
                "optim": {"step": torch.tensor(0.0), "lr": [0.0]}}
        dcp.load(back, checkpoint_id=str(tmp_path))
        assert torch.all(back["model"]["w"].to_local() == 51.0) and torch.all(back["model"]["b"] == 2.0)
        assert float(back["optim"]["step"]) == 3.0
        stager.close()
    finally:
        shutdown()
