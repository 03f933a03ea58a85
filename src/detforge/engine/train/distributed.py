"""Devices and distributed training under torchrun: pick a device, join the process group,
agree across ranks."""

from __future__ import annotations

import os

import torch

from detforge.engine.devices import pick_device


def distributed(cfg) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun (WORLD_SIZE > 1) this joins the process
    group: NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(cfg.device)
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def largest(value: float, world: int) -> float:
    """The largest of every rank's ``value`` (the same number on all of them)."""
    if world <= 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def agree(flag: bool, world: int) -> bool:
    """True on every rank when any rank says so (a signal, or rank 0's decision to stop)."""
    if world <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
