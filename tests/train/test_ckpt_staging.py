"""The host staging of async checkpoints (`HostStager`) on CPU: a snapshot of the state in host buffers kept
across saves, DTensors staged as DTensors of the same sharding, and a DCP round trip through `async_save`.
(Pinning and the side stream are the CUDA path: tests/train/test_gpu_pretrain.py.)"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def mesh():
    """A one-rank gloo world and its 1-D CPU mesh (torn down after the test, as a run does)."""
    from torch.distributed.device_mesh import init_device_mesh

    from biomed_llama.train.mesh import init_distributed, shutdown

    init_distributed("cpu")
    yield init_device_mesh("cpu", (1,))
    shutdown()


def _state(mesh, scale: float = 1.0) -> dict:
    """A state dict shaped like the registry's DCP part: DTensor weights, optimizer moments and a scalar step,
    and param groups of plain values."""
    from torch.distributed.tensor import Shard, distribute_tensor

    w = distribute_tensor(torch.arange(12.0).reshape(4, 3) * scale, mesh, [Shard(0)])
    return {"model": {"w": w, "b": torch.full((3,), 2.0 * scale, dtype=torch.bfloat16)},
            "optim": {"state": {"w": {"exp_avg": w * 0.5, "step": torch.tensor(7.0 * scale)}},
                      "param_groups": [{"lr": 1e-3 * scale, "betas": (0.9, 0.95), "params": ["w", "b"]}]}}


def test_staging_snapshots_the_state_into_buffers_kept_across_saves(mesh):
    from torch.distributed.tensor import DTensor

    from biomed_llama.train.ckpt_staging import HostStager

    stager = HostStager()
    source = _state(mesh)
    staged = stager.stage(source).result()
    w = staged["model"]["w"]
    assert isinstance(w, DTensor) and w.placements == source["model"]["w"].placements and w.shape == (4, 3)
    assert torch.equal(w.full_tensor(), torch.arange(12.0).reshape(4, 3))
    assert staged["model"]["b"].dtype == torch.bfloat16 and float(staged["optim"]["state"]["w"]["step"]) == 7.0
    assert staged["optim"]["param_groups"] == source["optim"]["param_groups"]
    source["model"]["b"].add_(1)  # training goes on: the staged copy must not move
    source["optim"]["param_groups"][0]["lr"] = 5.0
    assert torch.equal(staged["model"]["b"], torch.full((3,), 2.0, dtype=torch.bfloat16))
    assert staged["optim"]["param_groups"][0]["lr"] == 1e-3
    ptr = w.to_local().data_ptr()
    again = stager.stage(_state(mesh, scale=3.0)).result()  # the next save refills the same buffers
    assert again["model"]["w"].to_local().data_ptr() == ptr
    assert torch.equal(again["model"]["w"].full_tensor(), torch.arange(12.0).reshape(4, 3) * 3)
    assert again["optim"]["param_groups"][0]["lr"] == pytest.approx(3e-3)
    stager.close()


def test_reserve_allocates_ahead_and_a_new_layout_gets_new_buffers(mesh):
    from biomed_llama.train.ckpt_staging import HostStager, layout

    stager = HostStager()
    source = _state(mesh)
    stager.reserve(source)
    staged = stager.stage(source).result()  # waits for the reservation, then fills its buffers
    assert stager._layout == layout(source)
    grown = _state(mesh)
    grown["optim"]["state"]["b"] = {"exp_avg": torch.ones(3)}  # e.g. state a later update creates
    refilled = stager.stage(grown).result()
    assert stager._layout == layout(grown) and torch.equal(refilled["optim"]["state"]["b"]["exp_avg"], torch.ones(3))
    assert torch.equal(staged["model"]["w"].full_tensor(), refilled["model"]["w"].full_tensor())
    stager.close()
    assert stager._layout is None and stager._buffers == {}


def test_async_save_through_the_host_stager_loads_back(mesh, tmp_path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter

    from biomed_llama.train.ckpt_staging import HostStager

    stager = HostStager()
    source = _state(mesh)
    response = dcp.async_save(source, storage_writer=FileSystemWriter(str(tmp_path)), async_stager=stager)
    response.staging_completion.result()
    source["model"]["b"].add_(100)  # after staging: the file holds the staged values
    response.upload_completion.result()
    stager.close()
    back = _state(mesh, scale=0.0)
    dcp.load(back, checkpoint_id=str(tmp_path))
    expected = _state(mesh)
    assert torch.equal(back["model"]["w"].full_tensor(), expected["model"]["w"].full_tensor())
    assert torch.equal(back["model"]["b"], expected["model"]["b"])
    assert torch.equal(back["optim"]["state"]["w"]["exp_avg"].full_tensor(),
                       expected["optim"]["state"]["w"]["exp_avg"].full_tensor())
    assert float(back["optim"]["state"]["w"]["step"]) == 7.0
