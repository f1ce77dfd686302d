"""The loop's side effects as callbacks: the log step (history, log line, progress) and checkpoints.

`LogHook` runs on every rank (its loss all-reduce is a collective), records each log row in the run's
history (checkpointed; `loss.tsv` is written from it when the run finishes) and hands it to its sinks
(rank 0's: the log line, the progress bar). `CheckpointHook` saves on its cadence,
at the last step and when the loop is interrupted. Order matters: the log hook comes first, so a
checkpoint's history holds the row of the step it saves.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Sequence

import torch.distributed as dist

from biomed_llama.fsutil import finite_json
from biomed_llama.train import metrics as M
from biomed_llama.train.loop import Callback, StepOutput, print_line
from biomed_llama.train.mesh import DistEnv

LogSink = Callable[[dict[str, Any]], None]


class RunHistory:
    """The logged rows (loss, grad norm, lr, throughput, …), throughput samples and skipped steps of a run.

    Checkpointed, so the metrics and the loss curve of a resumed run cover it all, and a rerun that resumes
    at the final checkpoint writes them byte for byte as the first run did: they are written from here, not
    from what the process saw. Rows are stored as JSON keeps them (a non-finite value as None).
    """

    def __init__(self):
        self.losses: dict[int, float] = {}
        self.tokens_per_s: list[float] = []
        self.rows: dict[int, dict[str, Any]] = {}
        self.skipped: list[int] = []
        """Steps not applied for a non-finite loss or gradient norm (`pretrain.max_nonfinite_skips`)."""

    def record(self, step: int, loss: float, tokens_per_s: float, row: dict[str, Any] | None = None) -> None:
        """Add one log step's global loss and throughput sample (and its whole log row)."""
        self.losses[step] = loss
        self.tokens_per_s.append(tokens_per_s)
        if row is not None:
            self.rows[step] = finite_json(row)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able copy (step keys as strings)."""
        return {"losses": {str(k): v for k, v in self.losses.items()}, "tokens_per_s": list(self.tokens_per_s),
                "rows": {str(k): v for k, v in self.rows.items()}, "skipped": list(self.skipped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (a checkpoint of an earlier version has no rows: step and loss only)."""
        self.losses = {int(k): v for k, v in state.get("losses", {}).items()}
        self.tokens_per_s = list(state.get("tokens_per_s", []))
        rows = state.get("rows") or {str(k): {"step": k, "loss": v} for k, v in self.losses.items()}
        self.rows = {int(k): dict(v) for k, v in rows.items()}
        self.skipped[:] = [int(s) for s in state.get("skipped", [])]  # in place: the loop holds this list

    def peak_memory_gib(self) -> float | None:
        """The largest logged memory reading (None on CPU, or before any log step)."""
        values = [r["memory_gib"] for r in self.rows.values() if r.get("memory_gib") is not None]
        return max(values) if values else None


class LogHook(Callback):
    """Every `every` steps and at the last: the global loss, throughput and MFU into `history` and the sinks."""

    def __init__(self, *, every: int, total_steps: int, tokens_per_step: int, flops_per_token: float,
                 env: DistEnv, history: RunHistory, sinks: Sequence[LogSink]):
        self.every, self.total_steps, self.env = every, total_steps, env
        self.tokens_per_step, self.flops_per_token = tokens_per_step, flops_per_token
        self.peak = M.peak_flops(env.device)
        self.history, self.sinks = history, list(sinks)
        self._t0: float | None = None  # start of the current throughput sample
        self._steps = 0  # steps in it

    def pre_step(self, step: int) -> None:
        # A sample starts with the first step after a log, so a checkpoint saved at the log step stays out of it.
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def post_step(self, out: StepOutput) -> None:
        self._steps += 1
        if out.step % self.every and out.step != self.total_steps:
            return
        if self.env.world_size > 1:
            dist.all_reduce(out.loss)
        loss, grad_norm = float(out.loss), float(out.grad_norm)  # syncs the device
        tok_s = self.tokens_per_step * self._steps / (time.perf_counter() - self._t0)
        self._t0, self._steps = None, 0
        per_dev = tok_s / self.env.world_size
        row = {"step": out.step, "loss": loss, "grad_norm": grad_norm, "lr": out.lr, "tokens_per_s": tok_s,
               "tokens_per_s_per_device": per_dev, "mfu": M.mfu(per_dev, self.flops_per_token, self.peak),
               "memory_gib": M.memory_gib(self.env.device)}
        self.history.record(out.step, loss, tok_s, row)
        for sink in self.sinks:
            sink(row)


class CheckpointHook(Callback):
    """Save every `every` steps, at the last step, and where a signal stopped the loop; between saves let an
    async save in flight become complete (`Checkpointer.poll`) and warm the host buffers once (`prestage`).

    `check(step)` runs on every rank before each save and raises where the state must not be saved (weights
    that are not finite): a checkpoint is never written from a non-finite state, so `keep_checkpoints` never
    prunes a finite checkpoint in favour of one.
    """

    def __init__(self, checkpointer, *, every: int, total_steps: int, check: Callable[[int], None] | None = None):
        self.checkpointer, self.every, self.total_steps, self.check = checkpointer, every, total_steps, check

    def _save(self, step: int) -> None:
        if self.check is not None:
            self.check(step)
        self.checkpointer.save(step)

    def post_step(self, out: StepOutput) -> None:
        if out.step % self.every == 0 or out.step == self.total_steps:
            self._save(out.step)
        else:
            self.checkpointer.poll()
            self.checkpointer.prestage()

    def on_interrupt(self, step: int) -> None:
        self._save(step)


def progress_bar(enabled: bool, total: int, start: int, label: str):
    """A rich progress bar (stderr) or a null context; yields a sink that moves it to each log row's step."""
    if not enabled:
        return contextlib.nullcontext(lambda row: None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    @contextlib.contextmanager
    def bar():
        with Progress(label, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True), redirect_stdout=False, transient=False) as p:
            task = p.add_task(label, total=total, completed=start)
            yield lambda row: p.update(task, completed=row["step"])

    return bar()


def console_sink(total_steps: int) -> LogSink:
    """Prints the one log line per log step."""

    def sink(row: dict[str, Any]) -> None:
        print_line(M.format_log_line(row["step"], total_steps, row["loss"], row["grad_norm"], row["lr"],
                                     row["tokens_per_s"], row["mfu"], row["memory_gib"]))

    return sink
