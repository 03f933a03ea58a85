"""The one resize between training and serving.

Every image a model sees is brought to its input size here: the decoded training cache, the
training view read from disk, and :func:`prepare` on the host at inference (predict, eval,
validation, serve, export parity). One filter, so what a model trained on is what it serves on:

- shrinking: a box filter by the whole factor first (``INTER_AREA``, OpenCV's fast path), then
  bilinear over what remains (< 2x): antialiased, like PIL's ``reducing_gap`` and torch's
  ``antialias=True``, at OpenCV's speed;
- enlarging: bilinear.

Training holds each image with its aspect kept and its longest side at most the input size
(:func:`shrink`); the model brings it to its square input. At inference, :func:`prepare` does
the same on the host by the model's ``resize_mode``: ``stretch`` (shrunk as training holds
it, then enlarged to the square, as the model enlarges it; detforge's own models) or
``letterbox`` (aspect kept, padded bottom/right with the mean colour; torchvision's
detectors).
"""

from __future__ import annotations

import cv2
import numpy as np

PAD = (124, 116, 104)  # ImageNet mean: zero after the model's normalization


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """HxWxC uint8 -> height x width x C, with the filter described above."""
    h, w = pixels.shape[:2]
    if (w, h) == (width, height):
        return pixels
    kx, ky = max(1, w // width), max(1, h // height)
    if kx > 1 or ky > 1:  # whole-factor box shrink: exact area averages, no aliasing
        pixels = cv2.resize(pixels, (w // kx, h // ky), interpolation=cv2.INTER_AREA)
        if pixels.shape[1] == width and pixels.shape[0] == height:  # e.g. 640x480 -> 320x240
            return pixels
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)


def held_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The size training holds a ``width`` x ``height`` image at for input ``side``: the
    aspect kept, the longest side at most ``side`` (never enlarged). The model brings it to
    its square input itself, as :func:`prepare` does on the host."""
    k = min(1.0, side / max(width, height, 1))
    return max(1, round(width * k)), max(1, round(height * k))


def shrink(pixels: np.ndarray, side: int) -> tuple[np.ndarray, tuple[float, float]]:
    """``pixels`` at :func:`held_size`, and the (x, y) gains that map its boxes."""
    h, w = pixels.shape[:2]
    nw, nh = held_size(w, h, side)
    if (nw, nh) == (w, h):
        return pixels, (1.0, 1.0)
    return resize(pixels, nw, nh), (nw / w, nh / h)


def prepare(image: np.ndarray, size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """RGB HxWx3 -> uint8 (3, size, size), the model's input, and the (sx, sy) that map its
    boxes back. ``stretch``: shrunk as training holds it (:func:`shrink`), then stretched to
    the square by bilinear enlarging, as the model enlarges a held training image;
    ``letterbox`` keeps the aspect and pads bottom/right with the mean colour."""
    h, w = image.shape[:2]
    if mode == "stretch":
        held, _ = shrink(image, size)
        out = resize(held, size, size)  # enlarges only: bilinear
        scale = np.array([size / w, size / h], np.float32)
    else:
        r = size / max(h, w)
        nw, nh = max(1, round(w * r)), max(1, round(h * r))
        out = np.empty((size, size, 3), np.uint8)
        out[:] = PAD
        out[:nh, :nw] = resize(image, nw, nh)
        scale = np.array([nw / w, nh / h], np.float32)
    return np.ascontiguousarray(out.transpose(2, 0, 1)), scale
