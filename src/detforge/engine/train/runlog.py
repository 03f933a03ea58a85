"""What a training run writes besides weights: TensorBoard, metrics.csv, plots, environment,
and the progress bar."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import torch

from detforge._version import __version__
from detforge.engine.evaluate.plots import png
from detforge.engine.report import curve_figure, read_metrics
from detforge.fileio import atomic_write_bytes


def tensorboard(run: Path, step: int):
    """A SummaryWriter that drops events logged after ``step`` by an interrupted run, so a
    resumed run's steps stay in order."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return NullWriter()
    return SummaryWriter(str(run / "tensorboard"), purge_step=step if step else None)


PLOT_EVERY_S = 30.0  # drawing the curves takes about half a second


class NullWriter:
    def add_scalar(self, *a, **k):
        pass

    def close(self):
        pass


def log_epoch(run: Path, writer, state, losses: dict, metrics: dict, opt, plot: bool) -> None:
    """One epoch's row in TensorBoard and ``metrics.csv``; with ``plot``, the curves
    (``plots/*.png``) drawn again too (training draws them at most every ``PLOT_EVERY_S``
    seconds, and once when it ends)."""
    row = {
        "epoch": state.epoch,
        "step": state.step,
        **{f"loss/{k}": v for k, v in losses.items()},
        "lr": opt.param_groups[0]["lr"],
        **{k: metrics[k] for k in ("mAP50-95", "mAP50", "top1", "top5") if k in metrics},
    }
    for k, v in row.items():
        if k not in ("epoch", "step"):
            writer.add_scalar(k if "/" in k else f"val/{k}", v, state.step)
    _append_csv(run / "metrics.csv", row)
    if plot:
        write_plots(run)


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


def write_plots(run: Path) -> None:
    """The loss, mAP and accuracy curves of ``run/metrics.csv`` as ``run/plots/*.png``."""
    if not (run / "metrics.csv").is_file():
        return

    rows = read_metrics(run)
    (run / "plots").mkdir(exist_ok=True)
    for name, keys in (
        ("loss", [k for k in rows[-1] if k.startswith("loss/")]),
        ("map", [k for k in ("mAP50", "mAP50-95") if k in rows[-1]]),
        ("accuracy", [k for k in ("top1", "top5") if k in rows[-1]]),
    ):
        if keys:
            fig = curve_figure(rows, keys, name, "value", size=(6, 4))
            atomic_write_bytes(run / "plots" / f"{name}.png", png(fig, dpi=100))


def detforge_revision() -> str | None:
    """The git revision of the detforge source in use (an editable install from a checkout),
    else None; never the revision of the user's current directory or of a repository that
    merely holds a virtualenv."""
    import subprocess

    src = Path(__file__).resolve().parents[3]  # the folder holding the detforge package

    def git(*args) -> str | None:
        try:
            r = subprocess.run(
                ["git", "-C", str(src), *args], capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    if git("ls-files", "--error-unmatch", "detforge/_version.py") is None:
        return None  # not a tracked detforge source tree
    return git("rev-parse", "HEAD")


def save_environment(run: Path, cfg) -> None:
    import platform

    import torchvision

    env = {
        "detforge": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
        "seed": cfg.seed,
        "detforge_git": detforge_revision(),
        "cpu_count": os.cpu_count(),
    }
    atomic_write_bytes(run / "environment.json", json.dumps(env, indent=2).encode())


class PlainProgress:
    """Progress as plain lines, for output that is not a terminal (a pipe, a log file, a
    notebook, CI): one line every ``interval`` seconds, and at each tenth of a bar when the last
    line is ``gap`` seconds old (never more than one line per ``gap``), with images/s and the
    time left. Same calls as rich's Progress (whose bars it calls tasks), as the loop uses
    them."""

    def __init__(self, say, batch: int = 1, interval: float = 30.0, gap: float = 10.0):
        self.say, self.batch, self.interval, self.gap = say, batch, interval, gap
        self.rows: dict[int, dict] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def add_task(self, description: str, total: int, completed: int = 0) -> int:
        k = len(self.rows)
        now = time.monotonic()
        self.rows[k] = dict(
            desc=description,
            total=total,
            done=completed,
            start=now,
            first=completed,
            last=now,
            tenth=completed * 10 // max(total, 1),
        )
        return k

    def update(self, k: int, advance: int = 1, description: str | None = None) -> None:
        t = self.rows[k]
        t["done"] += advance
        t["desc"] = description or t["desc"]
        now, tenth = time.monotonic(), t["done"] * 10 // max(t["total"], 1)
        waited = now - t["last"]
        at_tenth = tenth > t["tenth"] and waited >= self.gap
        if t["done"] < t["total"] and (waited >= self.interval or at_tenth):
            t["last"], t["tenth"] = now, tenth
            rate = (t["done"] - t["first"]) / max(now - t["start"], 1e-9)
            left = (t["total"] - t["done"]) / rate if rate > 0 else float("nan")
            self.say(
                f"{t['desc']}: {t['done']}/{t['total']} batches "
                f"({100 * t['done'] / max(t['total'], 1):.0f}%), {rate * self.batch:.1f} "
                f"images/s, {_duration(left)} left in this epoch"
            )

    def remove_task(self, k: int) -> None:
        self.rows.pop(k, None)


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def progress(console, disable: bool = False, batch: int = 1):
    """A rich progress bar in a terminal; plain periodic lines otherwise (see PlainProgress)."""
    if not disable:
        from rich.console import Console

        console = console or Console()
        if not console.is_terminal:
            return PlainProgress(
                lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True),
                batch,
            )
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
