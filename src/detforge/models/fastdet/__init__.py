"""det-n/s/m: detforge's own real-time detector for CPUs (network, losses, model)."""
