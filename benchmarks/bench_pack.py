"""Pack throughput vs a plain read of the same image files, measured in the same run.

    python benchmarks/bench_pack.py [--repeat 3]

Goal: pack >= 0.8x the throughput of reading the files. Printed for a warm page cache (both
CPU-bound) and a cold one (files evicted before each run: both read the disk).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from detforge.data.shards import pack

from _common import best_of, dataset, evict, scratch


def replicate(ds, what, copies: int, folder: Path):
    """``copies`` distinct copies of every image file (so a cold read really reads them all)."""
    from detforge.data.dataset import Dataset
    from detforge.data.image import FileImage

    folder.mkdir(parents=True)
    samples = []
    for k in range(copies):
        for s in ds:
            dst = folder / f"{k}_{s.name}"
            shutil.copyfile(s.path, dst)
            samples.append(s.replace(image=FileImage(dst)))
    return Dataset(ds.classes, samples, folder), f"{what} x{copies} copies"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--copies", type=int, default=10, help="copies of each image (distinct files)")
    args = ap.parse_args()
    tmp = scratch("detforge-pack-")
    ds, what = replicate(*dataset(), args.copies, tmp / "src")
    files = [s.path for s in ds]
    mb = sum(p.stat().st_size for p in files) / 1e6

    def read_all():
        for p in files:
            with open(p, "rb") as f:
                f.read()

    def do_pack(out):
        pack(ds, out, shard_size="8MB", workers=args.workers, progress=False)

    def clean(out, cold):
        shutil.rmtree(out, ignore_errors=True)
        if cold:
            evict(files)

    print(f"dataset: {what}, {len(files)} files, {mb:.1f} MB; pack workers={args.workers}")
    runs = [("warm cache", False, tmp / "out"), ("cold cache", True, tmp / "out")]
    if Path("/dev/shm").is_dir():  # cold reads, shards written to memory: the cost of writing
        runs.append(("cold, out on tmpfs", True, Path("/dev/shm") / tmp.name))
    for label, cold, out in runs:
        t_read = best_of(args.repeat, read_all, setup=(lambda: evict(files)) if cold else None)
        t_pack = best_of(
            args.repeat, lambda o=out: do_pack(o), setup=lambda o=out, c=cold: clean(o, c)
        )
        print(
            f"{label:>10}: read {len(files) / t_read:8.0f} img/s ({mb / t_read:7.1f} MB/s) | "
            f"pack {len(files) / t_pack:8.0f} img/s ({mb / t_pack:7.1f} MB/s) | "
            f"pack/read = {t_read / t_pack:.2f}x"
        )
        clean(out, False)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
