"""bench/summarize_speed.py: a CLI run's throughput is its steady state, not the compile or the one-time pinning."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import summarize_speed as S  # noqa: E402


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
