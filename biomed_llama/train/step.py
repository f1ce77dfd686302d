"""One optimizer step: forward/backward over a rank's micro batches, clip, step the optimizer and schedule.

Loss weighting (`pretrain.loss_weighting`) is a part of its own, chosen by `loss_weighting()`:
- `TokenMeanLoss`: every target token of the global batch weighs 1/N (N: the global batch's target
  tokens, all ranks and micro batches): the gradient of the global token mean.
- `SequenceMeanLoss`: a target token of sequence s weighs 1/(n_s · N_seq) (n_s: the sequence's
  targets, N_seq: the global batch's sequences that have any): the mean over sequences of each
  sequence's mean token loss, what HF Trainer 4.28 computed with one sequence per device (the
  authors' fork be40569cc: `modeling_llama.py:735-740` takes the micro batch's token mean,
  `trainer.py:2709-2711` divides by the accumulation steps, DDP/FSDP average over ranks).
Both normalisers are global sums, so either loss is the same for any micro × accumulation × world
split. `count` gives a rank's share of the normaliser (`TrainStep.normaliser` sums it over ranks,
inside the step), `inputs` the model inputs that carry the weighting. FSDP averages gradients over
the data-parallel ranks, so the backward loss is scaled by their number.

Host syncs: micro batches are copied to the device from pinned memory (a copy from pageable memory
waits for the device to drain), so the CPU queues the next micro batch while the GPU still computes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.distributed as dist

from biomed_llama.data.loader import IGNORE_INDEX, MicroBatch
from biomed_llama.train.mesh import all_reduce_cpu

if TYPE_CHECKING:
    from torch.distributed.fsdp import FSDPModule


def _targets(mb: MicroBatch) -> torch.Tensor:
    """[micro, seq-1] bool: positions with a target (labels shifted by one, -100 excluded)."""
    return mb.labels[:, 1:] != IGNORE_INDEX


class TokenMeanLoss:
    """Every target token of the global batch weighs the same (HF Trainer's loss with its token-count normaliser)."""

    name = "token"

    def count(self, micros: list[MicroBatch]) -> int:
        """This rank's share of the normaliser: its target tokens in this step's micro batches."""
        return sum(mb.n_targets() for mb in micros)

    def inputs(self, mb: MicroBatch, total: int, weighted: bool) -> dict[str, torch.Tensor]:
        """Model kwargs (CPU): HF's own loss divided by `total`; per-token weights 1/total where the model's
        loss is the weighted one (the fused or the compiled head)."""
        if weighted:
            return {"token_weights": _targets(mb).to(torch.float32) / total}
        # A tensor, not an int: the kwarg reaches every (compiled) decoder layer, and a Python int that
        # changes per step (truncate packing) would make torch.compile recompile each step.
        return {"num_items_in_batch": torch.tensor(total)}


class SequenceMeanLoss:
    """Every sequence (with targets) of the global batch weighs the same; its tokens share its weight."""

    name = "sequence"

    def count(self, micros: list[MicroBatch]) -> int:
        """This rank's share of the normaliser: its sequences with at least one target."""
        return sum(int(_targets(mb).any(dim=1).sum()) for mb in micros)

    def inputs(self, mb: MicroBatch, total: int, weighted: bool = True) -> dict[str, torch.Tensor]:
        """Per-token weights 1/(n_s · total) of each sequence s with n_s targets (0 where none)."""
        targets = _targets(mb)
        n = targets.sum(dim=1, keepdim=True).to(torch.float64)
        per_seq = torch.where(n > 0, 1.0 / (n.clamp(min=1) * total), torch.zeros_like(n))
        return {"token_weights": (targets * per_seq).to(torch.float32)}


def loss_weighting(name: str):
    """The loss-weighting part for `pretrain.loss_weighting`."""
    return {"token": TokenMeanLoss, "sequence": SequenceMeanLoss}[name]()


def clip_grad_norm(model, max_norm: float) -> torch.Tensor:
    """Clip gradients to `max_norm` by their norm over all shards; return the (pre-clip) total norm."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def to_device(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Copy CPU tensors to `device` without a host sync (through pinned memory on CUDA)."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in tensors.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in tensors.items()}


@dataclass(frozen=True)
class NonFinite:
    """A step that was not applied: its global loss and its gradient norm, one of them NaN or infinite."""

    loss: float
    grad_norm: float

    @property
    def what(self) -> str:
        """Which value is not finite (the loss first: a NaN loss makes the gradients NaN too)."""
        return "loss" if not math.isfinite(self.loss) else "gradient norm"


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def nonfinite(local_loss: torch.Tensor, grad_norm: torch.Tensor) -> NonFinite | None:
    """The step's values if its loss (summed over ranks) or gradient norm is not finite, else None.

    Every rank gets the same answer (one scalar all-reduce), so every rank skips or stops at the same step.
    Reading the values is a host sync, once per step before the update: an update from a NaN gradient
    would make every weight NaN, and no later check could undo it.
    """
    both = torch.stack([local_loss.detach().float(), grad_norm.detach().float().to(local_loss.device)])
    if _world() > 1:
        dist.all_reduce(both)  # [global loss, world × grad norm]: finite exactly when every rank's are
    loss, norm = both.tolist()
    if math.isfinite(loss) and math.isfinite(norm):
        return None
    return NonFinite(loss, float(grad_norm))


def weights_finite(model: torch.nn.Module) -> bool:
    """Whether every parameter of `model` (every rank's shards) is finite; a collective where the world is larger."""
    bad = None
    for p in model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        flag = (~torch.isfinite(local.detach())).any()
        bad = flag if bad is None else bad | flag
    if bad is None:
        return True
    count = bad.float().reshape(1)
    if _world() > 1:
        dist.all_reduce(count)
    return float(count) == 0.0


@dataclass
class StepOptions:
    """How a step runs (speed only; the numbers are the same either way)."""

    sync_every_micro: bool = False
    """Reduce-scatter gradients after every micro batch (else only after the last: more memory, less traffic)."""
    keep_gathered: tuple[torch.nn.Module, ...] = ()
    """FSDP modules whose parameters stay gathered between the micro batches of a step (`parallelize.
    gathered_modules`: the whole model with `reshard_after_forward: false`, or the last `gathered_layers` layers)."""
    weighted_head: bool = False
    """The model computes the loss from per-token weights (the fused or the compiled head): both weightings pass
    weights."""
    forward_context: Callable[[], Any] = contextlib.nullcontext
    """Makes a fresh context for each forward (e.g. the SDPA kernel choice)."""


def _fsdp_flags(model: torch.nn.Module, k: int, n: int, opts: StepOptions) -> None:
    last = k == n - 1
    if hasattr(model, "set_requires_gradient_sync"):
        # a `fully_shard`ed model (FSDP2 swaps its class for an `FSDPModule` subclass), and so are the modules
        # `parallelize.gathered_modules` picked from it
        cast("FSDPModule", model).set_requires_gradient_sync(last or opts.sync_every_micro)
        for module in opts.keep_gathered:
            cast("FSDPModule", module).set_reshard_after_backward(last)


@dataclass
class TrainStep:
    """The optimizer step of a built model: call it with a rank's micro batches (the trainer's `train_step` does)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    dp_size: int
    """Data-parallel ranks (FSDP averages their gradients; the loss is scaled back up by this)."""
    max_grad_norm: float
    loss: TokenMeanLoss | SequenceMeanLoss = field(default_factory=TokenMeanLoss)
    options: StepOptions = field(default_factory=StepOptions)
    skipped: NonFinite | None = field(default=None, init=False)
    """Set by the last call when its loss or gradient norm was not finite: then nothing was updated."""

    def lr(self) -> float:
        """The learning rate the next step uses."""
        # torch types it `float | Tensor`; here it is a float (`OptimConfig.lr` times the schedule's multiplier)
        return float(self.scheduler.get_last_lr()[0])

    def normaliser(self, micros: list[MicroBatch], *also: float) -> tuple[int, list[float]]:
        """The global loss normaliser of this step: each rank's share (`count`) summed over the ranks, in one CPU
        all-reduce that also sums `also` (other per-step numbers the caller needs from every rank, e.g. the
        trainer's stop vote), so a step costs one such collective."""
        total, *rest = all_reduce_cpu([float(self.loss.count(micros)), *map(float, also)])
        return int(total), rest

    def __call__(
        self, micros: list[MicroBatch], total: int | None = None, *, pre_optim_step: Callable[[], None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward/backward each micro batch, clip, step; return (loss, grad norm).

        `total` is the global normaliser (`normaliser`; computed here when not given). The returned loss is this
        rank's share: summed over ranks it is the global batch's loss. A step whose loss or gradient norm is not
        finite changes nothing (no update, no schedule step; `skipped` says so): the trainer decides whether the
        run skips it or stops. `pre_optim_step` runs after the last backward of a finite step, before the
        optimizer changes anything (the trainer's callbacks: e.g. wait for an async checkpoint's host copy).
        """
        if total is None:
            total, _ = self.normaliser(micros)
        local_loss = torch.zeros((), device=self.device, dtype=torch.float32)
        batches = [
            to_device(
                {
                    "input_ids": mb.input_ids,
                    "labels": mb.labels,
                    **self.loss.inputs(mb, total, self.options.weighted_head),
                },
                self.device,
            )
            for mb in micros
        ]
        for k, kwargs in enumerate(batches):
            _fsdp_flags(self.model, k, len(batches), self.options)
            with self.options.forward_context():
                loss = self.model(**kwargs).loss
            (loss * self.dp_size).backward()
            local_loss += loss.detach().float()
        grad_norm = clip_grad_norm(self.model, self.max_grad_norm)
        self.skipped = nonfinite(local_loss, grad_norm)
        if self.skipped is not None:
            self.optimizer.zero_grad(set_to_none=True)
            return local_loss, grad_norm
        if pre_optim_step is not None:
            pre_optim_step()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return local_loss, grad_norm
