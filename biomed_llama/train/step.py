"""One optimizer step: forward/backward over a rank's micro batches, clip, step the optimizer and schedule.

Loss normalisation (`TokenMeanLoss`): every micro batch's summed token loss is divided by the number
of target tokens in the whole global batch (all ranks, all micro batches), so the gradient is that of
the global mean token loss whatever the world size, micro batch or accumulation. FSDP averages
gradients over the data-parallel ranks, so the backward loss is scaled by their number.

The weighting is a part of its own: `count` gives a rank's share of the normaliser (summed over
ranks by the loop), `__call__` the micro batch's loss under it; another weighting (e.g. every
sequence alike) is another such object handed to `TrainStep`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from biomed_llama.data.loader import MicroBatch


class TokenMeanLoss:
    """Every target token of the global batch weighs the same (the HF Trainer's and the original's loss)."""

    def count(self, micros: list[MicroBatch]) -> int:
        """This rank's share of the normaliser: its target tokens in this step's micro batches."""
        return sum(mb.n_targets() for mb in micros)

    def __call__(self, model, mb: MicroBatch, total: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Summed token loss of `mb` divided by `total` (the global batch's target tokens)."""
        # `total` is a tensor, not an int: the kwarg reaches every (compiled) decoder layer, and a
        # Python int that changes per step (truncate packing) would make torch.compile recompile each step.
        out = model(input_ids=mb.input_ids.to(device, non_blocking=True),
                    labels=mb.labels.to(device, non_blocking=True), num_items_in_batch=total)
        return out.loss


def clip_grad_norm(model, max_norm: float) -> torch.Tensor:
    """Clip gradients to `max_norm` by their norm over all shards; return the (pre-clip) total norm."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def _set_sync(model, enabled: bool) -> None:
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(enabled)


@dataclass
class TrainStep:
    """The optimizer step of a built model: call it with a rank's micro batches and the global normaliser."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    dp_size: int
    """Data-parallel ranks (FSDP averages their gradients; the loss is scaled back up by this)."""
    max_grad_norm: float
    loss: TokenMeanLoss = field(default_factory=TokenMeanLoss)

    def lr(self) -> float:
        """The learning rate the next step uses."""
        return self.scheduler.get_last_lr()[0]

    def count(self, micros: list[MicroBatch]) -> int:
        """This rank's share of the loss normaliser (the loop sums it over ranks)."""
        return self.loss.count(micros)

    def __call__(self, micros: list[MicroBatch], total: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward/backward each micro batch (gradient sync on the last only), clip, step; return (loss, grad norm).

        The returned loss is this rank's share: summed over ranks it is the global batch's loss.
        """
        local_loss = torch.zeros((), device=self.device, dtype=torch.float32)
        total_t = torch.tensor(total, device=self.device)
        for k, mb in enumerate(micros):
            _set_sync(self.model, k == len(micros) - 1)
            loss = self.loss(self.model, mb, total_t, self.device)
            (loss * self.dp_size).backward()
            local_loss += loss.detach().float()
        grad_norm = clip_grad_norm(self.model, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return local_loss, grad_norm
