"""Decoded training images kept in memory, for sets small enough to hold.

Small datasets are read hundreds of times in a run, and decoding a photo costs more than a
small model's step on it. :class:`DecodedSamples` decodes each image once, shrinks it so its
longest side is at most ``max_side`` (the model's input size: training never needs more), and
serves the same items as :class:`~detforge.data.torch.loader.SampleDataset`. It is built before
the DataLoader forks its workers, which then share the pixels. Whether a set fits is decided
from image headers before anything is decoded (:func:`fits`), so large sets keep streaming
with flat memory.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from torch.utils.data import Dataset as TorchDataset

from detforge.data.dataset import Dataset
from detforge.data.torch.loader import SampleDataset, _item
from detforge.errors import ImageError

BUDGET = 384 * 2**20  # bytes of decoded pixels a training run may hold


def _scale(w: int, h: int, max_side: int) -> float:
    return min(1.0, max_side / max(w, h, 1))


def cached_bytes(ds: Dataset, max_side: int) -> int:
    """Bytes the decoded, shrunk images of ``ds`` would take (from the sizes it already
    knows)."""
    total = 0
    for s in ds.samples:
        k = _scale(s.width, s.height, max_side)
        total += int(s.width * k + 1) * int(s.height * k + 1) * 3
    return total


def fits(ds: Dataset, max_side: int, budget: int = BUDGET) -> bool:
    return cached_bytes(ds, max_side) <= budget


class DecodedSamples(TorchDataset):
    """SampleDataset's items from images decoded once (in threads) and held shrunk."""

    def __init__(self, ds: Dataset, max_side: int, transform=None):
        self.ds, self.transform, self.classes = ds, transform, ds.classes
        self.max_side = max_side
        with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
            decoded = list(pool.map(self._decode, ds.samples))
        self.pixels = [d[0] for d in decoded]
        self.gains = [d[1] for d in decoded]
        self._fallback = SampleDataset(ds, transform)

    def _decode(self, s):
        try:
            pixels = s.load()
        except ImageError:
            return None, 1.0  # served by the loose path, which skips it with a warning
        h, w = pixels.shape[:2]
        k = _scale(w, h, self.max_side)
        if k < 1.0:
            size = (max(1, round(w * k)), max(1, round(h * k)))
            pixels = np.asarray(
                Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            )
            gain = (size[0] / w, size[1] / h)
        else:
            gain = (1.0, 1.0)
        pixels = np.ascontiguousarray(pixels)
        pixels.flags.writeable = False  # items get their own copy; the cache stays intact
        return pixels, gain

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        if self.pixels[i] is None:
            return self._fallback[i]
        s, (gx, gy) = self.ds.samples[i], self.gains[i]
        boxes = np.asarray(s.boxes, np.float32).reshape(-1, 4) * np.float32([gx, gy, gx, gy])
        item = _item(self.pixels[i], boxes, s.labels, s.iscrowd, i, s.category)
        return self.transform(*item) if self.transform else item
