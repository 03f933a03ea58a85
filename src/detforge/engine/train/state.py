"""The resumable state of a run beyond its weights, and the RNGs that make resume exact."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class State:
    """What a resumed run needs beyond the weights."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer-independent iteration counter (TensorBoard's x axis)
    best: float = -1.0  # best val mAP50-95
    best_epoch: int = -1
    stale: int = 0  # epochs without improvement (early stopping)
    elapsed: float = 0.0  # seconds trained so far (time budget)
    batch: int = 0  # batches done in the current epoch (an interrupted run resumes there)
    totals: dict = field(default_factory=dict)  # summed losses of those batches
    epoch_rng: dict | None = None  # RNG states at the start of the current epoch

    def saved(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state(loader_gen: torch.Generator) -> dict:
    """Every RNG a resumed run needs, as plain values and tensors (weights_only-loadable)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "loader": loader_gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, loader_gen: torch.Generator) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
