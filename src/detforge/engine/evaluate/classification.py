"""Scoring a classifier on a dataset through a Predictor: top-1, top-5, per-class
precision/recall/F1, the confusion matrix, and a grid of misclassified images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detforge.data.dataset import Dataset
from detforge.data.viz import grid, save_png
from detforge.engine.evaluate.detection import EVAL_BATCH, Scored
from detforge.engine.evaluate.plots import plot_confusion


def metrics(probs: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    """``probs`` (N, K), true classes ``y`` (N,) -> top1, top5, per class P/R/F1, confusion."""
    k = len(classes)
    n = max(len(y), 1)
    order = np.argsort(-probs, 1) if len(y) else np.zeros((0, k), int)
    pred = order[:, 0] if len(y) else np.zeros(0, int)
    top5 = (order[:, : min(5, k)] == y[:, None]).any(1).sum() if len(y) else 0
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y, pred), 1)
    tp = np.diag(cm).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.nan_to_num(tp / cm.sum(0))
        rec = np.nan_to_num(tp / cm.sum(1))
        f1 = np.nan_to_num(2 * prec * rec / (prec + rec))
    per = {
        c: {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "support": int(cm[i].sum()),
        }
        for i, c in enumerate(classes)
    }
    top1 = float(tp.sum() / n)
    return {
        "top1": top1,
        "top5": float(top5 / n),
        "fitness": top1,
        "per_class": per,
        "confusion": cm,
    }


def score(det, ds: Dataset, *, batch: int = EVAL_BATCH, progress: bool = False, **_) -> Scored:
    """Top-k metrics of Predictor ``det`` on ``ds``; keeps up to 16 misclassified images."""
    from rich.progress import track

    probs, wrong = [], []
    steps = range(0, len(ds), batch)
    for i in track(steps, description="evaluating", disable=not progress, transient=True):
        chunk = ds.samples[i : i + batch]
        images = [s.load() for s in chunk]
        for s, im, r in zip(chunk, images, det.predict(images, batch=batch)):
            probs.append(r.probs)
            if r.top[0] != s.category and len(wrong) < 16:
                wrong.append(_caption(im, f"{ds.classes[s.category]} -> {r.classes[r.top[0]]}"))
    y = np.array([s.category for s in ds.samples], np.int64)
    p = np.stack(probs) if probs else np.zeros((0, len(ds.classes)), np.float32)
    m = metrics(p, y, ds.classes)
    cm = m["confusion"]
    m.update(confusion=cm.tolist(), images=len(ds))
    return Scored(m, [{"probs": x} for x in probs], {"confusion": cm, "wrong": wrong})


def write_report(scored: Scored, ds: Dataset, run: Path) -> None:
    """The confusion matrix and a grid of misclassified images."""

    plot_confusion(scored.extra["confusion"], ds.classes, run / "confusion_matrix.png")
    if scored.extra["wrong"]:
        save_png(grid(scored.extra["wrong"], cols=4, cell=160), run / "misclassified.png")


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.fromarray(image)
    ImageDraw.Draw(img).text((4, 4), text, fill=(255, 0, 0))
    return np.asarray(img)
