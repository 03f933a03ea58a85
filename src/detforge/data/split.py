"""Seeded, stratified splits: no image in two splits, negatives spread proportionally."""

from __future__ import annotations

from collections import Counter

import numpy as np

from detforge.data.dataset import Dataset
from detforge.errors import DetforgeError

SPLIT_NAMES = ("train", "val", "test")


def parse_ratios(ratios) -> list[float]:
    if isinstance(ratios, str):
        try:
            ratios = [float(r) for r in ratios.split(",")]
        except ValueError as e:
            raise DetforgeError(
                f"invalid ratios {ratios!r}", "write them like 0.7,0.15,0.15"
            ) from e
    ratios = [float(r) for r in ratios]
    if not 2 <= len(ratios) <= 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise DetforgeError(
            f"ratios {ratios} must be 2 or 3 non-negative numbers summing to 1",
            "for example 0.7,0.15,0.15 or 0.8,0.2",
        )
    return ratios


def strata(ds: Dataset) -> list[str]:
    """One key per sample: its class (classification), its rarest class, or ``negative``."""
    if ds.task == "classify":
        return [str(s.category) for s in ds.samples]
    freq = Counter(int(c) for s in ds.samples for c in set(s.labels.tolist()))
    keys = []
    for s in ds.samples:
        present = set(s.labels.tolist())
        keys.append("negative" if not present else str(min(present, key=lambda c: (freq[c], c))))
    return keys


def split_indices(keys: list[str], ratios, seed: int = 0) -> list[list[int]]:
    """Indices per split: within each stratum, a seeded shuffle cut by largest remainder."""
    ratios = parse_ratios(ratios)
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    out: list[list[int]] = [[] for _ in ratios]
    carry = np.zeros(len(ratios))  # fractional shares left over by earlier strata
    for g, key in enumerate(sorted(groups)):
        idx = np.array(groups[key])
        np.random.default_rng([seed, g]).shuffle(idx)
        want = len(idx) * np.array(ratios) + carry
        counts = np.floor(want).astype(int)
        rest = len(idx) - counts.sum()
        for j in np.argsort(-(want - counts), kind="stable")[:rest]:
            counts[j] += 1
        carry = want - counts
        start = 0
        for j, c in enumerate(counts):
            out[j] += idx[start : start + c].tolist()
            start += c
    return [sorted(o) for o in out]


def split(ds: Dataset, ratios=(0.7, 0.15, 0.15), seed: int = 0) -> dict[str, Dataset]:
    """``{"train": ..., "val": ..., ["test": ...]}``, deterministic for a seed."""
    parts = split_indices(strata(ds), ratios, seed)
    return {name: ds.subset(idx) for name, idx in zip(SPLIT_NAMES, parts)}
