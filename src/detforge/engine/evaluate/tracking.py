"""Tracking metrics (MOTA, IDF1, ID switches, ...) from MOTChallenge text files, computed by
``motmetrics`` (MIT). detforge reads the files itself, so a bad line is named, and gives the
accumulator its box distances (IoU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detforge.boxes import iou as box_iou
from detforge.errors import DetforgeError, require


def import_motmetrics():
    return require("motmetrics", "eval-track needs motmetrics",
                   "pip install 'detforge[track]' (or: pip install motmetrics)")  # fmt: skip


def read_mot(path, *, ground_truth: bool = False) -> np.ndarray:
    """Rows ``frame, id, x, y, w, h, conf, class, visibility`` (float64, N x 9) of a
    MOTChallenge file (comma or space separated; missing trailing columns read as -1). In
    ground truth, rows with confidence 0 are the benchmark's "ignore" boxes and are left out."""
    path = Path(path)
    if not path.is_file():
        raise DetforgeError(f"{path}: not found", "pass a MOTChallenge .txt (predict --track "
                            "writes tracks.txt)")  # fmt: skip
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            fields = line.replace(",", " ").split()
            if not fields:
                continue
            try:
                values = [float(v) for v in fields[:9]]
            except ValueError:
                values = []
            bad = len(values) < 6 or values[0] < 1 or values[4] <= 0 or values[5] <= 0
            if bad or not np.isfinite(values).all():
                raise DetforgeError(
                    f"{path}: line {n}: not a MOTChallenge row ({line.strip()[:80]!r})",
                    "each line is frame, id, x, y, width, height[, conf, class, visibility] "
                    "with frames from 1 and positive sizes",
                )
            rows.append(values + [-1.0] * (9 - len(values)))
    out = np.array(rows, np.float64).reshape(-1, 9)
    if ground_truth:
        out = out[out[:, 6] != 0]
    return out


def accumulate(mm, truth: np.ndarray, tracks: np.ndarray, iou: float):
    """A ``motmetrics`` accumulator fed frame by frame with 1 - IoU distances (pairs below
    ``iou`` cannot match). The distances are detforge's own IoU: motmetrics 1.4's helper for
    them uses a function NumPy 2 removed."""

    acc = mm.MOTAccumulator(auto_id=False)
    for frame in np.union1d(truth[:, 0], tracks[:, 0]).astype(int):
        t, p = truth[truth[:, 0] == frame], tracks[tracks[:, 0] == frame]
        xyxy_t = np.concatenate([t[:, 2:4], t[:, 2:4] + t[:, 4:6]], 1).astype(np.float32)
        xyxy_p = np.concatenate([p[:, 2:4], p[:, 2:4] + p[:, 4:6]], 1).astype(np.float32)
        overlap = box_iou(xyxy_t, xyxy_p) if len(t) and len(p) else np.zeros((len(t), len(p)))
        dist = np.where(overlap >= iou, 1.0 - overlap, np.nan)
        acc.update(t[:, 1].astype(int), p[:, 1].astype(int), dist, frameid=int(frame))
    return acc


def evaluate_tracks(pred, gt, *, iou: float = 0.5) -> dict:
    """CLEAR-MOT and identity metrics of the tracks in ``pred`` against ``gt`` (both
    MOTChallenge files); a track's box matches a true box at IoU >= ``iou``."""
    mm = import_motmetrics()
    truth = read_mot(gt, ground_truth=True)
    if not len(truth):
        raise DetforgeError(f"{gt}: holds no ground-truth boxes", "pass the gt.txt of the video")
    tracks = read_mot(pred)
    acc = accumulate(mm, truth, tracks, iou)
    names = {
        "mota": "mota", "idf1": "idf1", "num_switches": "id_switches", "motp": "motp",
        "precision": "precision", "recall": "recall", "num_false_positives": "false_positives",
        "num_misses": "misses", "mostly_tracked": "mostly_tracked", "mostly_lost": "mostly_lost",
        "num_unique_objects": "objects", "num_fragmentations": "fragmentations",
    }  # fmt: skip
    summary = mm.metrics.create().compute(acc, metrics=list(names), name="all")
    m = {names[k]: summary[k].iloc[0] for k in names}
    out = {k: (int(v) if k not in ("mota", "idf1", "motp", "precision", "recall") else
               float(v)) for k, v in m.items()}  # fmt: skip
    out["motp_iou"] = round(1 - out.pop("motp"), 6) if np.isfinite(m["motp"]) else 0.0
    for k in ("mota", "idf1", "precision", "recall"):
        out[k] = round(out[k], 6) if np.isfinite(out[k]) else 0.0
    out["frames"] = int(len(np.unique(truth[:, 0])))
    out["tracks"] = int(len(np.unique(tracks[:, 1]))) if len(tracks) else 0
    out["iou"] = iou
    return out
