"""`pretrain.deterministic`: the switch sets torch's deterministic state, and a run with it trains the same numbers
as one without (on the CPU both are deterministic), so it may stay out of the run id."""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers import train as H


@pytest.fixture
def restore_torch_flags(monkeypatch):
    """Undo the process-wide switches after the test (the rest of the session runs torch's defaults)."""
    from torch._inductor import config as inductor_config

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, getattr(inductor_config, "deterministic", None))
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1], saved[2]
    if saved[3] is not None:
        inductor_config.deterministic = saved[3]


def test_switch_sets_torch_state(restore_torch_flags):
    from biomed_llama.train.mesh import CUBLAS_WORKSPACE, use_deterministic_kernels

    use_deterministic_kernels(False)
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    use_deterministic_kernels(True)
    assert torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark


def test_user_workspace_setting_is_kept(restore_torch_flags, monkeypatch):
    from biomed_llama.train.mesh import use_deterministic_kernels

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    use_deterministic_kernels(True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_deterministic_run_trains_the_same_numbers(tmp_path, restore_torch_flags):
    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    tokens = H.make_tokens(tmp_path / "tokens", n_docs=40, seed=3)
    runs = {}
    for flag in (False, True):
        raw = H.tiny_params(tmp_path / str(flag), tokens, max_steps=3, deterministic=flag)
        runs[flag] = run_pretrain(PretrainParams.of(H.validate(raw)))
    assert torch.are_deterministic_algorithms_enabled()  # the run really switched it on
    assert runs[True].losses == runs[False].losses
    # the same run id: the flag is speed-only, so both runs made a folder of the same name
    assert [p.name for p in H.run_dirs(tmp_path / "True" / "ckpt")] == \
        [p.name for p in H.run_dirs(tmp_path / "False" / "ckpt")]
