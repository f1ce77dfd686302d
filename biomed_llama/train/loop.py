"""The training loop: one optimizer step (`train_step`), and the loop around it with logging,
periodic checkpoints and graceful stop on SIGTERM / SIGUSR1.

Loss normalisation: every micro batch's summed token loss is divided by the number of target
tokens in the whole global batch (all ranks, all micro batches), so the gradient is that of the
global mean token loss whatever the world size, micro batch or accumulation. FSDP averages
gradients over the data-parallel ranks, so the backward loss is scaled by their number.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist

from biomed_llama.data.loader import DistributedLoader, MicroBatch
from biomed_llama.errors import UserError
from biomed_llama.train import metrics as M
from biomed_llama.train.mesh import DistEnv, all_reduce_cpu


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


def _set_sync(model, enabled: bool) -> None:
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(enabled)


def clip_grad_norm(model, max_norm: float) -> torch.Tensor:
    """Clip gradients to `max_norm` by their norm over all shards; return the (pre-clip) total norm."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def train_step(model, optimizer, scheduler, micros: list[MicroBatch], n_targets: int, dp_size: int,
               device: torch.device, max_grad_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward/backward each micro batch (gradient sync only on the last), clip, step; return (loss part, grad norm).

    The returned loss is this rank's share: summed over ranks it is the global mean token loss.
    """
    local_loss = torch.zeros((), device=device, dtype=torch.float32)
    # A tensor, not an int: the kwarg reaches every (compiled) decoder layer, and a Python int that
    # changes per step (truncate packing) would make torch.compile recompile each step.
    n_targets_t = torch.tensor(n_targets, device=device)
    for k, mb in enumerate(micros):
        _set_sync(model, k == len(micros) - 1)
        out = model(input_ids=mb.input_ids.to(device, non_blocking=True),
                    labels=mb.labels.to(device, non_blocking=True), num_items_in_batch=n_targets_t)
        (out.loss * dp_size).backward()
        local_loss += out.loss.detach().float()
    grad_norm = clip_grad_norm(model, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return local_loss, grad_norm


@dataclass
class LoopConfig:
    """What the loop needs beyond the model: step budget, cadence and throughput constants."""

    total_steps: int
    log_every: int
    checkpoint_every: int
    max_grad_norm: float
    tokens_per_step: int
    flops_per_token: float
    peak_flops: float | None


@dataclass
class LoopResult:
    """Outcome of `train_loop`: last step, logged losses, throughput samples, and whether it was stopped."""

    step: int
    losses: dict[int, float] = field(default_factory=dict)
    tokens_per_s: list[float] = field(default_factory=list)
    interrupted_by: int = 0

    def history(self) -> dict:
        """JSON-able record of the run so far, kept in checkpoints so final metrics cover a resumed run."""
        return {"losses": {str(k): v for k, v in self.losses.items()}, "tokens_per_s": list(self.tokens_per_s)}

    @classmethod
    def from_history(cls, step: int, history: dict | None) -> "LoopResult":
        """Rebuild the record at `step` from `history()` output (or a fresh one)."""
        history = history or {}
        return cls(step=step, losses={int(k): v for k, v in history.get("losses", {}).items()},
                   tokens_per_s=list(history.get("tokens_per_s", [])))


def train_loop(model, optimizer, scheduler, loader: DistributedLoader, env: DistEnv, cfg: LoopConfig, *,
               result: LoopResult, stop: StopFlag, save: Callable[[int], None],
               on_log: Callable[[dict], None]) -> LoopResult:
    """Run steps `result.step+1 … total_steps`, recording into `result` (restored from a checkpoint
    on resume); log, checkpoint via `save(step)`, stop cleanly on a signal."""
    step, t_last, steps_since = result.step, time.perf_counter(), 0
    while step < cfg.total_steps:
        micros = loader.next_batch()
        local_targets = sum(mb.n_targets() for mb in micros)
        # One CPU all-reduce per step: the global target count, and whether any rank got a signal.
        n_targets, votes = all_reduce_cpu([float(local_targets), float(stop.signum)])
        if votes > 0:
            loader.step -= 1  # that batch was not trained on
            save(step)
            # ranks that did not get the signal themselves report SIGTERM's code
            result.interrupted_by = stop.signum or signal.SIGTERM
            return result
        lr = scheduler.get_last_lr()[0]  # the rate this step uses
        loss, grad_norm = train_step(model, optimizer, scheduler, micros, int(n_targets), loader.dp_size,
                                     env.device, cfg.max_grad_norm)
        step += 1
        steps_since += 1
        result.step = step
        if step % cfg.log_every == 0 or step == cfg.total_steps:
            if env.world_size > 1:
                dist.all_reduce(loss)
            loss_value, gnorm = float(loss), float(grad_norm)  # syncs the device
            now = time.perf_counter()
            tok_s = cfg.tokens_per_step * steps_since / (now - t_last)
            t_last, steps_since = now, 0
            result.losses[step] = loss_value
            result.tokens_per_s.append(tok_s)
            per_dev = tok_s / env.world_size
            on_log({"step": step, "loss": loss_value, "grad_norm": gnorm, "lr": lr,
                    "tokens_per_s": tok_s, "tokens_per_s_per_device": per_dev,
                    "mfu": M.mfu(per_dev, cfg.flops_per_token, cfg.peak_flops), "memory_gib": M.memory_gib(env.device)})
        if step % cfg.checkpoint_every == 0 or step == cfg.total_steps:
            save(step)
            if steps_since == 0:  # keep the save's time out of the next throughput sample
                t_last = time.perf_counter()
    return result


def print_line(line: str) -> None:
    """Print a log line to stdout at once (rank 0 only calls this)."""
    print(line, file=sys.stdout, flush=True)
