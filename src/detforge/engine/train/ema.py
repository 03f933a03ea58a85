"""Weights for validation: an EMA of the training weights, and re-estimated BatchNorm stats."""

from __future__ import annotations

import copy
import math

import torch
from torch.utils.data import DataLoader

from detforge.data.torch.loader import SampleDataset, collate


class EMA:
    """Exponential moving average of weights and buffers. The decay ramps up from 0
    (``decay * (1 - exp(-updates / tau))``) so short runs are not stuck near the init."""

    def __init__(self, model, decay: float, tau: float = 2000.0):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update_parameters(self, model) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        for e, v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                e.copy_(v)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


@torch.no_grad()
def precise_bn(model, ds, device, max_images: int, batch: int) -> None:
    """Re-estimate BatchNorm running statistics with the current weights on up to
    ``max_images`` training images (in order, unaugmented). Running averages lag far behind
    fast-changing weights (short or from-scratch runs), which wrecks eval-mode outputs; only
    the running buffers change, never what training computes."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or max_images <= 0 or len(ds) < 2:  # BatchNorm needs two values per channel
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = model.training
    model.train()
    data = SampleDataset(ds.subset(range(min(max_images, len(ds)))))
    # no last batch of one image: BatchNorm cannot train on it (a 1x1 map has one value)
    loader = DataLoader(data, max(2, batch), collate_fn=collate, drop_last=len(data) > batch)
    run = getattr(model, "statistics_pass", model)  # a model may skip its losses here
    for images, targets in loader:
        run(
            [im.to(device) for im in images],
            [
                {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()}
                for t in targets
            ],
        )
    for m, mom in zip(norms, momenta):
        m.momentum = mom
    model.train(was_training)


def make_ema(model, decay: float, tau: float = 2000.0):
    return EMA(model, decay, tau) if decay else None
