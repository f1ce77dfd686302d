"""A non-finite loss or gradient norm stops the run at that step (exit 5, nothing exported, the last finite
checkpoint kept), or is skipped under `max_nonfinite_skips`; metrics never hold NaN; a rerun at the final
checkpoint rewrites metrics and the loss curve byte for byte."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import train as H
from tests.helpers.train import weights as _weights


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return H.make_tokens(tmp_path_factory.mktemp("tokens"))


def _run(tmp: Path, tokens: Path, **kw):
    from biomed_llama.train.pretrain import run_pretrain

    return run_pretrain(H.validate(H.tiny_params(tmp, tokens, **kw)))


def _strict_json(path: Path):
    """Parse as a strict JSON reader does: `NaN` / `Infinity` are not JSON."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture
def nan_at(monkeypatch):
    """Make the gradient norm of the given (1-based, counted in this process) steps NaN."""
    from biomed_llama.train import step as S

    real, calls = S.clip_grad_norm, {"n": 0}

    def install(*steps: int) -> None:
        def clip(model, max_norm):
            calls["n"] += 1
            norm = real(model, max_norm)
            return torch.full_like(norm, math.nan) if calls["n"] in steps else norm
        monkeypatch.setattr(S, "clip_grad_norm", clip)
    return install


def test_the_step_changes_nothing_when_its_values_are_not_finite():
    from biomed_llama.train.step import nonfinite, weights_finite

    assert nonfinite(torch.tensor(2.0), torch.tensor(1.0)) is None
    bad = nonfinite(torch.tensor(math.nan), torch.tensor(1.0))
    assert bad is not None and bad.what == "loss"
    assert nonfinite(torch.tensor(2.0), torch.tensor(math.inf)).what == "gradient norm"
    model = torch.nn.Linear(2, 2)
    assert weights_finite(model)
    with torch.no_grad():
        model.weight[0, 0] = math.inf
    assert not weights_finite(model)


def test_a_nan_step_stops_the_run_there_keeping_the_last_finite_checkpoint(tokens, tmp_path, nan_at):
    from biomed_llama.errors import DivergedError
    from biomed_llama.train.checkpoint import latest_checkpoint

    nan_at(5)
    with pytest.raises(DivergedError, match=r"pretrain: non-finite gradient norm at step 5 \(loss [0-9.]+, grad norm "
                                            r"nan\); that update was not applied; stopped: nothing exported"):
        _run(tmp_path, tokens, max_steps=8, checkpoint_every=2, keep_checkpoints=1)
    assert DivergedError.exit_code == 5
    (run_dir,) = H.run_dirs(tmp_path / "ckpt")
    assert [s for s, _ in H.run_checkpoints(tmp_path / "ckpt")] == [4]  # step 4 kept, nothing of step 5 or later
    assert latest_checkpoint(run_dir).name == "step-00000004"
    for name in ("model", "metrics.json", "plots"):
        assert not (tmp_path / name).exists(), name  # no export, no metrics, no curve


def test_skipped_steps_are_not_applied_and_counted(tokens, tmp_path, nan_at):
    nan_at(3)
    out = _run(tmp_path, tokens, max_steps=6, log_every=1, max_nonfinite_skips=1)
    metrics = _strict_json(tmp_path / "metrics.json")
    assert metrics["skipped_steps"] == [3] and metrics["steps"] == 6
    assert all(torch.isfinite(w).all() for w in _weights(tmp_path / "model").values())
    assert 3 in out.losses
    # a second NaN with only one skip allowed stops the run (a fresh folder: other params)
    nan_at(7, 9)  # this process's 7th and 9th step calls: steps 1 and 3 of the next run
    from biomed_llama.errors import DivergedError

    with pytest.raises(DivergedError, match=r"at step 3 .*after skipping 1 \(steps 1\)"):
        _run(tmp_path / "again", tokens, max_steps=6, max_nonfinite_skips=1)


def test_metrics_json_never_holds_nan(tmp_path):
    from biomed_llama.train.metrics import write_final_metrics

    write_final_metrics(tmp_path / "m.json", {"final_loss": math.nan, "x": [math.inf, 1.5]})
    assert _strict_json(tmp_path / "m.json") == {"final_loss": None}  # the headline; the rest beside it
    assert _strict_json(tmp_path / "m.details.json") == {"x": [None, 1.5]}


def test_a_diverging_cli_run_is_one_line_with_exit_5(tokens, tmp_path):
    params = H.write_params_file(tmp_path / "params.yaml", H.tiny_params(tmp_path, tokens, max_steps=12,
                                                                          checkpoint_every=100))
    proc = subprocess.run([sys.executable, "-m", "biomed_llama", "pretrain", "--params", str(params),
                           "--set", "pretrain.optim.lr=1e6"], capture_output=True, text=True, timeout=300,
                          env=H.env_for_subprocess())
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 5, proc.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "non-finite" in lines[0] and "no checkpoint was saved" in lines[0], lines
    assert not (tmp_path / "model").exists() and not (tmp_path / "metrics.json").exists()


def test_a_rerun_at_the_final_checkpoint_writes_metrics_and_curve_byte_for_byte(tokens, tmp_path):
    _run(tmp_path, tokens, max_steps=6, checkpoint_every=3, log_every=2)
    metrics, curve = tmp_path / "metrics.json", tmp_path / "plots" / "loss.tsv"
    first = metrics.read_bytes(), curve.read_bytes()
    assert _strict_json(metrics)["checkpoint_saves"] and "\t\t" not in curve.read_text()  # every column filled
    metrics.unlink()
    curve.unlink()  # DVC removes a stage's outputs before it reruns it
    _run(tmp_path, tokens, max_steps=6, checkpoint_every=3, log_every=2)
    assert (metrics.read_bytes(), curve.read_bytes()) == first
