"""One training run's lifecycle: the `Trainer` owns the loop, the step, the checkpointer and the callbacks.

As OLMo-core's `Trainer` (src/olmo_core/train/trainer.py: `fit` runs the loop and calls the callbacks)
and torchtitan's: `biomed_llama.train.engine.build` makes the parts (model, optimizer, loader, step);
the trainer then
- runs the loop (`fit`): steps until the budget is spent, a signal arrives or a step is not finite,
  each step being `train_step` (the callbacks' `pre_step`, the next batch, one CPU all-reduce of the
  loss normaliser and the stop vote inside the step, forward/backward, the callbacks' `pre_optim_step`,
  the update, `post_step`);
- owns the checkpointer: made by `open_checkpoints`, loaded by `load_checkpoint`, written through
  `save_checkpoint` (never from non-finite weights), and closed once, by `fit`, when the loop has
  ended the same way on every rank (after `post_train` where the budget was spent, so the export
  overlaps an async save still being written);
- calls its callbacks (`biomed_llama.train.callbacks`), the one way to add behaviour to a run.

A SIGTERM / SIGUSR1 (Slurm's pre-timeout warning) on any rank stops every rank at the same step
boundary; the checkpoint callback's `on_interrupt` saves a checkpoint there and `fit` raises
`TrainingInterrupted` (exit 128 + signal). A non-finite step (past `max_nonfinite_skips`) or
non-finite weights before a save raise `DivergedError` (exit 5), keeping the finite checkpoints.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from biomed_llama.data.loader import DistributedLoader
from biomed_llama.errors import DivergedError, UserError
from biomed_llama.train import metrics as M
from biomed_llama.train.callbacks import Callback, LoopEnd, StepOutput
from biomed_llama.train.checkpoint import Checkpointer, latest_checkpoint, training_state
from biomed_llama.train.config import PretrainConfig
from biomed_llama.train.log import RunHistory
from biomed_llama.train.mesh import DistEnv
from biomed_llama.train.step import TrainStep, weights_finite


class TrainingInterrupted(UserError):
    """Training stopped on a signal after saving a checkpoint; exit code 128 + signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopFlag:
    """Records SIGTERM / SIGUSR1 (Slurm's pre-timeout warning); the loop stops at the next step boundary."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.signum = 0
        self._previous = {}

    def install(self) -> StopFlag:
        """Install the handlers (main thread only), remembering the previous ones."""
        for s in self.SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def uninstall(self) -> None:
        """Restore the handlers that were there before."""
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        self.signum = signum


class _Diverged(Exception):
    """Raised inside the loop (every rank alike) where a state must not be saved; `fit` ends the run on it."""


@dataclass
class Trainer:
    """One training run: the parts `engine.build` made, the run's history and progress, its checkpointer and its
    callbacks; `fit` runs it."""

    spec: Any
    """The stage's `engine.TrainSpec`."""
    env: DistEnv
    mesh: Any
    """The (`replicate`, `shard`) DeviceMesh."""
    loader: DistributedLoader
    model: torch.nn.Module
    config: Any
    """The model's HF `LlamaConfig`."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: TrainStep
    total_steps: int
    accumulation: int
    """Micro batches per rank per optimizer step (`data.loader.grad_accumulation`)."""
    n_params: int
    n_embed: int
    kernels: list[str] = field(default_factory=list)
    """The fused kernels in use (`pretrain.kernels` on CUDA; none on CPU)."""
    history: RunHistory = field(default_factory=RunHistory)
    """The logged rows and skipped steps (checkpointed)."""
    callbacks: list[Callback] = field(default_factory=list)
    checkpointer: Checkpointer | None = None
    """Made by `open_checkpoints`; closed by `fit`."""
    run_dir: Path | None = None
    """The run's checkpoint folder (`open_checkpoints`)."""
    global_step: int = 0
    """Optimizer steps done (restored by `load_checkpoint`)."""

    @property
    def cfg(self) -> PretrainConfig:
        """The effective engine config."""
        return self.spec.cfg

    @property
    def tokens_per_step(self) -> int:
        """Sequence positions per optimizer step over all ranks."""
        return self.cfg.global_batch_size * self.cfg.max_seq_length

    @property
    def flops_per_token(self) -> float:
        """Training FLOPs per token (`metrics.flops_per_token`)."""
        return M.flops_per_token(
            self.n_params, self.n_embed, self.config.num_hidden_layers, self.config.hidden_size, self.cfg.max_seq_length
        )

    def add_callbacks(self, *callbacks: Callback) -> None:
        """Attach `callbacks` (called in the order added)."""
        for cb in callbacks:
            cb.trainer = self
            self.callbacks.append(cb)

    def log_metrics(self, row: dict[str, Any]) -> None:
        """Hand a log row to every callback (`LogCallback` calls this on every rank)."""
        for cb in self.callbacks:
            cb.log_metrics(row)

    def open_checkpoints(self, run_dir: Path, run_id: str) -> Checkpointer:
        """The run's checkpointer over the training state (model, optimizer, schedule, data position, history, RNG)
        in `run_dir`, each checkpoint recording `run_id`."""
        parts = training_state(self.model, self.optimizer, self.scheduler, self.loader, self.history)
        self.checkpointer = Checkpointer(
            run_dir,
            parts,
            keep=self.cfg.keep_checkpoints,
            meta={"run": run_id},
            async_save=self.cfg.checkpoint_async,
            device=self.env.device,
        )
        self.run_dir = run_dir
        return self.checkpointer

    def opened_checkpointer(self) -> Checkpointer:
        """The checkpointer `open_checkpoints` made: loading, saving and `fit` run only after it."""
        assert self.checkpointer is not None, "Trainer.open_checkpoints was not called"
        return self.checkpointer

    def load_checkpoint(self, path: Path) -> None:
        """Resume from the checkpoint folder `path` (collective): every part of the state, and the step."""
        from biomed_llama.model.build import reset_rotary

        reset_rotary(self.model)
        self.global_step = self.opened_checkpointer().load(path)

    def save_checkpoint(self, step: int) -> None:
        """Save the state at `step` (collective); weights that are not finite (a finite but huge update overflowed
        them) end the run unsaved instead."""
        if not weights_finite(self.model):
            raise _Diverged(f"non-finite weights after step {step}; not saved")
        self.opened_checkpointer().save(step)

    def train_step(self, stop: StopFlag | None = None) -> StepOutput | LoopEnd:
        """Step `global_step + 1` with every hook: its output, or where the run stops before it (any rank got a
        signal: the fetched batch is given back and the callbacks' `on_interrupt` run) or at it (a non-finite
        step past `max_nonfinite_skips`: not applied, no `post_step` sees it)."""
        for cb in self.callbacks:
            cb.pre_step(self.global_step)
        micros = self.loader.next_batch()
        stop = stop or StopFlag()  # (never installed: no signal stops a bare `train_step`)
        total, (votes,) = self.step.normaliser(micros, stop.signum)  # one CPU all-reduce: normaliser, stop vote
        if votes > 0:
            self.loader.step -= 1  # that batch was not trained on
            for cb in self.callbacks:
                cb.on_interrupt(self.global_step)
            # ranks that did not get the signal themselves report SIGTERM's code
            return LoopEnd(self.global_step, stop.signum or signal.SIGTERM)
        lr = self.step.lr()
        loss, grad_norm = self.step(micros, total, pre_optim_step=self._pre_optim_step)
        step = self.global_step + 1
        if (bad := self.step.skipped) is not None:
            if len(self.history.skipped) >= self.cfg.max_nonfinite_skips:
                return LoopEnd(
                    self.global_step,
                    diverged=f"non-finite {bad.what} at step {step} (loss {bad.loss}, "
                    f"grad norm {bad.grad_norm}); that update was not applied",
                )
            self.history.skipped.append(step)
        self.global_step = step
        out = StepOutput(step, loss, grad_norm, lr)
        for cb in self.callbacks:
            cb.post_step(out)
        return out

    def _pre_optim_step(self) -> None:
        for cb in self.callbacks:
            cb.pre_optim_step()

    def _loop(self, stop: StopFlag) -> LoopEnd:
        try:
            while self.global_step < self.total_steps:
                if isinstance(end := self.train_step(stop), LoopEnd):
                    return end
        except _Diverged as e:
            return LoopEnd(self.global_step, diverged=str(e))
        return LoopEnd(self.global_step)

    def fit(self, stop: StopFlag) -> LoopEnd:
        """Run steps `global_step + 1 … total_steps`; then the callbacks' `post_train` and the checkpointer's close.

        Every rank ends the loop alike (the stop vote and the finite checks are collectives), so the checkpointer
        (a collective close: it completes an async save in flight) is closed here, once, on each of those ends.
        A signal raises `TrainingInterrupted`; a divergence `DivergedError` (exit 5): nothing exported and no
        metrics written, the checkpoints saved so far (all finite) kept.
        """
        if self.env.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.env.device)
        try:
            for cb in self.callbacks:
                cb.pre_train()
            end = self._loop(stop)
            if end.completed:
                for cb in self.callbacks:
                    cb.post_train(end)  # the export: an async save may still be written meanwhile
            self.opened_checkpointer().close()
        finally:
            for cb in self.callbacks:
                cb.close()
        if end.interrupted_by:
            raise TrainingInterrupted(
                f"stopped by signal {end.interrupted_by} at step {end.step}; checkpoint "
                f"saved in {self.run_dir}; rerun the same command to resume",
                end.interrupted_by,
            )
        if end.diverged is not None:
            raise DivergedError(self._diverged_message(end.diverged))
        return end

    def _diverged_message(self, what: str) -> str:
        """One line naming `what` stopped the run, the steps skipped before and the last finite checkpoint kept."""
        last = latest_checkpoint(self.opened_checkpointer().root)  # = run_dir
        kept = f"the last finite checkpoint {last} is kept" if last else "no checkpoint was saved"
        skips = self.history.skipped
        skipped = f" after skipping {len(skips)} (steps {', '.join(map(str, skips))})" if skips else ""
        return (
            f"{self.spec.stage}: {what}{skipped}; stopped: nothing exported, no metrics written, {kept} "
            f"(lower the learning rate, or let pretrain.max_nonfinite_skips skip such steps)"
        )
