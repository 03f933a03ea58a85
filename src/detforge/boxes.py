"""Box conversions. Inside detforge boxes are float32 (N, 4) absolute-pixel xyxy.

Every format converts at its own edge with :func:`to_xyxy` / :func:`from_xyxy`; nothing
else in the code base converts boxes.
"""

from __future__ import annotations

import numpy as np

FORMATS = ("xyxy", "xywh", "cxcywh")


def as_boxes(boxes) -> np.ndarray:
    """Return ``boxes`` as a float32 (N, 4) array (an empty input gives shape (0, 4))."""
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size == 0:
        return np.zeros((0, 4), np.float32)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"expected boxes of shape (N, 4), got {arr.shape}")
    return arr


def to_xyxy(boxes, fmt: str = "xyxy", *, normalized: bool = False, size=None) -> np.ndarray:
    """Convert ``boxes`` in ``fmt`` (optionally normalized to [0, 1]) to absolute xyxy.

    ``size`` is ``(width, height)`` of the image and is required when ``normalized``.
    """
    b = as_boxes(boxes).astype(np.float64)
    if fmt == "xywh":
        b = np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], 1)
    elif fmt == "cxcywh":
        hw, hh = b[:, 2] / 2, b[:, 3] / 2
        b = np.stack([b[:, 0] - hw, b[:, 1] - hh, b[:, 0] + hw, b[:, 1] + hh], 1)
    elif fmt != "xyxy":
        raise ValueError(f"unknown box format {fmt!r}; expected one of {FORMATS}")
    if normalized:
        if size is None:
            raise ValueError("size=(width, height) is required for normalized boxes")
        b = b * np.array([size[0], size[1], size[0], size[1]], np.float64)
    return b.reshape(-1, 4).astype(np.float32)


def from_xyxy(boxes, fmt: str = "xyxy", *, normalized: bool = False, size=None) -> np.ndarray:
    """Convert absolute xyxy ``boxes`` to ``fmt``, optionally normalized by ``size``.

    Computed in float64 and returned as float64 so writers keep full precision.
    """
    b = as_boxes(boxes).astype(np.float64)
    if normalized:
        if size is None:
            raise ValueError("size=(width, height) is required for normalized boxes")
        b = b / np.array([size[0], size[1], size[0], size[1]], np.float64)
    if fmt == "xywh":
        b = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
    elif fmt == "cxcywh":
        b = np.stack(
            [
                (b[:, 0] + b[:, 2]) / 2,
                (b[:, 1] + b[:, 3]) / 2,
                b[:, 2] - b[:, 0],
                b[:, 3] - b[:, 1],
            ],
            1,
        )
    elif fmt != "xyxy":
        raise ValueError(f"unknown box format {fmt!r}; expected one of {FORMATS}")
    return b.reshape(-1, 4)


def clip(boxes, width: float, height: float) -> np.ndarray:
    """Clip xyxy boxes to the image rectangle."""
    b = as_boxes(boxes).copy()
    np.clip(b[:, 0::2], 0, width, out=b[:, 0::2])
    np.clip(b[:, 1::2], 0, height, out=b[:, 1::2])
    return b


def area(boxes) -> np.ndarray:
    b = as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def problems(boxes, width: float, height: float, tol: float = 0.5) -> dict[str, np.ndarray]:
    """Boolean masks, one per problem kind, for xyxy ``boxes`` in a ``width`` x ``height`` image.

    Kinds: ``nan`` (non-finite), ``inverted`` (x2 < x1 or y2 < y1), ``zero_area``,
    ``out_of_bounds`` (beyond the image by more than ``tol`` pixels).
    """
    b = as_boxes(boxes)
    finite = np.isfinite(b).all(1)
    with np.errstate(invalid="ignore"):
        inverted = finite & ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))
        zero = finite & ~inverted & ((b[:, 2] - b[:, 0] <= 0) | (b[:, 3] - b[:, 1] <= 0))
        oob = finite & (
            (b[:, 0] < -tol) | (b[:, 1] < -tol) | (b[:, 2] > width + tol) | (b[:, 3] > height + tol)
        )
    return {"nan": ~finite, "inverted": inverted, "zero_area": zero, "out_of_bounds": oob}


def iou(a, b) -> np.ndarray:
    """Pairwise IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4) -> (N, M)."""
    a, b = as_boxes(a), as_boxes(b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
