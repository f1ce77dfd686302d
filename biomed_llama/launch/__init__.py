"""Launching the training stages: local torchrun or Slurm sbatch, plus environment checks."""
