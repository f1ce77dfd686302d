"""The training loop: steps until the budget is spent or a signal arrives, calling its callbacks.

The loop owns only the order of things: fetch a batch, agree with every rank on the normaliser and on
whether to stop, run the step (`biomed_llama.train.step`), tell the callbacks. Logging, loss curves,
progress and checkpoints are callbacks (`biomed_llama.train.hooks`), as in OLMo-core's trainer.
A SIGTERM / SIGUSR1 (Slurm's pre-timeout warning) on any rank stops every rank at the same step
boundary; the callbacks' `on_interrupt` saves a checkpoint there.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from typing import Sequence

import torch

from biomed_llama.data.loader import DistributedLoader
from biomed_llama.errors import UserError
from biomed_llama.train.mesh import all_reduce_cpu
from biomed_llama.train.step import NonFinite, TrainStep


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

    def install(self) -> "StopFlag":
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


class Callback:
    """Hooks of the loop (each a no-op here); side effects live in subclasses, not in the loop."""

    def pre_step(self, step: int) -> None:
        """Before step `step + 1` fetches its batch."""

    def post_step(self, out: StepOutput) -> None:
        """After the optimizer step `out.step`."""

    def on_interrupt(self, step: int) -> None:
        """Every rank stops after `step` steps on a signal (the batch it had fetched is given back)."""


@dataclass
class LoopEnd:
    """Where `train_loop` stopped: the last step done, and the signal that stopped it (0: the budget was spent),
    or the non-finite step that stopped it (`diverged_at`, not applied, with its values)."""

    step: int
    interrupted_by: int = 0
    diverged_at: int = 0
    nonfinite: NonFinite | None = None


def train_loop(step_fn: TrainStep, loader: DistributedLoader, *, start: int, total_steps: int, stop: StopFlag,
               callbacks: Sequence[Callback], max_skips: int = 0, skipped: list[int] | None = None) -> LoopEnd:
    """Run steps `start+1 … total_steps`, calling `callbacks` in order; stop cleanly on a signal.

    A step the step function did not apply (a non-finite loss or gradient norm) is appended to `skipped` (the
    run's list, checkpointed with its history) while it holds fewer than `max_skips`; otherwise the loop stops
    there, before any callback sees that step (no log row, no checkpoint of it).
    """
    skipped = [] if skipped is None else skipped
    step = start
    while step < total_steps:
        for cb in callbacks:
            cb.pre_step(step)
        micros = loader.next_batch()
        # One CPU all-reduce per step: the global loss normaliser, and whether any rank got a signal.
        total, votes = all_reduce_cpu([float(step_fn.count(micros)), float(stop.signum)])
        if votes > 0:
            loader.step -= 1  # that batch was not trained on
            for cb in callbacks:
                cb.on_interrupt(step)
            # ranks that did not get the signal themselves report SIGTERM's code
            return LoopEnd(step, stop.signum or signal.SIGTERM)
        lr = step_fn.lr()
        loss, grad_norm = step_fn(micros, int(total))
        step += 1
        if step_fn.skipped is not None:
            if len(skipped) >= max_skips:
                return LoopEnd(step - 1, diverged_at=step, nonfinite=step_fn.skipped)
            skipped.append(step)
        out = StepOutput(step, loss, grad_norm, lr)
        for cb in callbacks:
            cb.post_step(out)
    return LoopEnd(step)


def print_line(line: str) -> None:
    """Print a log line to stdout at once (rank 0 only calls this)."""
    print(line, file=sys.stdout, flush=True)
