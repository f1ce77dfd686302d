"""Params of how training stages are launched."""

from __future__ import annotations

from biomed_llama.schema import StrictModel


class LaunchConfig(StrictModel):
    """Local `torchrun` or Slurm `sbatch --wait`, and the mesh sizes the launch implies."""
