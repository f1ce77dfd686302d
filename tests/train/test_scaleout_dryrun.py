"""Every mesh of the scale-out runs (issue 12: 1×4 and 2×2 on 4 GPUs; 1×8, 2×4 and 4×2 on 8) as a CPU
dry run: the pretrain CLI under torchrun with that many gloo ranks gives the 1-process losses."""

from __future__ import annotations

import pytest

from tests.helpers import train as H

TOL = 1e-5
MESHES = [(4, 4), (4, 2), (8, 8), (8, 4), (8, 2)]  # (ranks, shard size) → replicate × shard


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return H.make_tokens(tmp_path_factory.mktemp("tokens"))


def _raw(tmp, tokens, **kw):
    return H.tiny_params(tmp, tokens, global_batch_size=8, max_steps=4, **kw)


@pytest.fixture(scope="module")
def one_process(tokens, tmp_path_factory):
    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    result = run_pretrain(PretrainParams.of(H.validate(_raw(tmp_path_factory.mktemp("one"), tokens, micro_batch_size=2))))
    return [result.losses[s] for s in sorted(result.losses)]


@pytest.mark.integration
@pytest.mark.parametrize("ranks,shard", MESHES, ids=[f"{r // s}x{s}" for r, s in MESHES])
def test_mesh_dry_run_matches_one_process(tokens, one_process, tmp_path, ranks, shard):
    from biomed_llama.train.metrics import read_loss_curve

    raw = _raw(tmp_path, tokens, micro_batch_size=1, shard_size=shard)
    proc = H.torchrun(ranks, H.write_params_file(tmp_path / "params.yaml", raw), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"mesh (replicate×shard) {ranks // shard}×{shard}" in proc.stdout
    got = [r["loss"] for r in read_loss_curve(tmp_path / "plots")]
    assert len(got) == 4 and max(abs(a - b) for a, b in zip(got, one_process)) < TOL, (got, one_process)
