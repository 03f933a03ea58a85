"""Dataset statistics: images, negatives, boxes per class, box and image sizes."""

from __future__ import annotations

import numpy as np

from detforge.data.dataset import Dataset


def _summary(values: np.ndarray) -> dict:
    if not len(values):
        return {}
    q = np.percentile(values, [0, 50, 100])
    return {
        "min": round(float(q[0]), 1),
        "median": round(float(q[1]), 1),
        "max": round(float(q[2]), 1),
    }


def stats(ds: Dataset) -> dict:
    """A JSON-ready summary of ``ds``."""
    nc = len(ds.classes)
    boxes_per_class = np.zeros(nc, np.int64)
    images_per_class = np.zeros(nc, np.int64)
    for s in ds.samples:
        valid = s.labels[(s.labels >= 0) & (s.labels < nc)]
        np.add.at(boxes_per_class, valid, 1)
        images_per_class[np.unique(valid)] += 1
        if s.category is not None:
            images_per_class[s.category] += 1
    all_boxes = np.concatenate([s.boxes for s in ds.samples]) if len(ds) else np.zeros((0, 4))
    wh = all_boxes[:, 2:] - all_boxes[:, :2]
    area = wh.prod(1) if len(wh) else np.zeros(0)
    sizes = np.array([[s.width, s.height] for s in ds.samples]).reshape(-1, 2)
    out = {
        "task": ds.task,
        "format": ds.format,
        "images": len(ds),
        "negatives": ds.num_negatives,
        "boxes": int(len(all_boxes)),
        "classes": {
            c: {"boxes": int(b), "images": int(i)}
            for c, b, i in zip(ds.classes, boxes_per_class, images_per_class)
        },
        "boxes_per_image": {
            "mean": round(len(all_boxes) / max(len(ds), 1), 2),
            "max": max((len(s.boxes) for s in ds.samples), default=0),
        },
        "box_sizes": {  # COCO's area ranges
            "small": int((area < 32**2).sum()),
            "medium": int(((area >= 32**2) & (area < 96**2)).sum()),
            "large": int((area >= 96**2).sum()),
            "width": _summary(wh[:, 0]) if len(wh) else {},
            "height": _summary(wh[:, 1]) if len(wh) else {},
        },
        "image_sizes": {
            "width": _summary(sizes[:, 0]),
            "height": _summary(sizes[:, 1]),
            "distinct": int(len(np.unique(sizes, axis=0))),
        },
    }
    counts = images_per_class if ds.task == "classify" else boxes_per_class
    if nc and counts.min() > 0:
        out["imbalance"] = round(float(counts.max() / counts.min()), 2)
    return out
