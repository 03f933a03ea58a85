"""The training loop: one run folder, checkpoints every epoch, exact resume, metrics and plots.

``train(cfg)`` is the whole of it; ``detforge train`` parses a config and calls it.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from torch.utils.data import DataLoader

from detforge.engine import trainset
from detforge.engine.config import ConfigError, TrainConfig, load_config, save_config
from detforge.engine.distributed import agree, distributed
from detforge.engine.ema import EMA, make_ema, precise_bn
from detforge.engine.evaluate import evaluate_model
from detforge.engine.runlog import NullWriter, log_epoch, progress, save_environment, tensorboard
from detforge.engine.state import State, rng_state, seed_everything, set_rng_state
from detforge.errors import DetforgeError
from detforge.models import build, save_checkpoint
from detforge.models.base import read_checkpoint
from detforge.runs import new_run_dir


class TrainingError(DetforgeError):
    """Training cannot go on (non-finite loss, out of memory, ...)."""


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


def _open_run(cfg: TrainConfig, resume_run, rank: int, world: int) -> Path:
    """The run folder: the resumed one, or a new one made by rank 0 and shared."""
    if resume_run is not None:
        return resume_run
    run = None
    if rank == 0:
        run = new_run_dir("train", cfg.name, cfg.project)
        save_config(cfg, run / "config.yaml")
        save_environment(run, cfg)
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
    with Stop() as stop, progress(console if s.rank == 0 else None, s.rank != 0) as bar:
        stopping = lambda: agree(stop.signal is not None, s.world)  # noqa: E731
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
            if agree(stopped is not None, s.world):
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
        "best": state.best,  # top-1 for a classifier, mAP50-95 for a detector
        "task": getattr(s.model, "task", "detect"),
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
    train_ds, val_ds = trainset.load_data(cfg, say)
    if not len(train_ds):
        raise ConfigError(f"{cfg.data}: the training split holds no images")
    trainset.check_task(cfg, train_ds)
    options = trainset.model_options(cfg, train_ds)
    model = build(
        cfg.model, train_ds.classes, imgsz=cfg.imgsz, pretrained=cfg.pretrained, **options
    ).to(device)
    trainset.check_dataset(model, train_ds)
    if cfg.batch == -1:
        cfg.batch = auto_batch(model, cfg.imgsz, device, say)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader, sampler = trainset.make_loader(train_ds, cfg, gen, rank, world)
    per_epoch = max(1, len(loader) // cfg.accumulate)
    warmup = int(cfg.warmup_epochs * per_epoch)
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: lr_factor(k, warmup, per_epoch * cfg.epochs, cfg.final_lr)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    ema = make_ema(model, cfg.ema)
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
    writer = tensorboard(run, state.step) if rank == 0 else NullWriter()
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
    metrics = _validate(val_model, s) if len(s.val_ds) else {"mAP50-95": 0.0, "mAP50": 0.0}
    fitness = metrics.get("fitness", metrics.get("mAP50-95", 0.0))
    improved = fitness > state.best
    if improved:
        state.best, state.best_epoch, state.stale = fitness, state.epoch, 0
    else:
        state.stale += 1
    s.checkpoint("last.pt", complete=True)
    if improved:
        _save_best(s)
    log_epoch(s.run, s.writer, state, losses, metrics, s.opt)
    s.say(
        f"epoch {state.epoch}/{cfg.epochs} "
        + " ".join(f"{k} {v:.4f}" for k, v in losses.items())
        + " | "
        + " ".join(f"{k} {metrics[k]:.4f}" for k in METRIC_KEYS if k in metrics)
    )
    if cfg.patience and state.stale >= cfg.patience:
        return f"early stop: no gain for {cfg.patience} epochs"
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


METRIC_KEYS = ("mAP50", "mAP50-95", "top1", "top5")


def _validate(model, s: Session) -> dict:
    if getattr(model, "task", "detect") == "classify":
        from detforge.engine.classify_eval import validate

        return validate(model, s.val_ds, batch=s.cfg.batch, device=s.device)
    return evaluate_model(model, s.val_ds, batch=s.cfg.batch, device=s.device)


def _load_state(ckpt, model, opt, sched, scaler, ema, gen) -> State:
    t = ckpt["train"]
    if ckpt["model"]["classes"] != model.classes:
        raise ConfigError(
            f"the checkpoint has {len(ckpt['model']['classes'])} classes "
            f"{ckpt['model']['classes']}, the data {len(model.classes)} {model.classes}",
            "resume with the data the run was started on, or start a new run",
        )
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
        s.writer.add_scalar("train/loss", float(loss.detach()), state.step)
        s.writer.add_scalar("train/lr", s.opt.param_groups[0]["lr"], state.step)
        bar.update(
            task,
            advance=1,
            description=f"epoch {state.epoch + 1}/{cfg.epochs} loss {float(loss.detach()):.3f}",
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
