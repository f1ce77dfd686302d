"""What a training run tells and remembers: its log lines, the run's history, the console and the progress bar.

`print_line` is the one way training code prints (rank 0 only calls it). `RunHistory` holds the logged
rows (checkpointed; `loss.tsv` and the final metrics are written from it). `ConsoleCallback` and
`ProgressCallback` are rank 0's callbacks that show each log row (`Callback.log_metrics`, the row the
`LogCallback` of `biomed_llama.train.callbacks` computed on every rank).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

from biomed_llama.fsutil import finite_json
from biomed_llama.train import metrics as M
from biomed_llama.train.callbacks import Callback


def print_line(line: str) -> None:
    """Print a log line to stdout at once (rank 0 only calls this)."""
    print(line, file=sys.stdout, flush=True)


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
        return {
            "losses": {str(k): v for k, v in self.losses.items()},
            "tokens_per_s": list(self.tokens_per_s),
            "rows": {str(k): v for k, v in self.rows.items()},
            "skipped": list(self.skipped),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (a checkpoint of an earlier version has no rows: step and loss only)."""
        self.losses = {int(k): v for k, v in state.get("losses", {}).items()}
        self.tokens_per_s = list(state.get("tokens_per_s", []))
        rows = state.get("rows") or {str(k): {"step": k, "loss": v} for k, v in self.losses.items()}
        self.rows = {int(k): dict(v) for k, v in rows.items()}
        self.skipped[:] = [int(s) for s in state.get("skipped", [])]  # in place: the trainer holds this list

    def peak_memory_gib(self) -> float | None:
        """The largest logged memory reading (None on CPU, or before any log step)."""
        values = [r["memory_gib"] for r in self.rows.values() if r.get("memory_gib") is not None]
        return max(values) if values else None


class ConsoleCallback(Callback):
    """Rank 0: prints the one log line of each log row."""

    def __init__(self, total_steps: int):
        self.total_steps = total_steps

    def log_metrics(self, row: dict[str, Any]) -> None:
        print_line(
            M.format_log_line(
                row["step"],
                self.total_steps,
                row["loss"],
                row["grad_norm"],
                row["lr"],
                row["tokens_per_s"],
                row["mfu"],
                row["memory_gib"],
            )
        )


class ProgressCallback(Callback):
    """Rank 0: a rich progress bar (stderr) from the start of the loop to its end, moved to each log row's step."""

    def __init__(self, total: int, label: str):
        self.total, self.label = total, label
        self._stack = contextlib.ExitStack()
        self._advance: Callable[[int], None] | None = None  # moves the bar to a step (set by `pre_train`)

    def pre_train(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        p = self._stack.enter_context(
            Progress(
                self.label,
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                redirect_stdout=False,
                transient=False,
            )
        )
        task = p.add_task(self.label, total=self.total, completed=self.trainer.global_step)
        self._advance = lambda step: p.update(task, completed=step)

    def log_metrics(self, row: dict[str, Any]) -> None:
        if self._advance is not None:
            self._advance(row["step"])

    def post_train(self, end) -> None:
        self.close()  # before the export's own output

    def close(self) -> None:
        self._advance = None
        self._stack.close()
