"""Duplicate-box detection in `data check`: the sorted sweep vs the all-pairs IoU it replaced.

    python benchmarks/bench_check.py

Prints time and peak memory of both at a size the quadratic one can still do, and of the sweep
alone on one image with 330k boxes (the all-pairs matrix would need 811 GiB there).
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np

from detforge.boxes import iou
from detforge.data.check import duplicate_boxes


def boxes(n: int, side: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, side, (n, 2))
    b = np.hstack([xy, xy + rng.uniform(4, 50, (n, 2))]).astype(np.float32)
    k = rng.integers(0, n, n // 100)  # 1% near repeats
    b = np.vstack([b, b[k] + 0.05]).astype(np.float32)
    return b, np.zeros(len(b), np.int64)


def quadratic(b, labels, thr=0.95):
    m = np.triu(iou(b, b) * (labels[:, None] == labels[None, :]), 1)
    return [int(k) for k in np.flatnonzero((m >= thr).any(0))]


def measure(fn, *args):
    tracemalloc.start()
    t = time.perf_counter()
    out = fn(*args)
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, dt, peak


def main() -> None:
    b, lab = boxes(5000, 2000)
    q, tq, mq = measure(quadratic, b, lab)
    s, ts, ms = measure(duplicate_boxes, b, lab)
    assert q == s, "the sweep must find exactly what all pairs find"
    print(
        f"{len(b)} boxes: all pairs {tq:.2f} s, {mq:.0f} MiB | sweep {ts:.3f} s, {ms:.1f} MiB "
        f"| {tq / ts:.0f}x faster, {mq / ms:.0f}x less memory, same {len(s)} duplicates"
    )
    b, lab = boxes(330_000, 20_000)
    s, ts, ms = measure(duplicate_boxes, b, lab)
    print(
        f"{len(b)} boxes: sweep {ts:.2f} s, {ms:.0f} MiB, {len(s)} duplicates "
        f"(all pairs: {len(b) ** 2 * 8 / 2**30:.0f} GiB)"
    )


if __name__ == "__main__":
    main()
