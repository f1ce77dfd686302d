"""Training: the trainer (loop, step, checkpointer, callbacks), mesh + FSDP2, DCP checkpoints, LR schedule, metrics."""
