"""Params of the instruction mixture and fine-tuning."""

from __future__ import annotations

from biomed_llama.schema import StrictModel


class InstructMixConfig(StrictModel):
    """Instruction sources, epoch factors and the number of records drawn."""


class FinetuneConfig(StrictModel):
    """Instruction tuning (`instruct`) and per-task full fine-tuning (`task`)."""
