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

from detforge.data.augment import Augment
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


def train(
    cfg: TrainConfig | None = None, *, resume=None, console: Console | None = None, **overrides
) -> dict:
    """Train a model; returns a summary (run folder, epochs, best mAP). ``resume`` is a run
    folder (or its last.pt) to continue exactly where it stopped."""
    say = (console or Console()).print
    if resume is not None:
        run, ckpt = _resume_paths(resume)
        cfg = load_config(run / "config.yaml")
        if overrides.get("epochs"):
            cfg.epochs = int(overrides["epochs"])  # extending a run is the one allowed change
    else:
        cfg = cfg if cfg is not None else load_config(None, **overrides)
        ckpt = None
    cfg.validate()
    seed_everything(cfg.seed, cfg.deterministic)
    device = pick_device(cfg.device)
    train_ds, val_ds = load_data(cfg, say)
    if not len(train_ds):
        raise ConfigError(f"{cfg.data}: the training split holds no images")
    model = build(
        cfg.model, train_ds.classes, imgsz=cfg.imgsz, pretrained=cfg.pretrained, **cfg.model_options
    ).to(device)
    _check_dataset(model, train_ds)

    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        DetectionDataset(train_ds, Augment(cfg.augment)),
        cfg.batch,
        shuffle=True,
        num_workers=cfg.workers,
        collate_fn=collate,
        generator=gen,
        drop_last=len(train_ds) > cfg.batch,
        persistent_workers=False,
    )
    steps_per_epoch = max(1, len(loader) // cfg.accumulate)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, warmup, total_steps, cfg.final_lr)
    )
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    ema = _make_ema(model, cfg.ema)
    state = State()

    if ckpt is not None:
        state = _load_state(ckpt, model, opt, sched, scaler, ema, gen)
        say(f"resuming {run} after epoch {state.epoch} (step {state.step})")
    else:
        run = new_run_dir("train", cfg.name, cfg.project)
        save_config(cfg, run / "config.yaml")
        _save_environment(run, cfg)
    (run / "weights").mkdir(exist_ok=True)
    writer = _tensorboard(run, state.step)
    say(
        f"run folder: [bold]{run}[/] | {cfg.model} on {device} | {len(train_ds)} train, "
        f"{len(val_ds)} val images, {len(train_ds.classes)} classes"
    )

    def checkpoint(path, complete: bool):
        save_checkpoint(
            path,
            model,
            train={
                **state.saved(),
                "complete": complete,
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(),
                "ema": ema.state_dict() if ema else None,
                "rng": rng_state(gen),
                "config": cfg.to_dict(),
            },
        )

    stopped = None
    with Stop() as stop, _progress(console) as bar:
        while state.epoch < cfg.epochs:
            if stop.signal is not None:  # arrived between epochs: last.pt is current
                stopped = f"interrupted (signal {stop.signal}) after epoch {state.epoch}"
                break
            t0 = time.time()
            losses = _train_epoch(
                model, loader, opt, sched, scaler, ema, cfg, device, state, gen, writer, stop, bar
            )
            state.elapsed += time.time() - t0
            if losses is None:
                checkpoint(run / "weights" / "last.pt", complete=False)
                stopped = (
                    f"interrupted (signal {stop.signal}) in epoch {state.epoch + 1} "
                    f"after {state.batch} batches"
                )
                break
            state.epoch += 1
            val_model = ema.module if ema else model
            precise_bn(val_model, train_ds, device, cfg.precise_bn, cfg.batch)
            metrics = (
                evaluate_model(val_model, val_ds, batch=cfg.batch, device=device)
                if len(val_ds)
                else {"mAP50-95": 0.0, "mAP50": 0.0}
            )
            improved = metrics["mAP50-95"] > state.best
            if improved:
                state.best, state.best_epoch, state.stale = metrics["mAP50-95"], state.epoch, 0
            else:
                state.stale += 1
            checkpoint(run / "weights" / "last.pt", complete=True)
            if improved:
                _save_best(run, model, ema, checkpoint)
            _log_epoch(run, writer, state, losses, metrics, opt)
            say(
                f"epoch {state.epoch}/{cfg.epochs} "
                + " ".join(f"{k} {v:.4f}" for k, v in losses.items())
                + f" | mAP50 {metrics['mAP50']:.4f} mAP50-95 {metrics['mAP50-95']:.4f}"
            )
            if cfg.patience and state.stale >= cfg.patience:
                stopped = f"early stop: no mAP gain for {cfg.patience} epochs"
                break
            if cfg.time and state.elapsed >= cfg.time * 60:
                stopped = f"time budget of {cfg.time} min reached"
                break
    writer.close()
    if stopped:
        say(stopped + f"; resume with: detforge train --resume {run}")
    return {
        "run_dir": str(run),
        "epochs": state.epoch,
        "best_map": state.best,
        "best_epoch": state.best_epoch,
        "stopped": stopped,
    }


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


