"""The trainer's one extension mechanism: callbacks, called at fixed points of `Trainer.fit`.

The hook points (each a no-op here), in the order a run meets them (as OLMo-core's `Callback`,
src/olmo_core/train/callbacks/callback.py):
- `pre_train()`: before the first step;
- `pre_step(step)`: before step `step + 1` fetches its batch;
- `pre_optim_step()`: after the step's last backward, its values finite, before the optimizer changes anything;
- `post_step(out)`: after the optimizer step `out.step`;
- `log_metrics(row)`: a log row (computed on every rank by `LogCallback`);
- `on_interrupt(step)`: every rank stops after `step` steps on a signal;
- `post_train(end)`: the step budget is spent (before the trainer closes its checkpointer);
- `close()`: always, last, whatever ended the run (no collectives here: a rank may be failing alone).

The callbacks of a run (`biomed_llama.train.engine.run_training`): `LogCallback` (every rank), rank 0's
console and progress bar (`biomed_llama.train.log`), `CheckpointCallback`, and the export. Order matters:
the log callback comes before the checkpoint callback, so a checkpoint's history holds the row of the
step it saves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from biomed_llama.train import metrics as M


@dataclass
class StepOutput:
    """What one optimizer step gives the callbacks."""

    step: int
    """The step just done (1-based)."""
    loss: torch.Tensor
    """This rank's share of the step's loss (summed over ranks: the global batch's loss); not yet synced."""
    grad_norm: torch.Tensor
    """Total gradient norm before clipping."""
    lr: float
    """The learning rate this step used."""


@dataclass
class LoopEnd:
    """Where the loop stopped: the last step done, and the signal that stopped it (0: none), or why the run
    diverged there (None: it did not)."""

    step: int
    interrupted_by: int = 0
    diverged: str | None = None

    @property
    def completed(self) -> bool:
        """The step budget was spent."""
        return not self.interrupted_by and self.diverged is None


class Callback:
    """Hooks of the trainer (each a no-op here); side effects live in subclasses, not in the loop."""

    trainer: Any
    """The `biomed_llama.train.trainer.Trainer` that holds this callback (set by `Trainer.add_callbacks`; not
    imported here: the trainer imports this module)."""

    def pre_train(self) -> None:
        """Before the first step of this process (`trainer.global_step`: where it starts)."""

    def pre_step(self, step: int) -> None:
        """Before step `step + 1` fetches its batch."""

    def pre_optim_step(self) -> None:
        """After the last backward of a step whose loss and gradient norm are finite, before the update."""

    def post_step(self, out: StepOutput) -> None:
        """After the optimizer step `out.step`."""

    def log_metrics(self, row: dict[str, Any]) -> None:
        """A log row: step, loss, grad norm, lr, throughput, MFU, memory (every rank gets the same values)."""

    def on_interrupt(self, step: int) -> None:
        """Every rank stops after `step` steps on a signal (the batch it had fetched is given back)."""

    def post_train(self, end: LoopEnd) -> None:
        """The step budget is spent (not after a signal or a divergence); the checkpointer is still open."""

    def close(self) -> None:
        """Last, whatever ended the run (an error included); local only, no collectives."""


class LogCallback(Callback):
    """Every `every` steps and at the last: the global loss, throughput and MFU into the trainer's history and to
    every callback's `log_metrics`. Runs on every rank (its loss all-reduce is a collective)."""

    def __init__(self, *, every: int):
        self.every = every
        self._t0: float | None = None  # start of the current throughput sample
        self._steps = 0  # steps in it

    def pre_step(self, step: int) -> None:
        # A sample starts with the first step after a log, so a checkpoint saved at the log step stays out of it.
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def post_step(self, out: StepOutput) -> None:
        tr = self.trainer
        self._steps += 1
        if out.step % self.every and out.step != tr.total_steps:
            return
        if tr.env.world_size > 1:
            dist.all_reduce(out.loss)
        loss, grad_norm = float(out.loss), float(out.grad_norm)  # syncs the device
        assert self._t0 is not None, "pre_step starts the sample before every post_step"
        tok_s = tr.tokens_per_step * self._steps / (time.perf_counter() - self._t0)
        self._t0, self._steps = None, 0
        per_dev, peak = tok_s / tr.env.world_size, M.peak_flops(tr.env.device)
        row = {
            "step": out.step,
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": out.lr,
            "tokens_per_s": tok_s,
            "tokens_per_s_per_device": per_dev,
            "mfu": M.mfu(per_dev, tr.flops_per_token, peak),
            "memory_gib": M.memory_gib(tr.env.device),
        }
        tr.history.record(out.step, loss, tok_s, row)
        tr.log_metrics(row)


class CheckpointCallback(Callback):
    """Drives the trainer's checkpointer: save every `every` steps (None: never on a cadence), at the last step and
    where a signal stopped the loop; between saves let an async save in flight become complete
    (`Checkpointer.poll`) and warm the host buffers once (`prestage`); before each update wait for an async
    save's host copy (`wait_for_staging`), so the update never changes tensors still being copied.

    A save goes through `Trainer.save_checkpoint`, which refuses a non-finite state: a checkpoint is never
    written from one, so `keep_checkpoints` never prunes a finite checkpoint in favour of one.
    """

    def __init__(self, *, every: int | None):
        self.every = every

    def pre_optim_step(self) -> None:
        self.trainer.checkpointer.wait_for_staging()

    def post_step(self, out: StepOutput) -> None:
        tr = self.trainer
        if (self.every is not None and out.step % self.every == 0) or out.step == tr.total_steps:
            tr.save_checkpoint(out.step)
        else:
            tr.checkpointer.poll()
            tr.checkpointer.prestage()

    def on_interrupt(self, step: int) -> None:
        self.trainer.save_checkpoint(step)
