"""Training: the loop, its session, config, data, EMA, state, run log and DDP helpers."""
