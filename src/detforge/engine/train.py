"""The training loop: one run folder, checkpoints every epoch, exact resume, metrics and plots.

``train(cfg)`` is the whole of it; ``detforge train`` parses a config and calls it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import DataLoader

from detforge.data.augment import training_view
from detforge.data.loader import DetectionDataset, collate
from detforge.engine.config import ConfigError, TrainConfig, load_config, save_config
from detforge.engine.evaluate import evaluate_model
from detforge.errors import DetforgeError
from detforge.fileio import atomic_write_bytes
from detforge.models import build, save_checkpoint
from detforge.models.base import read_checkpoint
from detforge.runs import new_run_dir


class TrainingError(DetforgeError):
    """Training cannot go on (non-finite loss, out of memory, ...)."""


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


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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


def load_data(cfg: TrainConfig, say) -> tuple:
    """(train Dataset, val Dataset): the data YAML's splits, or a seeded split announced."""
    from detforge.data import read
    from detforge.data.sources import is_data_yaml, read_splits
    from detforge.data.split import split

    src = Path(cfg.data)
    if is_data_yaml(src):
        parts = read_splits(src)
        if "train" in parts and "val" in parts:
            return parts["train"], parts["val"]
        ds = parts.get("train") or next(iter(parts.values()))
    else:
        ds = read(src)
    parts = split(ds, (1 - cfg.val_split, cfg.val_split), seed=cfg.seed)
    say(
        f"no val split in {src}: holding out {len(parts['val'])} of {len(ds)} images "
        f"(val_split={cfg.val_split}, seed={cfg.seed})"
    )
    return parts["train"], parts["val"]


