"""The trained LLaMA: HF `LlamaForCausalLM` whose forward can also return a per-token weighted loss.

`forward(..., token_weights=w)` returns `Σ_t w_t · ℓ_t` over the shifted targets (w is [batch, seq-1],
aligned with `labels[:, 1:]`; ℓ_t the token's cross-entropy, 0 where the label is -100). A loss
weighting (`biomed_llama.train.step`) is then only a choice of `w`: 1/N per target token for the
global token mean, 1/(n_s · N_seq) for the mean of per-sequence means. Without `token_weights` the
forward is HF's own, so the default path computes exactly what stock transformers computes.

The loss runs inside this module's forward on purpose: under FSDP the root unit's parameters (the
final norm, and the LM head when the fused loss reads its weight directly) are gathered only while
the root's forward runs. The state dict and the exported model are plain `LlamaForCausalLM`.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from biomed_llama.data.loader import IGNORE_INDEX

# Lazy imports: liger-kernel is an optional CUDA package: imported only where the fused loss runs.


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w·ℓ over rows of `logits` [N, vocab] (any float dtype, computed in fp32, as transformers' loss upcasts)
    against `targets` [N] (-100: no target) with fp32 `weights` [N]."""
    per_token = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="none")
    return (per_token * weights).sum()


@functools.cache
def compiled_weighted_cross_entropy():
    """`weighted_cross_entropy` under torch.compile (built once per process).

    Eager, the fp32 copy of the logits, its log-softmax (saved for backward) and the fp32 gradient each hold
    [N, vocab] × 4 bytes (2 GB each at the 7B's micro batch 8), where the step's activations peak. Compiled,
    one fused reduction reads the bf16 logits and backward writes their bf16 gradient: the 7B's peak at micro 8
    on 1×2 H200 fell by 3.9 GiB (bench/RESULTS.md). torchtitan compiles its loss for the same reason.
    """
    return torch.compile(weighted_cross_entropy)


def weighted_token_loss(
    hidden: torch.Tensor,
    head: torch.nn.Linear,
    targets: torch.Tensor,
    weights: torch.Tensor,
    fused: bool,
    compiled: bool = False,
) -> torch.Tensor:
    """Σ w·ℓ of the head's logits on `hidden` [B, T, H] against `targets` [B, T] (weights [B, T]).

    `fused`: liger-kernel's fused linear cross-entropy (CUDA only): the [B·T, vocab] logits are never
    held at once (computed in chunks, fp32 accumulation); `reduction="none"` returns per-token
    losses whose upstream gradient is the weight, so any weighting is exact. Plain: fp32 logits and
    `F.cross_entropy`, as transformers' loss upcasts them; `compiled` runs that under torch.compile
    (`compiled_weighted_cross_entropy`: the same sum, less memory).
    """
    flat_t, flat_w = targets.reshape(-1), weights.reshape(-1).to(torch.float32)
    if fused:
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        loss_fn = LigerFusedLinearCrossEntropyLoss(reduction="none", accum_dtype=torch.float32)
        per_token = loss_fn(head.weight, hidden.reshape(-1, hidden.shape[-1]), flat_t)
        return (per_token.float() * flat_w).sum()
    logits = head(hidden)  # the head's own forward: under FSDP its unit gathers the weight here
    loss_fn = compiled_weighted_cross_entropy() if compiled else weighted_cross_entropy
    return loss_fn(logits.reshape(-1, logits.shape[-1]), flat_t, flat_w)


class TrainableLlamaForCausalLM(LlamaForCausalLM):
    """`LlamaForCausalLM` plus the weighted loss of `forward(token_weights=…)` (see the module docstring)."""

    fused_loss: bool = False
    """Use the fused linear cross-entropy for the weighted loss (set by `kernels.apply_kernels` on CUDA)."""
    compiled_loss: bool = False
    """Run the weighted loss's cross-entropy under torch.compile (set with `pretrain.compile`)."""

    @property
    def weighted_loss_only(self) -> bool:
        """Whether the loss should come from `token_weights` for every weighting: the fused or the compiled head
        replaces HF's own loss, which runs only for token weighting without them."""
        return self.fused_loss or self.compiled_loss

    def forward(self, input_ids=None, labels=None, token_weights=None, **kwargs):
        """HF's forward; with `token_weights` [B, S-1] the loss is Σ w·ℓ and no logits are returned."""
        if token_weights is None:
            return super().forward(input_ids=input_ids, labels=labels, **kwargs)
        kwargs.pop("num_items_in_batch", None)
        hidden = self.model(input_ids=input_ids, **kwargs).last_hidden_state
        # position t predicts labels[t + 1]: drop the last position instead of shifting the labels
        loss = weighted_token_loss(
            hidden[:, :-1, :], self.lm_head, labels[:, 1:], token_weights, self.fused_loss, self.compiled_loss
        )
        return CausalLMOutputWithPast(loss=loss)
