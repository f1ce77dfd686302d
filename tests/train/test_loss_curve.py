"""The loss curve is written from the run's checkpointed log rows: every column, the same bytes on a rerun."""

from __future__ import annotations

import math

from biomed_llama.train.log import RunHistory
from biomed_llama.train.metrics import read_loss_curve, write_loss_curve


def _row(step: int, loss: float) -> dict:
    return {"step": step, "loss": loss, "grad_norm": 0.5 * step, "lr": 1e-3, "tokens_per_s": 10.0 + step,
            "tokens_per_s_per_device": 10.0 + step, "mfu": None, "memory_gib": None}


def test_every_column_comes_back_from_the_checkpointed_history(tmp_path):
    history = RunHistory()
    for step, loss in ((1, 5.0), (2, 4.5), (3, 4.25)):
        history.record(step, loss, 10.0 + step, _row(step, loss))
    write_loss_curve(tmp_path / "first", history.rows)
    restored = RunHistory()
    restored.load_state_dict(history.state_dict())  # what a resume at the final checkpoint holds
    write_loss_curve(tmp_path / "rerun", restored.rows)
    first = (tmp_path / "first" / "loss.tsv").read_bytes()
    assert first == (tmp_path / "rerun" / "loss.tsv").read_bytes()
    assert first.decode().splitlines() == ["step\tloss\tgrad_norm\tlr\ttokens_per_s", "1\t5.0\t0.5\t0.001\t11.0",
                                           "2\t4.5\t1.0\t0.001\t12.0", "3\t4.25\t1.5\t0.001\t13.0"]


def test_a_checkpoint_of_an_earlier_version_gives_step_and_loss_and_a_skipped_step_an_empty_cell(tmp_path):
    old = RunHistory()
    old.load_state_dict({"losses": {"1": 5.0, "2": 4.5}, "tokens_per_s": [1.0, 2.0]})  # no rows recorded then
    write_loss_curve(tmp_path, old.rows)
    assert (tmp_path / "loss.tsv").read_text().splitlines()[1:] == ["1\t5.0\t\t\t", "2\t4.5\t\t\t"]
    nan = RunHistory()
    nan.record(1, math.nan, 1.0, _row(1, math.nan))  # a skipped step's loss: None in the history, empty in the file
    assert nan.rows[1]["loss"] is None
    write_loss_curve(tmp_path, nan.rows)
    assert read_loss_curve(tmp_path)[0]["loss"] is None
