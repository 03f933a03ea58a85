"""The training loop: one run folder, checkpoints every epoch, exact resume, metrics and plots.

``train(cfg)`` is the whole of it; ``detforge train`` parses a config and calls it. Validation
each epoch scores the model through the same Predictor as ``detforge eval`` (the task's
``score``), so metrics.csv holds what ``eval`` reports on the same split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import signal
import time
import warnings
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from detforge.engine.evaluate.detection import EVAL_BATCH
from detforge.engine.infer.backends import TorchBackend
from detforge.engine.loading import predictor
from detforge.engine.report import report_run as run_report
from detforge.engine.report import try_report
from detforge.engine.tasks import task
from detforge.engine.train import data as trainset
from detforge.engine.train.config import (
    UNLIMITED,
    ConfigError,
    TrainConfig,
    load_config,
    save_config,
)
from detforge.engine.train.distributed import agree, distributed, largest
from detforge.engine.train.ema import precise_bn
from detforge.engine.train.runlog import (
    PLOT_EVERY_S,
    NullWriter,
    log_epoch,
    progress,
    save_environment,
    tensorboard,
    write_plots,
)
from detforge.engine.train.session import (
    Placement,
    Session,
    build_data,
    build_optimization,
)
from detforge.engine.train.state import State, rng_state, seed_everything, set_rng_state
from detforge.errors import DetforgeError
from detforge.models import build, read_checkpoint, save_checkpoint
from detforge.runs import new_run_dir

RESUMABLE = ("epochs", "device", "workers")  # what may change when a run resumes


class TrainingError(DetforgeError):
    """Training cannot go on (non-finite loss, out of memory, ...)."""


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


def probe_step(model, batch: int, imgsz: int, device: torch.device) -> None:
    """One forward and backward pass of ``batch`` random images with targets of the model's
    task (a box each for detectors, a class for classifiers): what ``--batch auto`` sizes."""
    images = [
        torch.randint(0, 256, (3, imgsz, imgsz), dtype=torch.uint8, device=device)
        for _ in range(batch)
    ]
    if getattr(model, "task", "detect") == "classify":
        targets = [{"category": 0} for _ in range(batch)]
    else:
        box = torch.tensor([[0.1, 0.1, 0.6, 0.6]], device=device) * imgsz
        label = torch.zeros(1, dtype=torch.int64, device=device)
        targets = [{"boxes": box, "labels": label} for _ in range(batch)]
    sum(model(images, targets).values()).backward()


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
            probe_step(model, b, imgsz, device)
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


def resume_config(resume, overrides: dict, say) -> tuple[TrainConfig, Path, dict]:
    """The saved config of run ``resume`` (its folder or last.pt) with the overrides it can
    honour applied (``RESUMABLE``, said aloud); any other changed field is refused."""
    run, ckpt = _resume_paths(resume)
    saved = load_config(run / "config.yaml")
    asked = load_config(run / "config.yaml", **overrides)
    changed = [
        f.name
        for f in dataclasses.fields(TrainConfig)
        if getattr(asked, f.name) != getattr(saved, f.name)
    ]
    refused = [k for k in changed if k not in RESUMABLE]
    if refused:
        raise ConfigError(
            f"--resume continues {run} with its saved config; it cannot change "
            + ", ".join(refused),
            f"drop those options (resume may change {', '.join(RESUMABLE)}), or start a new run",
        )
    if changed:
        say("resuming with " + ", ".join(f"{k}={getattr(asked, k)}" for k in changed))
    return asked, run, ckpt


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


def _setup(cfg, resume, console, overrides) -> Session:
    """Everything a run needs, built (or restored from last.pt) in order."""
    say0 = (console or Console()).print
    run = ckpt = None
    if resume is not None:
        if cfg is not None:
            raise ConfigError("pass either a config or resume=RUN, not both")
        cfg, run, ckpt = resume_config(resume, overrides, say0)
    elif cfg is None:
        cfg = load_config(None, **overrides)
    cfg.validate()
    rank, world, device = distributed(cfg)
    place = Placement(rank=rank, world=world, device=device)
    say = say0 if rank == 0 else (lambda *a, **k: None)
    seed_everything(cfg.seed, cfg.deterministic)
    train_ds, val_ds = trainset.load_data(cfg, say)
    trainset.check_task(cfg, train_ds)
    trainset.pick_imgsz(cfg, train_ds, say)
    options = trainset.model_options(cfg, train_ds)
    model = build(
        cfg.model, train_ds.classes, imgsz=cfg.imgsz, pretrained=cfg.pretrained, **options
    ).to(device)
    if model.imgsz != cfg.imgsz:  # the model's own rounding (det-*: a multiple of 32), once
        say(f"imgsz {model.imgsz} (not {cfg.imgsz}): {cfg.model} takes multiples of 32")
        cfg.imgsz = model.imgsz
    trainset.check_dataset(model, train_ds)
    if cfg.batch == -1:
        cfg.batch = auto_batch(model, cfg.imgsz, device, say)
    data = build_data(cfg, place, train_ds, val_ds)
    optim = build_optimization(cfg, model, place, len(data.loader))
    state = State() if ckpt is None else _load_state(ckpt, optim, data.gen)
    run = _open_run(cfg, run, rank, world)
    if ckpt is not None:
        say(f"resuming {escape(str(run))} after epoch {state.epoch} (step {state.step})")
    say(
        f"run folder: [bold]{escape(str(run))}[/] | {cfg.model} on {device} x{world} | "
        f"{len(train_ds)} train, {len(val_ds)} val images, {len(train_ds.classes)} classes"
    )
    writer = tensorboard(run, state.step) if rank == 0 else NullWriter()
    return Session(
        cfg=cfg, run=run, place=place, data=data, optim=optim, state=state, writer=writer, say=say
    )


def train(
    cfg: TrainConfig | None = None, *, resume=None, console: Console | None = None, **overrides
) -> dict:
    """Train a model; returns a summary (run folder, epochs, the best value of the task's
    fitness metric and its epoch). ``resume`` is a run folder (or its last.pt) to continue
    exactly where it stopped; of ``overrides`` it then honours only ``RESUMABLE``. Under
    torchrun it trains with DistributedDataParallel; only rank 0 writes."""
    s = _setup(cfg, resume, console, overrides)
    try:
        stopped = _loop(s, console)
    except BaseException:
        s.writer.close()
        _final_plots(s)
        _drop_if_empty(s, resumed=resume is not None)
        raise
    s.writer.close()
    _final_plots(s)
    if stopped:
        s.say(stopped + f"; resume with: detforge train --resume {escape(str(s.run))}")
    th = s.best_threshold
    if th:
        s.say(f"default conf {th['conf']:g}: precision {th['precision']:.2f}, recall "
              f"{th['recall']:.2f} on val (best F1 {th['f1']:.2f}; stored in best.pt)")  # fmt: skip
    page = None
    if s.place.rank == 0 and not (stopped or "").startswith("interrupted"):
        page = try_report(lambda: run_report(s.run, device=str(s.place.device)))
        if page:
            s.say(f"report: {page}")
    t = task(s.optim.model.task)
    return {
        "report": str(page) if page else None,
        "run_dir": str(s.run),
        "task": t.name,
        "epochs": s.state.epoch,
        "metric": t.fitness,  # the metric that picked best.pt
        "best": s.state.best,
        "best_epoch": s.state.best_epoch,
        "default_conf": th,  # detectors: best.pt's threshold and its precision, recall, F1
        "stopped": stopped,
    }


def _final_plots(s: Session) -> None:
    """The curves with every epoch logged (during training they are drawn every so often)."""
    if s.place.rank == 0:
        try:
            write_plots(s.run)
        except Exception as e:  # noqa: BLE001 - a plot never costs the run
            warnings.warn(f"could not draw the training curves: {e}", stacklevel=2)


def _drop_if_empty(s: Session, resumed: bool) -> None:
    """A new run that failed before its first checkpoint leaves no folder behind."""
    weights = s.run / "weights"
    if s.place.rank == 0 and not resumed and not any(weights.glob("*.pt")):
        shutil.rmtree(s.run, ignore_errors=True)


def _loop(s: Session, console) -> str | None:
    """The epochs; returns why training stopped early (None when it ran them all)."""
    state, stopped, world = s.state, None, s.place.world
    start = time.time() - state.elapsed  # wall clock of the run, earlier sessions included
    budget = s.cfg.time * 60

    def clock() -> float:
        state.elapsed = time.time() - start
        return state.elapsed

    shown = console if s.place.rank == 0 else None
    with Stop() as stop, progress(shown, s.place.rank != 0, s.cfg.batch) as bar:
        stopping = lambda: agree(stop.signal is not None, world)  # noqa: E731

        def spent() -> bool:
            """Whether the budget is spent; also moves the LR schedule along with it (the
            same share on every rank)."""
            if not budget:
                return False
            s.optim.budget_spent[0] = min(1.0, largest(clock() / budget, world))
            return s.optim.budget_spent[0] >= 1.0

        while state.epoch < s.cfg.planned_epochs:
            if stopping():  # arrived between epochs: last.pt is current
                stopped = f"interrupted after epoch {state.epoch}"
                break
            if spent():
                stopped = f"time budget of {s.cfg.time} min reached"
                break
            if s.data.sampler is not None:
                s.data.sampler.set_epoch(state.epoch)
            if hasattr(s.data.loader.dataset, "set_epoch"):  # streamed scenes: new each epoch
                s.data.loader.dataset.set_epoch(state.epoch)
            _mosaic_phase(s)
            losses = _train_epoch(s, stopping, bar, spent)
            clock()
            if losses is None:
                s.checkpoint("last.pt", complete=False)
                stopped = f"interrupted in epoch {state.epoch + 1} after {state.batch} batches"
                break
            state.epoch += 1
            stopped = _end_epoch(s, losses, clock) if s.place.rank == 0 else None
            if agree(stopped is not None, world):
                stopped = stopped or "stopped by rank 0"
                break
    return stopped


def _mosaic_phase(s: Session) -> None:
    """Mosaic off for the last ``augment.close_mosaic`` share of the run (of its epochs, or of
    its time budget), so the model ends on whole images as they come. Set before the epoch's
    workers start, from the state alone, so a resumed run switches at the same epoch."""
    view, aug = s.data.loader.dataset, s.cfg.augment
    if not hasattr(view, "p") or aug.mosaic <= 0:
        return
    share = s.optim.budget_spent[0] if s.cfg.time else 0.0
    if s.cfg.planned_epochs < UNLIMITED:
        share = max(share, s.state.epoch / s.cfg.planned_epochs)
    view.p = 0.0 if share >= 1 - aug.close_mosaic else aug.mosaic


def validate(model, ds, device) -> dict:
    """The task's metrics of ``model`` on ``ds``, through the Predictor (as ``eval``)."""
    det = predictor(TorchBackend(model, device))
    return task(model.task).score(det, ds, batch=EVAL_BATCH).metrics


