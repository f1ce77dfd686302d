"""The loss curve of a resumed run keeps the rows before the resumed step, from the file or the checkpoint."""

from __future__ import annotations

from biomed_llama.train.metrics import LossCurve, read_loss_curve


def test_rows_lost_with_the_file_come_back_from_the_checkpointed_history(tmp_path):
    curve = LossCurve(tmp_path, 0)
    for step, loss in ((1, 5.0), (2, 4.5), (3, 4.25)):
        curve.append({"step": step, "loss": loss, "grad_norm": 1.0, "lr": 1e-3, "tokens_per_s": 10.0})
    LossCurve(tmp_path, 2)  # resumed at step 2 with the file intact: rows past 2 dropped, the rest as written
    rows = read_loss_curve(tmp_path)
    assert [(r["step"], r["loss"], r["grad_norm"]) for r in rows] == [(1, 5.0, 1.0), (2, 4.5, 1.0)]
    (tmp_path / "loss.tsv").unlink()  # DVC removed the stage's outputs before the rerun
    LossCurve(tmp_path, 3, {1: 5.0, 2: 4.5, 3: 4.25})
    lines = (tmp_path / "loss.tsv").read_text().splitlines()
    assert lines == ["step\tloss\tgrad_norm\tlr\ttokens_per_s", "1\t5.0\t\t\t", "2\t4.5\t\t\t", "3\t4.25\t\t\t"]
