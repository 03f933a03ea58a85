"""What COCO mAP does not say: precision, recall and a confusion matrix at one confidence,
and the plots (PR curves, confusion matrix) for an evaluation folder."""

from __future__ import annotations

import io

import numpy as np

from detforge.boxes import iou as box_iou
from detforge.data.report.page import figure
from detforge.fileio import atomic_write_bytes


def _greedy(gt_boxes, det_boxes, thr: float, allowed=None) -> list[tuple[int, int]]:
    """Match detections (sorted by score) to ground truth at IoU >= ``thr``, each GT once;
    ``allowed[d, g]`` restricts the pairs. Returns (det, gt) pairs."""
    if len(gt_boxes) == 0 or len(det_boxes) == 0:
        return []
    ious = box_iou(det_boxes, gt_boxes)
    if allowed is not None:
        ious = np.where(allowed, ious, 0.0)
    taken = np.zeros(len(gt_boxes), bool)
    pairs = []
    for d in range(len(det_boxes)):
        cand = np.where(~taken & (ious[d] >= thr), ious[d], -1.0)
        g = int(cand.argmax())
        if cand[g] >= 0:
            taken[g] = True
            pairs.append((d, g))
    return pairs


def _kept(p: dict, conf: float):
    """A prediction's boxes and labels with score >= ``conf``, highest score first."""
    scores = np.asarray(p["scores"])
    keep = scores >= conf
    order = np.argsort(-scores[keep], kind="stable")
    db = np.asarray(p["boxes"], np.float32).reshape(-1, 4)[keep][order]
    return db, np.asarray(p["labels"], np.int64)[keep][order]


def _class_hits(gb, gl, db, dl, iou: float):
    """Which detections and which ground-truth boxes are matched, class-aware."""
    pairs = _greedy(gb, db, iou, dl[:, None] == gl[None, :])
    hit_d = np.zeros(len(db), bool)
    hit_g = np.zeros(len(gb), bool)
    for d, g in pairs:
        hit_d[d] = hit_g[g] = True
    return hit_d, hit_g


def image_errors(gt_boxes, gt_labels, pred: dict, conf: float, iou: float = 0.5) -> tuple:
    """(false positives, missed boxes) of one image's prediction at ``conf``, matched
    class-aware at IoU ``iou`` as :func:`at_confidence` counts them."""
    db, dl = _kept(pred, conf)
    hit_d, hit_g = _class_hits(gt_boxes, np.asarray(gt_labels, np.int64), db, dl, iou)
    return int((~hit_d).sum()), int((~hit_g).sum())


def at_confidence(gts, preds, num_classes: int, conf: float, iou: float = 0.5) -> dict:
    """Per-class TP/FP/FN (class-aware matching) and the confusion matrix (class-agnostic
    matching; last row/column is the background) of detections with score >= ``conf``.
    ``gts``: (boxes, labels) per image; ``preds``: dicts with boxes, scores, labels."""
    tp, fp, fn = (np.zeros(num_classes, np.int64) for _ in range(3))
    cm = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    bg = num_classes
    for (gb, gl), p in zip(gts, preds):
        db, dl = _kept(p, conf)
        gl = np.asarray(gl, np.int64)
        hit_d, hit_g = _class_hits(gb, gl, db, dl, iou)
        np.add.at(tp, dl[hit_d], 1)
        np.add.at(fp, dl[~hit_d], 1)
        np.add.at(fn, gl[~hit_g], 1)
        pairs = _greedy(gb, db, iou)
        md = np.zeros(len(db), bool)
        mg = np.zeros(len(gb), bool)
        for d, g in pairs:
            cm[gl[g], dl[d]] += 1
            md[d] = mg[g] = True
        np.add.at(cm, (np.full((~md).sum(), bg), dl[~md]), 1)
        np.add.at(cm, (gl[~mg], np.full((~mg).sum(), bg)), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
    T, F, N = int(tp.sum()), int(fp.sum()), int(fn.sum())
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "precision_all": T / (T + F) if T + F else 0.0,
        "recall_all": T / (T + N) if T + N else 0.0,
        "confusion": cm,
    }


def png(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def plot_pr(curves: dict[str, np.ndarray], path, title: str = "PR curve at IoU 0.5") -> None:
    """``curves[name]``: precision at the 101 COCO recall points (-1 where undefined)."""
    atomic_write_bytes(path, png(pr_figure(curves, title)))


def pr_figure(curves: dict[str, np.ndarray], title: str = "PR curve at IoU 0.5"):
    fig = figure(6, 5)
    ax = fig.subplots()
    r = np.linspace(0, 1, 101)
    for name, p in curves.items():
        p = np.asarray(p, float)
        ok = p > -1
        ap = p[ok].mean() if ok.any() else 0.0
        ax.plot(r[ok], p[ok], label=f"{name} AP50 {ap:.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return fig


def f1_figure(curve: dict, conf: float, title: str = "F1 against confidence at IoU 0.5"):
    """Precision, recall and F1 over the confidence grid (``threshold.f1_curve``), with the
    threshold predictions use (``conf``) marked."""
    fig = figure(6, 5)
    ax = fig.subplots()
    for key in ("f1", "precision", "recall"):
        ax.plot(
            curve["conf"],
            curve[key],
            label=key if key != "f1" else "F1",
            lw=2 if key == "f1" else 1,
        )
    f1_at = float(np.interp(conf, curve["conf"], curve["f1"])) if len(curve["conf"]) else 0.0
    ax.axvline(conf, color="0.4", ls="--", lw=1, label=f"default conf {conf:.2f} (F1 {f1_at:.3f})")
    ax.set(xlabel="confidence threshold", ylabel="value", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return fig


def plot_confusion(cm: np.ndarray, names: list[str], path, title: str = "") -> None:
    """Rows: true class, columns: predicted; ``background`` is the last row and column."""
    atomic_write_bytes(path, png(confusion_figure(cm, names, title)))


def confusion_figure(cm: np.ndarray, names: list[str], title: str = ""):
    labels = list(names) + (["background"] if len(cm) == len(names) + 1 else [])
    n = len(labels)
    fig = figure(1.0 + 0.6 * n, 0.8 + 0.55 * n)
    ax = fig.subplots()
    rows = cm.sum(1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    int(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if frac[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix (counts)")
    return fig
