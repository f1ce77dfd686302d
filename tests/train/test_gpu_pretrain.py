"""The engine on one CUDA GPU: bf16 params, per-block compile, selective AC; close to the fp32 CPU losses."""

from __future__ import annotations

import math

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
