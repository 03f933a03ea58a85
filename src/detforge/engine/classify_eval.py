"""Classification metrics: top-1, top-5, per-class precision/recall/F1, confusion matrix, and
a grid of misclassified images; ``evaluate_classifier`` is ``detforge eval`` for classifiers."""

from __future__ import annotations

import numpy as np
import torch

from detforge.data.dataset import Dataset


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


@torch.no_grad()
def classify_dataset(model, ds: Dataset, *, batch: int = 32, device="cpu") -> np.ndarray:
    """Probabilities (N, K) of ``model`` (eval mode) on every sample of ``ds``, in order."""
    from detforge.data.loader import make_loader

    was = model.training
    model.eval()
    out = []
    for images, _ in make_loader(ds, batch_size=batch, workers=0, shuffle=False):
        out += [o["probs"].cpu().numpy() for o in model([im.to(device) for im in images])]
    model.train(was)
    return np.stack(out) if out else np.zeros((0, len(ds.classes)), np.float32)


def validate(model, ds: Dataset, *, batch: int = 32, device="cpu") -> dict:
    y = np.array([s.category for s in ds.samples], np.int64)
    return metrics(classify_dataset(model, ds, batch=batch, device=device), y, ds.classes)


def evaluate_classifier(det, ds: Dataset, run, batch: int = 32) -> dict:
    """Top-k metrics of a loaded Predictor on ``ds``; writes the confusion matrix and a grid
    of misclassified images into ``run``."""
    from detforge.engine.report import plot_confusion
    from detforge.viz import grid, save_png

    probs, wrong = [], []
    for i in range(0, len(ds), batch):
        chunk = ds.samples[i : i + batch]
        images = [s.load() for s in chunk]
        for s, im, r in zip(chunk, images, det.predict(images, batch=batch)):
            probs.append(r.probs)
            if r.top[0] != s.category and len(wrong) < 16:
                wrong.append(_caption(im, f"{ds.classes[s.category]} -> {r.names[r.top[0]]}"))
    y = np.array([s.category for s in ds.samples], np.int64)
    m = metrics(np.stack(probs), y, ds.classes)
    plot_confusion(m["confusion"], ds.classes, run / "confusion_matrix.png")
    if wrong:
        save_png(grid(wrong, cols=4, cell=160), run / "misclassified.png")
    m["confusion"] = m["confusion"].tolist()
    return m


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.fromarray(image)
    ImageDraw.Draw(img).text((4, 4), text, fill=(255, 0, 0))
    return np.asarray(img)
