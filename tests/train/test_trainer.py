"""The trainer's lifecycle on CPU: the callbacks' hook points in order (one before each update), the normaliser's
all-reduce inside the step (one CPU collective per step, the stop vote with it), the checkpointer closed once
by the trainer, and a bare `train_step` (what the benchmarks drive) equal to the loop's steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import train as H


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return H.make_tokens(tmp_path_factory.mktemp("tokens"))


@pytest.fixture(autouse=True)
def _process_group_down():
    """A built trainer leaves the process group up (`run_training` takes it down): take it down after each test."""
    yield
    from biomed_llama.train.mesh import shutdown

    shutdown()


def _trainer(tmp: Path, tokens: Path, **kw):
    """A built and restored trainer of the tiny pretrain params (no callbacks yet)."""
    from biomed_llama.train.engine import build, restore
    from biomed_llama.train.pretrain import PretrainParams, pretrain_spec

    tr = build(pretrain_spec(PretrainParams.of(H.validate(H.tiny_params(tmp, tokens, **kw)))))
    restore(tr)
    return tr


def _recorder():
    from biomed_llama.train.callbacks import Callback

    class Rec(Callback):
        def __init__(self):
            self.events = []

        def pre_train(self):
            self.events.append(("pre_train", self.trainer.global_step))

        def pre_step(self, step):
            self.events.append(("pre_step", step))

        def pre_optim_step(self):
            # the update is not applied yet: the schedule has stepped once per earlier update
            self.events.append(("pre_optim_step", self.trainer.scheduler.last_epoch))

        def post_step(self, out):
            self.events.append(("post_step", out.step))

        def log_metrics(self, row):
            self.events.append(("log_metrics", row["step"]))

        def post_train(self, end):
            self.events.append(("post_train", end.step))

        def close(self):
            self.events.append(("close",))

    return Rec()


def test_hooks_run_in_order_with_one_collective_per_step_and_one_close(tokens, tmp_path, monkeypatch):
    from biomed_llama.train import step as S
    from biomed_llama.train.callbacks import LogCallback
    from biomed_llama.train.trainer import StopFlag

    tr = _trainer(tmp_path, tokens, max_steps=3, log_every=2)
    rec = _recorder()
    tr.add_callbacks(LogCallback(every=2), rec)
    reduces, closes = [], []
    real_reduce, real_close = S.all_reduce_cpu, tr.checkpointer.close
    monkeypatch.setattr(S, "all_reduce_cpu", lambda values: reduces.append(list(values)) or real_reduce(values))
    monkeypatch.setattr(tr.checkpointer, "close", lambda: closes.append(1) or real_close())
    end = tr.fit(StopFlag())
    assert end.completed and end.step == 3
    step = [("pre_step", 0), ("pre_optim_step", 0), ("post_step", 1),
            ("pre_step", 1), ("pre_optim_step", 1), ("log_metrics", 2), ("post_step", 2),
            ("pre_step", 2), ("pre_optim_step", 2), ("log_metrics", 3), ("post_step", 3)]
    assert rec.events == [("pre_train", 0), *step, ("post_train", 3), ("close",)]
    # the step summed its target count over the ranks itself, with the stop vote (0) in the same all-reduce
    assert len(reduces) == 3 and all(len(v) == 2 and v[1] == 0.0 for v in reduces)
    assert closes == [1]


def test_a_skipped_step_gets_no_update_hook_and_a_signal_saves_and_closes(tokens, tmp_path, monkeypatch):
    import math

    import torch

    from biomed_llama.train import step as S
    from biomed_llama.train.callbacks import CheckpointCallback
    from biomed_llama.train.trainer import StopFlag, TrainingInterrupted

    tr = _trainer(tmp_path, tokens, max_steps=4, max_nonfinite_skips=1)
    rec = _recorder()
    tr.add_callbacks(rec, CheckpointCallback(every=100))
    real, calls = S.clip_grad_norm, []

    def clip(model, max_norm):  # step 2's gradient norm is NaN: not applied, skipped
        calls.append(1)
        norm = real(model, max_norm)
        return torch.full_like(norm, math.nan) if len(calls) == 2 else norm

    monkeypatch.setattr(S, "clip_grad_norm", clip)
    stop = StopFlag()
    real_post = rec.post_step

    def post_step(out):  # a signal arrives during step 3: every rank stops before step 4
        real_post(out)
        if out.step == 3:
            stop.signum = 10
    monkeypatch.setattr(rec, "post_step", post_step)
    closes = []
    real_close = tr.checkpointer.close
    monkeypatch.setattr(tr.checkpointer, "close", lambda: closes.append(1) or real_close())
    with pytest.raises(TrainingInterrupted, match="stopped by signal 10 at step 3") as e:
        tr.fit(stop)
    assert e.value.exit_code == 128 + 10
    updates = [e for e in rec.events if e[0] == "pre_optim_step"]
    assert updates == [("pre_optim_step", 0), ("pre_optim_step", 1)]  # steps 1 and 3; not the skipped step 2
    assert [e for e in rec.events if e[0] == "post_step"] == [("post_step", 1), ("post_step", 2), ("post_step", 3)]
    assert rec.events[-1] == ("close",) and ("post_train", 3) not in rec.events
    assert tr.history.skipped == [2] and closes == [1]
    assert [s for s, _ in H.run_checkpoints(tmp_path / "ckpt")] == [3]  # the signal's save
    assert tr.loader.step == 3  # step 4's batch was given back


def test_bare_train_steps_are_the_loops_steps(tokens, tmp_path):
    """What the benchmarks drive (`Trainer.train_step` without `fit`) gives the losses of a full run."""
    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    full = run_pretrain(PretrainParams.of(H.validate(H.tiny_params(tmp_path / "full", tokens, max_steps=3,
                                                                   log_every=1))))
    tr = _trainer(tmp_path / "bare", tokens, max_steps=3, log_every=1)
    losses = [float(tr.train_step().loss) for _ in range(3)]
    assert losses == [full.losses[s] for s in (1, 2, 3)]
