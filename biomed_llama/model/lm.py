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

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

IGNORE_INDEX = -100


def weighted_token_loss(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor,
                        weights: torch.Tensor, fused: bool) -> torch.Tensor:
    """Σ w·ℓ of the head's logits on `hidden` [B, T, H] against `targets` [B, T] (weights [B, T]).

    `fused`: liger-kernel's fused linear cross-entropy (CUDA only): the [B·T, vocab] logits are never
    held at once (computed in chunks, fp32 accumulation); `reduction="none"` returns per-token
    losses whose upstream gradient is the weight, so any weighting is exact. Plain: fp32 logits and
    `F.cross_entropy`, as transformers' loss upcasts them.
    """
    flat_t, flat_w = targets.reshape(-1), weights.reshape(-1).to(torch.float32)
    if fused:
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        loss_fn = LigerFusedLinearCrossEntropyLoss(reduction="none", accum_dtype=torch.float32)
        per_token = loss_fn(head.weight, hidden.reshape(-1, hidden.shape[-1]), flat_t)
    else:
        logits = head(hidden).float()
        per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat_t, ignore_index=IGNORE_INDEX,
                                    reduction="none")
    return (per_token.float() * flat_w).sum()


class TrainableLlamaForCausalLM(LlamaForCausalLM):
    """`LlamaForCausalLM` plus the weighted loss of `forward(token_weights=…)` (see the module docstring)."""

    fused_loss: bool = False
    """Use the fused linear cross-entropy for the weighted loss (set by `kernels.apply_kernels` on CUDA)."""

    def forward(self, input_ids=None, labels=None, token_weights=None, **kwargs):
        """HF's forward; with `token_weights` [B, S-1] the loss is Σ w·ℓ and no logits are returned."""
        if token_weights is None:
            return super().forward(input_ids=input_ids, labels=labels, **kwargs)
        kwargs.pop("num_items_in_batch", None)
        hidden = self.model(input_ids=input_ids, **kwargs).last_hidden_state
        # position t predicts labels[t + 1]: drop the last position instead of shifting the labels
        loss = weighted_token_loss(hidden[:, :-1, :], self.lm_head, labels[:, 1:], token_weights, self.fused_loss)
        return CausalLMOutputWithPast(loss=loss)