def _train_epoch(
    model, loader, opt, sched, scaler, ema, cfg, device, state, gen, writer, stop, bar
):
    """Train until the epoch ends (returns mean losses) or a signal stops it at an optimizer
    step boundary (returns None; ``state.batch`` says where)."""
    model.train()
    totals: dict[str, float] = state.totals
    task = bar.add_task(
        f"epoch {state.epoch + 1}/{cfg.epochs}", total=len(loader), completed=state.batch
    )
    opt.zero_grad(set_to_none=True)
    batches = _batches(loader, gen, state)
    for i, (images, targets) in enumerate(batches, start=state.batch):
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [
            {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets
        ]
        try:
            with torch.autocast(device.type, enabled=scaler.is_enabled()):
                loss_dict = model(images, targets)
                loss = sum(loss_dict.values())
        except torch.OutOfMemoryError as e:
            raise TrainingError(
                f"out of GPU memory at batch size {cfg.batch} (imgsz {cfg.imgsz})",
                f"lower --batch (e.g. {max(1, cfg.batch // 2)}), --imgsz, or the model's "
                "rois; --accumulate keeps the effective batch",
            ) from e
        if not torch.isfinite(loss):
            raise TrainingError(
                f"non-finite loss in epoch {state.epoch + 1}, step {i}: "
                + ", ".join(f"{k}={float(v):.4g}" for k, v in loss_dict.items()),
                "lower --lr, check the data with `detforge data check`, or set grad_clip",
            )
        scaler.scale(loss / cfg.accumulate).backward()
        if (i + 1) % cfg.accumulate == 0 or i + 1 == len(loader):
            if cfg.grad_clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
        for k, v in loss_dict.items():
            totals[k] = totals.get(k, 0.0) + float(v)
        state.batch = i + 1
        state.step += 1
        writer.add_scalar("train/loss", float(loss), state.step)
        writer.add_scalar("train/lr", opt.param_groups[0]["lr"], state.step)
        bar.update(
            task,
            advance=1,
            description=f"epoch {state.epoch + 1}/{cfg.epochs} loss {float(loss):.3f}",
        )
        if (
            stop.signal is not None
            and state.batch % cfg.accumulate == 0
            and state.batch < len(loader)
        ):
            bar.remove_task(task)
            return None
    bar.remove_task(task)
    means = {k: v / max(state.batch, 1) for k, v in totals.items()}
    state.batch, state.totals, state.epoch_rng = 0, {}, None
    return means


def _save_best(run: Path, model, ema, checkpoint) -> None:
    if ema is None:
        checkpoint(run / "weights" / "best.pt", complete=True)
        return
    # best.pt holds the EMA weights (what was validated), loadable like any checkpoint
    backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(ema.module.state_dict())
    try:
        save_checkpoint(run / "weights" / "best.pt", model, train={"ema_weights": True})
    finally:
        model.load_state_dict(backup)


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


def _progress(console):
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
    )