def _of(epoch: int, cfg: TrainConfig) -> str:
    """``3/30``, or ``3`` when only the time budget ends the run."""
    return f"{epoch}/{cfg.planned_epochs}" if cfg.planned_epochs < UNLIMITED else str(epoch)


def _end_epoch(s: Session, losses: dict, clock=time.time) -> str | None:
    """Validate, save last.pt (and best.pt), log (rank 0); returns why to stop, if it should.
    ``clock()`` updates the run's elapsed wall time (validation counts toward ``--time``)."""
    cfg, state, o = s.cfg, s.state, s.optim
    val_model = o.ema.module if o.ema else o.model
    precise_bn(val_model, s.data.train_ds, s.place.device, cfg.precise_bn, cfg.batch)
    t = task(o.model.task)
    metrics = validate(val_model, s.data.val_ds, s.place.device)
    if metrics.get("threshold"):  # a detector's default confidence: best F1 on validation
        o.model.default_conf = val_model.default_conf = metrics["threshold"]["conf"]
    fitness = metrics["fitness"]
    improved = fitness > state.best
    if improved:
        state.best, state.best_epoch, state.stale = fitness, state.epoch, 0
        s.best_threshold = metrics.get("threshold")
    else:
        state.stale += 1
    clock()
    s.checkpoint("last.pt", complete=True)
    if improved:
        _save_best(s)
    plot = time.monotonic() - s.plotted >= PLOT_EVERY_S
    s.plotted = time.monotonic() if plot else s.plotted
    log_epoch(s.run, s.writer, state, losses, {k: metrics[k] for k in t.logged}, o.opt, plot)
    s.say(
        f"epoch {_of(state.epoch, cfg)} "
        + " ".join(f"{k} {v:.4f}" for k, v in losses.items())
        + " | "
        + t.headline(metrics)
    )
    if cfg.patience and state.stale >= cfg.patience:
        return f"early stop: no gain for {cfg.patience} epochs"
    if cfg.time and clock() >= cfg.time * 60:
        return f"time budget of {cfg.time} min reached"
    return None


