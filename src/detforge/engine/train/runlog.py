"""What a training run writes besides weights: TensorBoard, metrics.csv, plots, environment,
and the progress bar."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import torch

from detforge._version import __version__
from detforge.fileio import atomic_write_bytes


def tensorboard(run: Path, step: int):
    """A SummaryWriter that drops events logged after ``step`` by an interrupted run, so a
    resumed run's steps stay in order."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return NullWriter()
    return SummaryWriter(str(run / "tensorboard"), purge_step=step if step else None)


class NullWriter:
    def add_scalar(self, *a, **k):
        pass

    def close(self):
        pass


def log_epoch(run: Path, writer, state, losses: dict, metrics: dict, opt) -> None:
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
    from detforge.engine.evaluate.plots import figure, png

    with (run / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) for r in rows]
    (run / "plots").mkdir(exist_ok=True)
    for name, keys in (
        ("loss", [k for k in rows[-1] if k.startswith("loss/")]),
        ("map", [k for k in ("mAP50", "mAP50-95") if k in rows[-1]]),
        ("accuracy", [k for k in ("top1", "top5") if k in rows[-1]]),
    ):
        if not keys:
            continue
        fig = figure((6, 4))
        ax = fig.subplots()
        for k in keys:
            ax.plot(
                epochs, [float(r[k]) if r.get(k) else np.nan for r in rows], marker="o", label=k
            )
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
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


def progress(console, disable: bool = False):
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
