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


# The input size rule: at the chosen size, the 10th-percentile box keeps at least MIN_SIDE
# pixels on its shorter side (the image's longest side resized to the input size, as every
# detector here does). Below ~12 px a stride-8 head has one or two cells on the object and
# small-object recall collapses (fastdet-notes: COCO-small AP of 320 px models).
MIN_SIDE = 12
SMALL_QUANTILE = 10
SIZE_STEP = 32


def relative_sides(ds: Dataset) -> np.ndarray:
    """Each box's shorter side as a fraction of its image's longer side: times an input size,
    the box's pixels at that size. Boxes of images with no known size are left out."""
    out = [
        np.minimum(s.boxes[:, 2] - s.boxes[:, 0], s.boxes[:, 3] - s.boxes[:, 1])
        / max(s.width, s.height)
        for s in ds.samples
        if len(s.boxes) and min(s.width, s.height) > 0
    ]
    return np.concatenate(out) if out else np.zeros(0)


def small_at(ds: Dataset, imgsz: int, min_side: float = MIN_SIDE, sides=None) -> dict:
    """How the boxes fare at input size ``imgsz``: the 10th-percentile shorter side in
    pixels and the share of boxes under ``min_side`` pixels (``sides``: ``relative_sides``
    when already computed)."""
    r = (relative_sides(ds) if sides is None else sides) * imgsz
    if not len(r):
        return {"imgsz": imgsz, "p10_side": None, "under": 0.0, "min_side": min_side}
    return {
        "imgsz": imgsz,
        "p10_side": round(float(np.percentile(r, SMALL_QUANTILE)), 1),
        "under": round(float((r < min_side).mean()), 3),
        "min_side": min_side,
    }


def input_size_for(
    ds: Dataset, floor: int, cap: int, min_side: float = MIN_SIDE, sides=None
) -> dict:
    """The input size a detector should train at: the smallest multiple of 32 from ``floor``
    (the model's recipe size) up to ``cap`` at which the 10th-percentile box keeps
    ``min_side`` pixels (its shorter side); ``cap`` when even that is not enough. Returns
    ``{imgsz, reason, floor, cap}`` plus :func:`small_at` at the chosen size."""
    r = relative_sides(ds) if sides is None else sides
    if not len(r):
        return {**small_at(ds, floor, sides=r), "floor": floor, "cap": cap, "reason": "no boxes"}
    p10 = float(np.percentile(r, SMALL_QUANTILE))
    need = min_side / max(p10, 1e-9)
    size = int(min(max(np.ceil(need / SIZE_STEP) * SIZE_STEP, floor), max(cap, floor)))
    at_floor = p10 * floor
    if size == floor:
        reason = f"the 10th-percentile box keeps {at_floor:.0f} px at {floor} (rule: >= {min_side})"
    elif size < need:
        reason = (
            f"the 10th-percentile box has {at_floor:.1f} px at {floor}; {need:.0f} would keep "
            f"{min_side}, capped at {size}"
        )
    else:
        reason = (
            f"the 10th-percentile box has {at_floor:.1f} px at {floor}, {p10 * size:.1f} at {size}"
        )
    return {**small_at(ds, size, min_side, r), "floor": floor, "cap": cap, "reason": reason}


def stats(ds: Dataset, imgsz: int = 320) -> dict:
    """A JSON-ready summary of ``ds``; ``small`` says how its boxes fare at input size
    ``imgsz`` (:func:`small_at`) and which size the rule of :func:`input_size_for` picks."""
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
    if ds.task == "detect" and len(all_boxes):
        sides = relative_sides(ds)  # one pass over the samples for both
        out["small"] = {
            **small_at(ds, imgsz, sides=sides),
            "suggested": input_size_for(ds, imgsz, 4 * imgsz, sides=sides),
        }
    counts = images_per_class if ds.task == "classify" else boxes_per_class
    if nc and counts.min() > 0:
        out["imbalance"] = round(float(counts.max() / counts.min()), 2)
    return out
