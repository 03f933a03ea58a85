"""The live objects of one training run, built by keyword from two small builders: the data
side (datasets, loader, sampler, generator) and the optimization side (model, DDP wrapper,
optimizer, schedule, scaler, EMA)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from detforge.engine.train import data as trainset
from detforge.engine.train.config import TrainConfig
from detforge.engine.train.ema import EMA, make_ema
from detforge.engine.train.state import State, rng_state
from detforge.models import Model, save_checkpoint


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where this process trains: its rank, the world size and its device."""

    rank: int
    world: int
    device: torch.device


@dataclass(kw_only=True)
class TrainData:
    train_ds: object  # Dataset
    val_ds: object  # Dataset
    loader: DataLoader
    sampler: object  # a sampler with set_epoch, or None
    gen: torch.Generator  # the loader's generator (saved for exact resume)


@dataclass(kw_only=True)
class Optimization:
    model: Model  # the model itself
    net: torch.nn.Module  # what the forward pass goes through: the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: EMA | None
    # with --time: the share of the budget spent, which the schedule follows when it runs
    # ahead of the step count (so the cosine ends with the budget, not at an epoch never reached)
    budget_spent: list = field(default_factory=lambda: [0.0])


@dataclass(kw_only=True)
class Session:
    cfg: TrainConfig
    run: Path
    place: Placement
    data: TrainData
    optim: Optimization
    state: State
    writer: object  # TensorBoard writer (rank 0) or a null writer
    say: object  # prints on rank 0
    best_threshold: dict | None = None  # a detector's default conf at the best epoch, measured
    plotted: float = 0.0  # time.monotonic() when the curves were last drawn

    def checkpoint(self, name: str, complete: bool) -> None:
        """``weights/name`` with everything an exact resume needs (rank 0 writes)."""
        if self.place.rank != 0:
            return
        o = self.optim
        save_checkpoint(
            self.run / "weights" / name,
            o.model,
            train={
                **self.state.saved(),
                "complete": complete,
                "optimizer": o.opt.state_dict(),
                "scheduler": o.sched.state_dict(),
                "scaler": o.scaler.state_dict(),
                "ema": o.ema.state_dict() if o.ema else None,
                "rng": rng_state(self.data.gen),
                "config": self.cfg.to_dict(),
            },
            data=self.data_fingerprint(),
        )

    def data_fingerprint(self) -> dict:
        return trainset.fingerprint(self.cfg, self.data.train_ds, self.data.val_ds)


def build_data(cfg: TrainConfig, place: Placement, train_ds, val_ds) -> TrainData:
    """The training loader over ``train_ds`` and its seeded generator."""
    gen = torch.Generator().manual_seed(cfg.seed)
    loader, sampler = trainset.train_loader(
        train_ds, cfg, gen, place.rank, place.world, place.device.type
    )
    return TrainData(train_ds=train_ds, val_ds=val_ds, loader=loader, sampler=sampler, gen=gen)


def lr_factor(step: int, warmup: int, total: int, final: float, spent: float = 0.0) -> float:
    """Linear warmup to 1, then cosine down to ``final`` by step ``total`` or by the end of
    the time budget (``spent`` of it used), whichever comes first."""
    if step < warmup:
        return (step + 1) / warmup
    t = max((step - warmup) / max(1, total - warmup), spent)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # one vectorized kernel over all parameters where PyTorch has it (an AdamW step on 2 CPU
    # cores: 4x faster than one tensor at a time; benchmarks/bench_optimizer.py)
    device = next(model.parameters()).device.type
    fused = {"fused": True} if device in ("cpu", "cuda") else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, **fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), **fused)


def build_optimization(
    cfg: TrainConfig, model: Model, place: Placement, batches_per_epoch: int
) -> Optimization:
    """Optimizer (no decay on norms and biases), warmup + cosine per optimizer step, AMP
    scaler (CUDA), EMA, and the DDP wrapper under torchrun."""
    per_epoch = max(1, batches_per_epoch // cfg.accumulate)
    warmup = int(cfg.warmup_epochs * per_epoch)
    opt = make_optimizer(model, cfg)
    spent = [0.0]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda k: lr_factor(k, warmup, per_epoch * cfg.planned_epochs, cfg.final_lr, spent[0]),
    )
    device = place.device
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    net = model
    if place.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    return Optimization(
        model=model,
        net=net,
        opt=opt,
        sched=sched,
        scaler=scaler,
        ema=make_ema(model, cfg.ema, cfg.ema_tau),
        budget_spent=spent,
    )
