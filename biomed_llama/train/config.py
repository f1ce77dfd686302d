"""Params of the base model and of continued pretraining."""

from __future__ import annotations

from biomed_llama.schema import StrictModel


class ModelConfig(StrictModel):
    """The base model: a HF LLaMA directory, or a tiny random init built from these shape params."""


class PretrainConfig(StrictModel):
    """Continued pretraining hyperparameters, sharding and checkpointing."""
