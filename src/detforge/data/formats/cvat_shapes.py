"""CVAT's shapes as boxes, shared by the readers of CVAT for images and for video."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detforge.data.dataset import ClassIndex, Sample
from detforge.errors import FormatError

NO_BOX = ("polyline", "points", "skeleton", "cuboid")
SHAPES = ("box", "polygon", "ellipse", "mask", *NO_BOX)


def _num(el, key: str, xml: Path, where: str) -> float:
    try:
        v = float(el.get(key))
    except (TypeError, ValueError):
        raise FormatError(xml, f"{where}: {key}={el.get(key)!r} is not a number",
                          "export it from CVAT again") from None  # fmt: skip
    if not np.isfinite(v):
        raise FormatError(xml, f"{where}: {key} is {v}", "export it from CVAT again")
    return v


def _points(el, xml: Path, where: str) -> np.ndarray:
    try:
        pts = [[float(v) for v in p.split(",")] for p in (el.get("points") or "").split(";") if p]
        arr = np.array(pts, np.float64).reshape(-1, 2)
    except ValueError:
        raise FormatError(xml, f"{where}: points={el.get('points')!r:.60} are not x,y;x,y...",
                          "export it from CVAT again") from None  # fmt: skip
    if not len(arr) or not np.isfinite(arr).all():
        raise FormatError(xml, f"{where}: no usable points", "export it from CVAT again")
    return arr


def shape_box(el, xml: Path, where: str) -> np.ndarray | None:
    """The xyxy box of one CVAT shape; None for shapes that enclose no box."""
    tag = el.tag
    if tag == "box":
        x0, y0, x1, y1 = (_num(el, k, xml, where) for k in ("xtl", "ytl", "xbr", "ybr"))
        angle = float(el.get("rotation") or 0.0)
        if angle:  # rotated about its centre: the box that encloses it
            c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
            corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) - c
            t = np.deg2rad(angle)
            rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
            pts = corners @ rot.T + c
            return np.concatenate([pts.min(0), pts.max(0)])
        return np.array([x0, y0, x1, y1])
    if tag == "polygon":
        pts = _points(el, xml, where)
        return np.concatenate([pts.min(0), pts.max(0)])
    if tag == "ellipse":
        cx, cy, rx, ry = (_num(el, k, xml, where) for k in ("cx", "cy", "rx", "ry"))
        return np.array([cx - rx, cy - ry, cx + rx, cy + ry])
    if tag == "mask":
        x, y, w, h = (_num(el, k, xml, where) for k in ("left", "top", "width", "height"))
        return np.array([x, y, x + w, y + h])
    return None


FLAGS = ("difficult", "truncated")  # attributes that are detforge's own per-box flags


def _attributes(el) -> tuple[bool, bool, dict]:
    """(difficult, truncated, the other attributes): ``difficult`` and ``truncated`` are
    detforge's flags (``occluded`` is truncated too); the rest kept by name, as text."""
    attrs = {a.get("name", ""): (a.text or "").strip() for a in el.iter("attribute")}
    flags = {k.lower(): v.lower() for k, v in attrs.items() if k.lower() in FLAGS}
    yes = ("1", "true", "yes")
    occluded = el.get("occluded", "0") in yes
    other = {k: v for k, v in attrs.items() if k and k.lower() not in FLAGS}
    return flags.get("difficult") in yes, occluded or flags.get("truncated") in yes, other


class Objects:
    """Boxes, labels, flags and attributes gathered for one sample."""

    def __init__(self):
        self.boxes, self.labels, self.difficult, self.truncated = [], [], [], []
        self.attributes: list[dict] = []
        self.skipped: list[str] = []

    def add(self, el, box, index: ClassIndex, label: str | None = None, **extra) -> None:
        d, t, other = _attributes(el)
        self.boxes.append(box)
        self.labels.append(index(label or el.get("label").strip()))
        self.difficult.append(d)
        self.truncated.append(t)
        self.attributes.append({**other, **extra})

    def sample(self, ref, w: int, h: int) -> Sample:
        boxes = np.array(self.boxes, np.float32).reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w or None)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h or None)
        return Sample(ref, w, h, boxes, self.labels, self.difficult, self.truncated,
                      attributes=self.attributes)  # fmt: skip
