"""Decoded training images kept in memory, for sets small enough to hold.

Small datasets are read hundreds of times in a run, and decoding a photo costs more than a
small model's step on it. :class:`DecodedSamples` decodes each image once, shrinks it to what
input size ``max_side`` needs (:func:`~detforge.data.resize.held_size`: training never needs
more) with the resize serving uses, and serves the same items as
:class:`~detforge.data.torch.loader.SampleDataset`. It is built before the DataLoader forks its
workers, which then share the pixels. Whether a set fits is decided from image headers before
anything is decoded (:func:`fits`), so large sets keep streaming with flat memory.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from torch.utils.data import Dataset as TorchDataset

from detforge.data.dataset import Dataset
from detforge.data.resize import held_size, shrink
from detforge.data.torch.loader import SampleDataset, _item
from detforge.errors import ImageError

BUDGET = 384 * 2**20  # bytes of decoded pixels a training run may hold


def cached_bytes(ds: Dataset, max_side: int) -> int:
    """Bytes the decoded, shrunk images of ``ds`` would take (from the sizes it already
    knows)."""
    total = 0
    for s in ds.samples:
        w, h = held_size(s.width, s.height, max_side)
        total += w * h * 3
    return total


def available_memory() -> int | None:
    """Bytes of host memory available to a new allocation (Linux ``MemAvailable``), or None
    where the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def fits(ds: Dataset, max_side: int, budget: int = BUDGET) -> bool:
    """Whether the shrunk images fit ``budget`` and half of the memory available now (else
    training streams them from disk, at flat memory)."""
    free = available_memory()
    return cached_bytes(ds, max_side) <= min(budget, free // 2 if free else budget)


class DecodedSamples(TorchDataset):
    """SampleDataset's items from images decoded once (in threads) and held shrunk."""

    def __init__(self, ds: Dataset, max_side: int, transform=None):
        self.ds, self.transform, self.classes = ds, transform, ds.classes
        self.max_side = max_side
        with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
            decoded = list(pool.map(self._decode, ds.samples))
        self.pixels = [d[0] for d in decoded]
        self.gains = [d[1] for d in decoded]
        self._fallback = SampleDataset(ds, transform, max_side)

    def _decode(self, s):
        try:
            pixels = s.load()
        except ImageError:
            return None, 1.0  # served by the loose path, which skips it with a warning
        pixels, gain = shrink(pixels, self.max_side)
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
