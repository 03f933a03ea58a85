"""The confidence a trained detector predicts with by default: the threshold that maximizes F1
on the validation split, measured per model and stored with it (checkpoint, ONNX and OpenVINO
metadata). Models without a measured one use
:data:`~detforge.models.base.FALLBACK_CONF`.

Matching is the P/R table's (:func:`~detforge.engine.evaluate.plots.at_confidence`):
class-aware, IoU 0.5, detections taken greedily in score order, each ground-truth box once. In
that order a detection's match depends only on the detections scored above it, so one pass
over all detections gives precision and recall at every threshold. Thresholds are searched on
a grid of 0.01; where several give the best F1, the middle of the widest stretch of them is
taken (a plateau's centre moves least when the validation images change).
"""

from __future__ import annotations

import numpy as np

from detforge.engine.evaluate.plots import _class_hits, _kept

GRID = np.round(np.arange(1, 100) / 100, 2)  # 0.01 ... 0.99


def f1_curve(gts, preds, iou: float = 0.5, grid=GRID) -> dict:
    """Precision, recall and F1 (all classes pooled) of the detections scored >= each ``grid``
    threshold. ``gts``: (boxes, labels) per image; ``preds``: dicts with boxes, scores,
    labels."""
    scores, hits, n_gt = [], [], 0
    for (gb, gl), p in zip(gts, preds):
        db, dl = _kept(p, 0.0)
        gl = np.asarray(gl, np.int64)
        hit_d, _ = _class_hits(np.asarray(gb, np.float32).reshape(-1, 4), gl, db, dl, iou)
        scores.append(np.sort(np.asarray(p["scores"], np.float64))[::-1])
        hits.append(hit_d)
        n_gt += len(gl)
    s = np.concatenate(scores) if scores else np.zeros(0)
    h = np.concatenate(hits) if hits else np.zeros(0, bool)
    grid = np.asarray(grid, np.float64)
    order = np.argsort(s, kind="stable")  # ascending: detections >= t are a suffix
    cum_tp = np.concatenate([[0], np.cumsum(h[order][::-1])])  # hits among the top k
    n = len(s) - np.searchsorted(s[order], grid, side="left")  # detections scored >= t
    tp = cum_tp[n].astype(np.float64)
    n = n.astype(np.float64)
    precision = np.divide(tp, n, out=np.zeros_like(tp), where=n > 0)
    recall = tp / n_gt if n_gt else np.zeros_like(tp)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
    return {"conf": grid, "precision": precision, "recall": recall, "f1": f1}


def best_threshold(curve: dict) -> dict | None:
    """``{conf, precision, recall, f1}`` at the threshold of highest F1 (of a tie, the middle
    of the widest stretch); None when no threshold finds anything (F1 0 everywhere)."""
    f1 = curve["f1"]
    if len(f1) == 0 or f1.max() <= 0:
        return None
    top = np.flatnonzero(f1 >= f1.max() - 1e-12)
    runs = np.split(top, np.flatnonzero(np.diff(top) > 1) + 1)  # contiguous stretches
    widest = max(runs, key=len)  # the first of equally wide ones: the lower threshold
    i = int(widest[len(widest) // 2])
    return {k: round(float(curve[k][i]), 4) for k in ("conf", "precision", "recall", "f1")}
