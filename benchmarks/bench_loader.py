"""Shard loader vs loose-file loader: decoded samples/s over the same images, 2 workers.

python benchmarks/bench_loader.py [--copies 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import time

from detforge.data.shards import pack
from detforge.data.torch.loader import make_loader

from _common import dataset, scratch


def rate(loader) -> tuple[float, int]:
    n = 0
    t = time.perf_counter()
    for images, _ in loader:
        n += len(images)
    return n / (time.perf_counter() - t), n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    ds, what = dataset()
    tmp = scratch("detforge-loader-")
    pack(ds, tmp / "shards", shard_size="2MB", progress=False)
    print(f"dataset: {what}; {args.workers} workers, batch {args.batch}")
    files = shards = 0.0
    for _ in range(args.repeat):  # alternate so both see the same machine state
        f, n1 = rate(make_loader(ds, batch_size=args.batch, workers=args.workers))
        s, n2 = rate(make_loader(tmp / "shards", batch_size=args.batch, workers=args.workers))
        assert n1 == n2 == len(ds)
        files, shards = max(files, f), max(shards, s)
    print(f"loose files: {files:7.1f} decoded samples/s")
    print(f"shards     : {shards:7.1f} decoded samples/s  ({shards / files:.2f}x loose files)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
