"""The shared trainer: one loop, EMA, checkpoints, distributed (DDP via torchrun)."""