def lr_factor(step: int, warmup: int, total: int, final: float) -> float:
    """Linear warmup to 1, then cosine down to ``final``."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
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
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


class Stop:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.signal = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def distributed(cfg: TrainConfig) -> tuple[int, int, torch.device]:
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


def _agree(flag: bool, world: int) -> bool:
    """True on every rank when any rank says so (a signal, or rank 0's decision to stop)."""
    if world <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def auto_batch(model, imgsz: int, device: torch.device, say, limit: int = 256) -> int:
    """The largest power-of-two batch (up to ``limit``) whose training step fits in GPU memory,
    halved once for headroom. Only CUDA can say; elsewhere 8."""
    if device.type != "cuda":
        say("--batch auto measures GPU memory; on the CPU it uses 8")
        return 8
    good, b = 1, 2
    model.train()
    while b <= limit:
        try:
            images = [
                torch.randint(0, 256, (3, imgsz, imgsz), dtype=torch.uint8, device=device)
                for _ in range(b)
            ]
            box = torch.tensor([[0.1, 0.1, 0.6, 0.6]], device=device) * imgsz
            targets = [
                {"boxes": box, "labels": torch.zeros(1, dtype=torch.int64, device=device)}
                for _ in range(b)
            ]
            sum(model(images, targets).values()).backward()
            good, b = b, b * 2
        except torch.OutOfMemoryError:
            break
        finally:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
    batch = max(1, good // 2)
    say(f"--batch auto: {good} fits at imgsz {imgsz}; training with {batch}")
    return batch


def _make_loader(train_ds, cfg: TrainConfig, gen, rank: int, world: int):
    data = training_view(train_ds, cfg.augment, cfg.imgsz)
    sampler = None
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(data, world, rank, shuffle=True, seed=cfg.seed, drop_last=True)
    loader = DataLoader(
        data,
        cfg.batch,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=collate,
        generator=gen,
        drop_last=len(train_ds) > cfg.batch * world,
        persistent_workers=False,
    )
    return loader, sampler


def _open_run(cfg: TrainConfig, resume_run, rank: int, world: int) -> Path:
    """The run folder: the resumed one, or a new one made by rank 0 and shared."""
    if resume_run is not None:
        return resume_run
    run = None
    if rank == 0:
        run = new_run_dir("train", cfg.name, cfg.project)
        save_config(cfg, run / "config.yaml")
        _save_environment(run, cfg)
        (run / "weights").mkdir(exist_ok=True)
    if world > 1:
        import torch.distributed as dist

        box = [str(run) if run else None]
        dist.broadcast_object_list(box, src=0)
        run = Path(box[0])
    return run


@dataclass
class Session:
    """The live objects of one training run (one process of it, under DDP)."""

    cfg: TrainConfig
    run: Path
    rank: int
    world: int
    device: torch.device
    model: torch.nn.Module  # the Detector itself
    net: torch.nn.Module  # what the forward pass goes through: the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: EMA | None
    gen: torch.Generator
    loader: DataLoader
    train_ds: object
    val_ds: object
    state: State
    writer: object
    say: object

    def checkpoint(self, name: str, complete: bool) -> None:
        if self.rank != 0:
            return
        save_checkpoint(
            self.run / "weights" / name,
            self.model,
            train={
                **self.state.saved(),
                "complete": complete,
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None,
                "rng": rng_state(self.gen),
                "config": self.cfg.to_dict(),
            },
        )


def train(
    cfg: TrainConfig | None = None, *, resume=None, console: Console | None = None, **overrides
) -> dict:
    """Train a model; returns a summary (run folder, epochs, best mAP). ``resume`` is a run
    folder (or its last.pt) to continue exactly where it stopped. Under torchrun it trains with
    DistributedDataParallel; only rank 0 writes."""
    s, sampler = _session(cfg, resume, console, overrides)
    state, stopped = s.state, None
    with Stop() as stop, _progress(console if s.rank == 0 else None, s.rank != 0) as bar:
        stopping = lambda: _agree(stop.signal is not None, s.world)  # noqa: E731
        while state.epoch < s.cfg.epochs:
            if stopping():  # arrived between epochs: last.pt is current
                stopped = f"interrupted after epoch {state.epoch}"
                break
            if sampler is not None:
                sampler.set_epoch(state.epoch)
            t0 = time.time()
            losses = _train_epoch(s, stopping, bar)
            state.elapsed += time.time() - t0
            if losses is None:
                s.checkpoint("last.pt", complete=False)
                stopped = f"interrupted in epoch {state.epoch + 1} after {state.batch} batches"
                break
            state.epoch += 1
            stopped = _end_epoch(s, losses) if s.rank == 0 else None
            if _agree(stopped is not None, s.world):
                stopped = stopped or "stopped by rank 0"
                break
    s.writer.close()
    if stopped:
        s.say(stopped + f"; resume with: detforge train --resume {s.run}")
    return {
        "run_dir": str(s.run),
        "epochs": state.epoch,
        "best_map": state.best,
        "best_epoch": state.best_epoch,
        "stopped": stopped,
    }


def _session(cfg, resume, console, overrides) -> tuple[Session, object]:
    """Everything a run needs, built (or restored from last.pt) in order."""
    run, ckpt = _resume_paths(resume) if resume is not None else (None, None)
    if run is not None:
        cfg = load_config(run / "config.yaml")
        if overrides.get("epochs"):
            cfg.epochs = int(overrides["epochs"])  # extending a run is the one allowed change
    elif cfg is None:
        cfg = load_config(None, **overrides)
    cfg.validate()
    rank, world, device = distributed(cfg)
    say = (console or Console()).print if rank == 0 else (lambda *a, **k: None)
    seed_everything(cfg.seed, cfg.deterministic)
    train_ds, val_ds = load_data(cfg, say)
    if not len(train_ds):
        raise ConfigError(f"{cfg.data}: the training split holds no images")
    model = build(
        cfg.model, train_ds.classes, imgsz=cfg.imgsz, pretrained=cfg.pretrained, **cfg.model_options
    ).to(device)
    _check_dataset(model, train_ds)
    if cfg.batch == -1:
        cfg.batch = auto_batch(model, cfg.imgsz, device, say)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader, sampler = _make_loader(train_ds, cfg, gen, rank, world)
    per_epoch = max(1, len(loader) // cfg.accumulate)
    warmup = int(cfg.warmup_epochs * per_epoch)
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: lr_factor(k, warmup, per_epoch * cfg.epochs, cfg.final_lr)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    ema = _make_ema(model, cfg.ema)
    state = State() if ckpt is None else _load_state(ckpt, model, opt, sched, scaler, ema, gen)
    run = _open_run(cfg, run, rank, world)
    if ckpt is not None:
        say(f"resuming {run} after epoch {state.epoch} (step {state.step})")
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    say(
        f"run folder: [bold]{run}[/] | {cfg.model} on {device} x{world} | {len(train_ds)} "
        f"train, {len(val_ds)} val images, {len(train_ds.classes)} classes"
    )
    writer = _tensorboard(run, state.step) if rank == 0 else _NullWriter()
    return Session(
        cfg,
        run,
        rank,
        world,
        device,
        model,
        net,
        opt,
        sched,
        scaler,
        ema,
        gen,
        loader,
        train_ds,
        val_ds,
        state,
        writer,
        say,
    ), sampler


def _end_epoch(s: Session, losses: dict) -> str | None:
    """Validate, save last.pt (and best.pt), log (rank 0); returns why to stop, if it should."""
    cfg, state = s.cfg, s.state
    val_model = s.ema.module if s.ema else s.model
    precise_bn(val_model, s.train_ds, s.device, cfg.precise_bn, cfg.batch)
    metrics = (
        evaluate_model(val_model, s.val_ds, batch=cfg.batch, device=s.device)
        if len(s.val_ds)
        else {"mAP50-95": 0.0, "mAP50": 0.0}
    )
    improved = metrics["mAP50-95"] > state.best
    if improved:
        state.best, state.best_epoch, state.stale = metrics["mAP50-95"], state.epoch, 0
    else:
        state.stale += 1
    s.checkpoint("last.pt", complete=True)
    if improved:
        _save_best(s)
    _log_epoch(s.run, s.writer, state, losses, metrics, s.opt)
    s.say(
        f"epoch {state.epoch}/{cfg.epochs} "
        + " ".join(f"{k} {v:.4f}" for k, v in losses.items())
        + f" | mAP50 {metrics['mAP50']:.4f} mAP50-95 {metrics['mAP50-95']:.4f}"
    )
    if cfg.patience and state.stale >= cfg.patience:
        return f"early stop: no mAP gain for {cfg.patience} epochs"
    if cfg.time and state.elapsed >= cfg.time * 60:
        return f"time budget of {cfg.time} min reached"
    return None


def _resume_paths(resume) -> tuple[Path, dict]:
    p = Path(resume)
    run = p.parent.parent if p.suffix == ".pt" else p
    last = p if p.suffix == ".pt" else run / "weights" / "last.pt"
    if not (run / "config.yaml").is_file() or not last.is_file():
        raise ConfigError(
            f"{resume}: not a run folder with config.yaml and weights/last.pt",
            "pass runs/train/NAME",
        )
    return run, read_checkpoint(last)


def _check_dataset(model, ds) -> None:
    if getattr(model, "name", "") == "tracker" and not model.options.get("largest"):
        many = sum(1 for s in ds.samples if len(s.boxes) > 1)
        if many:
            raise ConfigError(
                f"the tracker localizes one object per image; {many} training images hold more",
                "pick a multi-object model (ssdlite, fasterrcnn-mobilenet, ...) or set "
                "model_options: {largest: true} to keep the largest box",
            )


class EMA:
    """Exponential moving average of weights and buffers. The decay ramps up from 0
    (``decay * (1 - exp(-updates / tau))``) so short runs are not stuck near the init."""

    def __init__(self, model, decay: float, tau: float = 2000.0):
        import copy

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
    if not norms or max_images <= 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = model.training
    model.train()
    data = DetectionDataset(ds.subset(range(min(max_images, len(ds)))))
    for images, targets in DataLoader(data, batch, collate_fn=collate):
        model(
            [im.to(device) for im in images],
            [
                {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()}
                for t in targets
            ],
        )
    for m, mom in zip(norms, momenta):
        m.momentum = mom
    model.train(was_training)


def _make_ema(model, decay: float):
    return EMA(model, decay) if decay else None


def _load_state(ckpt, model, opt, sched, scaler, ema, gen) -> State:
    t = ckpt["train"]
    model.load_state_dict(ckpt["state_dict"])
    opt.load_state_dict(t["optimizer"])
    sched.load_state_dict(t["scheduler"])
    scaler.load_state_dict(t["scaler"])
    if ema is not None and t.get("ema"):
        ema.load_state_dict(t["ema"])
    set_rng_state(t["rng"], gen)
    return State(**{k: t[k] for k in State.__dataclass_fields__})


def _batches(loader, gen, state: State):
    """The epoch's batches. Resuming mid-epoch, rewind the RNGs to the epoch's start, draw (and
    drop) the batches already trained on, then restore the RNGs of the moment of the
    interruption: the rest of the epoch sees exactly the batches it would have."""
    if state.batch == 0:
        state.epoch_rng = rng_state(gen)
        return iter(loader)
    now = rng_state(gen)
    set_rng_state(state.epoch_rng, gen)
    batches = iter(loader)
    for _ in range(state.batch):
        next(batches)
    set_rng_state(now, gen)
    return batches


def _train_epoch(s: Session, stopping, bar) -> dict | None:
    """Train until the epoch ends (returns mean losses) or a signal stops it at an optimizer
    step boundary (returns None; ``state.batch`` says where)."""
    cfg, state, n = s.cfg, s.state, len(s.loader)
    s.model.train()
    totals: dict[str, float] = state.totals
    task = bar.add_task(f"epoch {state.epoch + 1}/{cfg.epochs}", total=n, completed=state.batch)
    s.opt.zero_grad(set_to_none=True)
    for i, (images, targets) in enumerate(_batches(s.loader, s.gen, state), start=state.batch):
        loss_dict = _forward(s, images, targets)
        loss = sum(loss_dict.values())
        if not torch.isfinite(loss):
            raise TrainingError(
                f"non-finite loss in epoch {state.epoch + 1}, step {i}: "
                + ", ".join(f"{k}={float(v):.4g}" for k, v in loss_dict.items()),
                "lower --lr, check the data with `detforge data check`, or set grad_clip",
            )
        s.scaler.scale(loss / cfg.accumulate).backward()
        if (i + 1) % cfg.accumulate == 0 or i + 1 == n:
            _optimizer_step(s)
        for k, v in loss_dict.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach())
        state.batch, state.step = i + 1, state.step + 1
        s.writer.add_scalar("train/loss", float(loss), state.step)
        s.writer.add_scalar("train/lr", s.opt.param_groups[0]["lr"], state.step)
        bar.update(
            task,
            advance=1,
            description=f"epoch {state.epoch + 1}/{cfg.epochs} loss {float(loss):.3f}",
        )
        # every rank reaches this point at the same batches, so the vote below cannot hang
        if state.batch % cfg.accumulate == 0 and state.batch < n and stopping():
            bar.remove_task(task)
            return None
    bar.remove_task(task)
    means = {k: v / max(state.batch, 1) for k, v in totals.items()}
    state.batch, state.totals, state.epoch_rng = 0, {}, None
    return means


def _forward(s: Session, images, targets) -> dict:
    images = [im.to(s.device, non_blocking=True) for im in images]
    targets = [
        {k: (v.to(s.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets
    ]
    try:
        with torch.autocast(s.device.type, enabled=s.scaler.is_enabled()):
            return s.net(images, targets)
    except torch.OutOfMemoryError as e:
        b = s.cfg.batch
        raise TrainingError(
            f"out of GPU memory at batch size {b} (imgsz {s.cfg.imgsz})",
            f"lower --batch (e.g. {max(1, b // 2)}), --imgsz, or the model's rois; "
            "--accumulate keeps the effective batch; --batch auto finds what fits",
        ) from e


def _optimizer_step(s: Session) -> None:
    if s.cfg.grad_clip:
        s.scaler.unscale_(s.opt)
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), s.cfg.grad_clip)
    s.scaler.step(s.opt)
    s.scaler.update()
    s.opt.zero_grad(set_to_none=True)
    s.sched.step()
    if s.ema is not None:
        s.ema.update_parameters(s.model)


def _save_best(s: Session) -> None:
    """best.pt: the validated weights (the EMA's when there is one), loadable like any
    checkpoint."""
    if s.ema is None:
        s.checkpoint("best.pt", complete=True)
        return
    backup = {k: v.detach().clone() for k, v in s.model.state_dict().items()}
    s.model.load_state_dict(s.ema.module.state_dict())
    try:
        save_checkpoint(s.run / "weights" / "best.pt", s.model, train={"ema_weights": True})
    finally:
        s.model.load_state_dict(backup)


def _tensorboard(run: Path, step: int):
    """A SummaryWriter that drops events logged after ``step`` by an interrupted run, so a
    resumed run's steps stay in order."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return _NullWriter()
    return SummaryWriter(str(run / "tensorboard"), purge_step=step if step else None)


class _NullWriter:
    def add_scalar(self, *a, **k):
        pass

    def close(self):
        pass


def _log_epoch(run: Path, writer, state: State, losses: dict, metrics: dict, opt) -> None:
    row = {
        "epoch": state.epoch,
        "step": state.step,
        **{f"loss/{k}": v for k, v in losses.items()},
        "lr": opt.param_groups[0]["lr"],
        "mAP50-95": metrics["mAP50-95"],
        "mAP50": metrics["mAP50"],
    }
    for k, v in row.items():
        if k not in ("epoch", "step"):
            writer.add_scalar(k if "/" in k else f"val/{k}", v, state.step)
    _append_csv(run / "metrics.csv", row)
    _plots(run)


def _append_csv(path: Path, row: dict) -> None:
    """Rewrite metrics.csv (atomically) with rows of epochs before this one plus this row."""
    rows = []
    if path.is_file():
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < row["epoch"]]
    rows.append(row)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def _plots(run: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with (run / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) for r in rows]
    (run / "plots").mkdir(exist_ok=True)
    for name, keys in (
        ("loss", [k for k in rows[-1] if k.startswith("loss/")]),
        ("map", ["mAP50", "mAP50-95"]),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for k in keys:
            ax.plot(
                epochs, [float(r[k]) if r.get(k) else np.nan for r in rows], marker="o", label=k
            )
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        atomic_write_bytes(run / "plots" / f"{name}.png", buf.getvalue())


def _save_environment(run: Path, cfg: TrainConfig) -> None:
    import json
    import platform
    import subprocess

    import torchvision

    import detforge

    try:
        rev = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        rev = None
    env = {
        "detforge": detforge.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
        "seed": cfg.seed,
        "git": rev,
        "cpu_count": os.cpu_count(),
    }
    atomic_write_bytes(run / "environment.json", json.dumps(env, indent=2).encode())


def _progress(console, disable: bool = False):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Speed(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed:.2f} it/s" if task.speed else "")

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        Speed(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=disable,
    )
