"""AdamW with HF Trainer's decay groups, and the warmup + cosine LR schedule of transformers."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from biomed_llama.train.config import OptimConfig


def no_decay(name: str, param: torch.Tensor) -> bool:
    """True for parameters HF Trainer leaves undecayed: biases and normalisation weights (all 1-D here)."""
    return param.ndim < 2 or name.endswith(".bias") or "norm" in name


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict]:
    """Two AdamW groups: matrices and embeddings with `weight_decay`, norms and biases with 0 (with
    `decay_all`, every parameter in the first group and the second empty).

    `decay_all` is what the released runs did. Their HF Trainer 4.28 (the authors' fork be40569cc:
    `trainer.py:1075-1076`) exempted the parameters under `nn.LayerNorm` modules (`pytorch_utils.py:24`:
    `ALL_LAYERNORM_LAYERS = [nn.LayerNorm]`) and names containing "bias"; LLaMA's `LlamaRMSNorm` is a
    plain `nn.Module` (`models/llama/modeling_llama.py:83`) and LLaMA has no biases, so nothing was
    exempt, and with `--fsdp` the optimizer was built after wrapping (`trainer.py:1729-1734,1763-1764`)
    over FSDP's flattened parameters, whose names hid the modules anyway.
    """
    decay: list[nn.Parameter] = []
    skip: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (skip if not decay_all and no_decay(name, p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": skip, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with the section's lr/betas/eps/decay over `param_groups`; fused CUDA kernel on GPU, foreach on CPU."""
    fused = device.type == "cuda"
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norms_and_biases)
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused, foreach=None if fused else True
    )


def warmup_steps(total_steps: int, ratio: float) -> int:
    """Warmup steps as HF TrainingArguments.get_warmup_steps: ceil(total × ratio)."""
    return math.ceil(total_steps * ratio)


def cosine_with_warmup(step: int, *, warmup: int, total: int, num_cycles: float) -> float:
    """LR multiplier of `transformers.get_cosine_schedule_with_warmup` at `step`."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))


class CosineWithWarmup:
    """Picklable lambda for LambdaLR (a closure would not survive state_dict round trips in spirit)."""

    def __init__(self, warmup: int, total: int, num_cycles: float):
        self.warmup, self.total, self.num_cycles = warmup, total, num_cycles

    def __call__(self, step: int) -> float:
        return cosine_with_warmup(step, warmup=self.warmup, total=self.total, num_cycles=self.num_cycles)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> LambdaLR:
    """LambdaLR: linear warmup over ceil(warmup_ratio × steps), then cosine with `num_cycles`."""
    fn = CosineWithWarmup(warmup_steps(total_steps, cfg.warmup_ratio), total_steps, cfg.num_cycles)
    return LambdaLR(optimizer, fn)
