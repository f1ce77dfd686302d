"""launch commands: run a training stage under local torchrun or Slurm sbatch (registered on the shared app)."""