def _load_state(ckpt, optim, gen) -> State:
    t, model = ckpt["train"], optim.model
    if ckpt["model"]["classes"] != model.classes:
        raise ConfigError(
            f"the checkpoint has {len(ckpt['model']['classes'])} classes "
            f"{ckpt['model']['classes']}, the data {len(model.classes)} {model.classes}",
            "resume with the data the run was started on, or start a new run",
        )
    model.load_state_dict(ckpt["state_dict"])
    optim.opt.load_state_dict(t["optimizer"])
    optim.sched.load_state_dict(t["scheduler"])
    optim.scaler.load_state_dict(t["scaler"])
    if optim.ema is not None and t.get("ema"):
        optim.ema.load_state_dict(t["ema"])
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


def _train_epoch(s: Session, stopping, bar, spent=lambda: False) -> dict | None:
    """Train until the epoch ends (returns mean losses) or a signal stops it at an optimizer
    step boundary (returns None; ``state.batch`` says where). When ``spent()`` (the time
    budget) the epoch ends early, at a step boundary, and is validated as a whole one."""
    cfg, state, o = s.cfg, s.state, s.optim
    n = len(s.data.loader)
    o.model.train()
    totals: dict[str, float] = state.totals
    label = f"epoch {_of(state.epoch + 1, cfg)}"
    bar_row = bar.add_task(label, total=n, completed=state.batch)
    o.opt.zero_grad(set_to_none=True)
    for i, (images, targets) in enumerate(
        _batches(s.data.loader, s.data.gen, state), start=state.batch
    ):
        loss_dict = _forward(s, images, targets)
        loss = sum(loss_dict.values())
        if not torch.isfinite(loss):
            raise TrainingError(
                f"non-finite loss in epoch {state.epoch + 1}, step {i}: "
                + ", ".join(f"{k}={float(v):.4g}" for k, v in loss_dict.items()),
                "lower --lr, check the data with `detforge data check`, or set grad_clip",
            )
        o.scaler.scale(loss / cfg.accumulate).backward()
        if (i + 1) % cfg.accumulate == 0 or i + 1 == n:
            _optimizer_step(s)
        for k, v in loss_dict.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach())
        state.batch, state.step = i + 1, state.step + 1
        s.writer.add_scalar("train/loss", float(loss.detach()), state.step)
        s.writer.add_scalar("train/lr", o.opt.param_groups[0]["lr"], state.step)
        bar.update(bar_row, advance=1, description=f"{label} loss {float(loss.detach()):.3f}")
        # every rank reaches this point at the same batches, so the vote below cannot hang
        if state.batch % cfg.accumulate == 0 and state.batch < n:
            if stopping():
                bar.remove_task(bar_row)
                return None
            if spent():
                break
    bar.remove_task(bar_row)
    means = {k: v / max(state.batch, 1) for k, v in totals.items()}
    state.batch, state.totals, state.epoch_rng = 0, {}, None
    return means


