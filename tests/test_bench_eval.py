"""bench/bench_eval.py: the model shapes of `--arch` (the published configs), the GPU lanes its workers run in, and
the CPU smoke of the 2.7B archs through both paths (integration tier)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import bench_eval as E


def test_the_archs_are_the_published_shapes():
    """EleutherAI/gpt-neo-2.7B's and stanford-crfm/BioMedLM's config.json (bench_eval.py cites them), LLaMA-7B as before;
    the 2.7B parameter counts from the full-size models built on the meta device."""
    import torch

    for arch, n in (("gpt-neo-2.7b", 2_651_307_520), ("biomedlm-2.7b", 2_594_247_680)):
        cfg, cls = E.arch_config(arch, tiny=False)
        with torch.device("meta"):
            model = cls(cfg)
        assert sum(p.numel() for p in model.parameters()) == n, arch
        assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (1, 2, 3)  # the demo tokenizer's
    llama, _ = E.arch_config("llama-7b", tiny=False)  # 6.74B parameters, as before
    assert (llama.num_hidden_layers, llama.hidden_size, llama.intermediate_size, llama.vocab_size) == (32, 4096, 11008, 32000)
    neo, _ = E.arch_config("gpt-neo-2.7b", tiny=False)
    assert (neo.num_layers, neo.hidden_size, neo.num_heads, neo.vocab_size, neo.window_size,
            neo.max_position_embeddings) == (32, 2560, 20, 50257, 256, 2048)
    assert neo.attention_layers == ["global", "local"] * 16
    gpt2, _ = E.arch_config("biomedlm-2.7b", tiny=False)
    assert (gpt2.n_layer, gpt2.n_embd, gpt2.n_head, gpt2.vocab_size, gpt2.n_positions) == (32, 2560, 20, 28896, 1024)
    assert gpt2.scale_attn_by_inverse_layer_idx


def test_biomedlm_scores_at_its_1024_positions():
    """The in-memory model's max_length is capped at GPT-2's position table, as `harness.hf_model_args` caps a folder's."""
    from transformers import AutoTokenizer

    from biomed_llama.eval.config import EvalConfig
    from biomed_llama.eval.harness import config_positions

    tok = AutoTokenizer.from_pretrained(E.REPO / "data/sample/tokenizer")
    cfg = EvalConfig(dtype="float32", max_length=2048, device="cpu")
    for arch, n in (("biomedlm-2.7b", 1024), ("gpt-neo-2.7b", 2048)):
        model = E.build_model(True, "cpu", arch)
        # the same reading as a saved folder's (`harness.model_positions`)
        assert config_positions(model.config.to_dict()) == (1024 if arch == "biomedlm-2.7b" else None)
        lm = E.load_backend("packed", model, tok, cfg)
        assert lm.max_length == n and lm.packable, arch


@pytest.mark.parametrize("archs,gpus,lanes", [
    (["llama-7b"], 2, [[("llama-7b", "packed", "0")], [("llama-7b", "stock", "1")]]),  # as before: side by side
    (["gpt-neo-2.7b", "biomedlm-2.7b"], 2, [[("gpt-neo-2.7b", "packed", "0"), ("gpt-neo-2.7b", "stock", "0")],
                                            [("biomedlm-2.7b", "packed", "1"), ("biomedlm-2.7b", "stock", "1")]]),
    (["gpt-neo-2.7b", "biomedlm-2.7b"], 1, [[("gpt-neo-2.7b", "packed", "0"), ("biomedlm-2.7b", "packed", "0"),
                                             ("gpt-neo-2.7b", "stock", "0"), ("biomedlm-2.7b", "stock", "0")]]),
    (["biomedlm-2.7b"], 0, [[("biomedlm-2.7b", "packed", None), ("biomedlm-2.7b", "stock", None)]]),  # CPU
])
def test_workers_run_in_one_lane_per_gpu_packed_first(monkeypatch, archs, gpus, lanes):
    started = []
    monkeypatch.setattr(E, "spawn", lambda args, arch, name, gpu, t0: started.append((arch, name, gpu)) or len(started))
    monkeypatch.setattr(E, "finish", lambda proc, t0, budget: 0)
    codes = E.run_workers(SimpleNamespace(archs=archs, budget_s=1e6), gpus, time.perf_counter())
    assert codes == {f"{a}.{n}": 0 for a in archs for n in ("packed", "stock")}
    for lane in lanes:  # each lane's workers in their order (lanes run side by side: their interleaving is free)
        assert [s for s in started if s[2] == lane[0][2]] == lane
    assert len(started) == sum(map(len, lanes))
    # past the budget's last DRAIN_S seconds nothing starts
    assert set(E.run_workers(SimpleNamespace(archs=archs, budget_s=E.DRAIN_S / 2), gpus, time.perf_counter()).values()) \
        == {None}


@pytest.mark.integration
def test_cpu_smoke_of_the_2p7b_archs(tmp_path: Path, repo_root: Path):
    """`bench/bench_eval.sh --tiny --arch gpt-neo-2.7b,biomedlm-2.7b`: tiny models of both architectures through the
    packed and the stock path (float32: the same per-item log-likelihoods), a bench_eval.json per arch."""
    done = subprocess.run(["bash", "bench/bench_eval.sh", "--tiny", "--arch", "gpt-neo-2.7b,biomedlm-2.7b",
                           "--stock-fraction", "0.1", "--ppl-bytes", "3000"], cwd=repo_root, capture_output=True,
                          text=True, env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for arch, model_type, max_length in (("gpt-neo-2.7b", "gpt_neo", 2048), ("biomedlm-2.7b", "gpt2", 1024)):
        report = json.loads((tmp_path / arch / "bench_eval.json").read_text())
        assert (report["arch"], report["model_type"], report["max_length"]) == (arch, model_type, max_length)
        assert report["packable"] and report["summary"]["complete"] and report["summary"]["packed_complete"]
        assert report["parity"]["seed.medqa4.3shot"]["max_rel"] < 1e-5 and report["summary"]["parity"]["max_rel"] < 1e-5
        assert len(report["cells"]["packed"]) == 10 and report["worker_exit_codes"] == {"packed": 0, "stock": 0}
    assert (tmp_path / "workers.tgz").is_file() and not list(tmp_path.glob("*/packed.json"))
    assert "## gpt-neo-2.7b" in done.stdout and "## biomedlm-2.7b" in done.stdout
