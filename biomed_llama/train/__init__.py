"""Training: device mesh + FSDP2, the loop, DCP checkpoints, LR schedule and metrics."""