def _forward(s: Session, images, targets) -> dict:
    device = s.place.device
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [
        {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets
    ]
    try:
        with torch.autocast(device.type, enabled=s.optim.scaler.is_enabled()):
            return s.optim.net(images, targets)
    except torch.OutOfMemoryError as e:
        b = s.cfg.batch
        raise TrainingError(
            f"out of GPU memory at batch size {b} (imgsz {s.cfg.imgsz})",
            f"lower --batch (e.g. {max(1, b // 2)}), --imgsz, or the model's rois; "
            "--accumulate keeps the effective batch; --batch auto finds what fits",
        ) from e


def _optimizer_step(s: Session) -> None:
    o = s.optim
    if s.cfg.grad_clip:
        o.scaler.unscale_(o.opt)
        torch.nn.utils.clip_grad_norm_(o.model.parameters(), s.cfg.grad_clip)
    o.scaler.step(o.opt)
    o.scaler.update()
    o.opt.zero_grad(set_to_none=True)
    o.sched.step()
    if o.ema is not None:
        o.ema.update_parameters(o.model)


def _save_best(s: Session) -> None:
    """best.pt: the validated weights (the EMA's when there is one), loadable like any
    checkpoint, with the metric that picked them."""
    o, st = s.optim, s.state
    best = {"metric": task(o.model.task).fitness, "value": st.best, "epoch": st.best_epoch}
    extra = {"best": best, "data": s.data_fingerprint()}
    if o.ema is None:
        s.checkpoint("best.pt", complete=True)
        return
    backup = {k: v.detach().clone() for k, v in o.model.state_dict().items()}
    o.model.load_state_dict(o.ema.module.state_dict())
    try:
        save_checkpoint(
            s.run / "weights" / "best.pt", o.model, train={"ema_weights": True}, **extra
        )
    finally:
        o.model.load_state_dict(backup)
