"""bench/summarize_speed.py: a CLI run's throughput is its steady state, not the compile or the one-time pinning."""

from __future__ import annotations

import json
from pathlib import Path

from bench import summarize_speed as S


def _row(step: int, total_tok_s: int, mfu: float) -> str:
    return (f"step {step}/4 | loss 11.1858 | gnorm 7.666 | lr 0.000e+00 | tok/s {total_tok_s:,} | mfu {mfu}% | "
            f"mem 76.8GiB")


def _run(folder: Path, rows: list[str]) -> None:
    (folder / "cli_cap.log").write_text("\n".join(["pretrain: new run", *rows, "pretrain: done"]) + "\n")
    (folder / "cli_cap_metrics.json").write_text(json.dumps(
        {"tokens_per_s_per_device": 1000.0, "mfu": 0.1, "peak_memory_gib": 76.5, "steps": 4,
         "checkpoint_saves": [{"step": 4, "stall_s": 0.17}]}))


def test_log_every_step_skips_the_compile_and_the_pinning_step(tmp_path):
    # the rows as a micro 4 × acc 16 run under the 80 GiB cap logged them (world of 2: tok/s is the world's)
    _run(tmp_path, [_row(1, 20542, 44.5), _row(2, 11083, 24.0), _row(3, 25407, 55.1), _row(4, 25383, 55.0)])
    r = S._cli(tmp_path, "cli_cap")
    assert r["tok_s"] == (25407 + 25383) / 2 / 2 and abs(r["mfu"] - 0.5505) < 1e-9
    assert r["from"] == "log, steps 3-4" and r["mem"] == 76.5 and r["saves"][0]["stall_s"] == 0.17


def test_a_window_that_holds_step_two_is_not_steady(tmp_path):
    # log_every 3: the first window (steps 1-3) holds both warm-up steps, the second (4-6) does not
    _run(tmp_path, [_row(3, 9000, 19.5), _row(6, 25000, 54.2)])
    r = S._cli(tmp_path, "cli_cap")
    assert r["tok_s"] == 12500 and r["from"] == "log, steps 4-6"


def test_no_steady_window_falls_back_to_the_metrics(tmp_path):
    _run(tmp_path, [_row(2, 9000, 19.5)])
    r = S._cli(tmp_path, "cli_cap")
    assert r["tok_s"] == 1000.0 and r["from"] == "metrics"


def test_one_gpu_runs_and_the_last_step_s_checkpoint_left_out(tmp_path):
    # bench/titan.sh's CLI run: one GPU (tok/s is the GPU's), its last step holds the checkpoint save
    _run(tmp_path, [_row(1, 2000, 5.0), _row(2, 9000, 20.0), _row(3, 25000, 55.0), _row(4, 20000, 44.0)])
    r = S._cli(tmp_path, "cli_cap", world=1, skip_last=True)
    assert r["tok_s"] == 25000 and r["mfu"] == 0.55 and r["from"] == "log, steps 3-3"


def _bench(folder: Path, name: str, tok_s: float, mfu: float, **extra) -> None:
    row = {"name": name, "shape": "7b16", "micro": 8, "acc": 8, "tok_s_per_gpu": tok_s, "mfu": mfu,
           "peak_mem_gib": 76.0, "peak_reserved_gib": 78.0, "sdpa_backend": "cudnn", "kernels": [], "grad_sync": "every",
           "compiled_loss": True, "memory_budget": 0.7, "gathered_layers": 6, **extra}
    (folder / f"{name}.json").write_text(json.dumps(row))
    (folder / f"{name}.log").write_text(json.dumps(row) + "\n")


def test_the_titan_summary_states_each_target_against_its_baseline(tmp_path, capsys):
    (tmp_path / "cli_card.log").write_text("\n".join(
        [_row(1, 1000, 2.0), _row(2, 1000, 2.0), _row(3, 27000, 59.0), _row(4, 20000, 44.0)]) + "\n")
    anchor = {"name": "torchtitan", "torchtitan": "0.3.0", "datasets": "datasets 4.7.0", "torch_compat": None,
              "layers": 16, "micro": 8, "acc": 2, "ac": "none", "attention": "flex", "cuda_graphs": True,
              "steps_timed": 7, "tok_s_per_gpu": 25000.0, "mfu": 0.546, "peak_mem_gib": 90.0, "peak_reserved_gib": 95.0}
    (tmp_path / "titan.log").write_text("[titan] step: 1\n" + json.dumps(anchor) + "\n")
    _bench(tmp_path, "f_bf16", 50000.0, 0.57)
    _bench(tmp_path, "f_tensorwise", 65000.0, 0.74, float8="tensorwise")
    losses = [10.0 - 0.04 * i for i in range(200)]
    _bench(tmp_path, "l_bf16", 1.0, 0.1, losses=losses)
    _bench(tmp_path, "l_fp8", 1.0, 0.1, losses=[v * 1.004 for v in losses], float8="tensorwise")
    _bench(tmp_path, "a_cudnn", 40000.0, 0.5)
    _bench(tmp_path, "a_xformers", 38000.0, 0.47)
    for i, mfu in enumerate([0.571, 0.569, 0.58], 1):
        _bench(tmp_path, f"c80_{i}", 25000.0, mfu)
    S.titan(tmp_path)
    out = capsys.readouterr().out
    assert "| 27,000 | 59.0% |" in out and "| 1.080× |" in out  # steps 3 of 1-4: the compile, pinning, save left out
    assert "target >= 1.10x torchtitan: FAIL" in out
    assert "| 1.300× |" in out  # FP8 over bf16
    assert "max relative difference 0.0040" in out and "WITHIN 1%" in out
    assert "xformers costs 5.0% of cuDNN's throughput: target within 3%: FAIL" in out
    assert "min 56.9%, median 57.1%; target min >= 57%: FAIL" in out


def test_a_failed_runs_line_is_the_workers_error_not_torchruns_empty_wrapper(tmp_path):
    # as torchtitan's failure on torch 2.11 logged it (2026-12-07): the worker's error, then torchrun's wrapper line
    log = tmp_path / "titan.log"
    log.write_text("[rank0]:   File \"trainer.py\", line 828, in _forward_backward_body\n"
                   "[rank0]: RuntimeError: The tensor has a non-zero number of elements, but its data is not allocated yet.\n"
                   "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n")
    assert S._err(log) == ("[rank0]: RuntimeError: The tensor has a non-zero number of elements, but its data is not "
                           "allocated yet.")
    log.write_text("torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n")
    assert S._err(log).startswith("torch.distributed.elastic")  # nothing better: the wrapper itself
