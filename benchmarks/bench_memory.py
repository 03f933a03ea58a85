"""Peak RSS, small vs large synthetic datasets, each measurement in a fresh process.

    python benchmarks/bench_memory.py [--small 1000] [--large 20000]
    python benchmarks/bench_memory.py --task classify [--small 2000] [--large 40000]

detect: pack, then a full pass of the shard loader, over 1k vs 20k detection images.
classify: pack class folders, then one full training epoch (resnet18, 32 px, validation
included) streamed from the shards, over 2k vs 40k images.

Goal: flat in dataset size (large <= 1.2x small). Peak RSS is the process's (and its worker
processes') high-water mark. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import scratch

CHILD = r"""
import json, resource, sys
from pathlib import Path
what, src, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if what == "train":
    from detforge.engine.train.loop import train
    r = train(data=str(out), model="resnet18", epochs=1, imgsz=32, batch=64, workers=2, lr=1e-3,
              val_split=0.05, precise_bn=0, project=str(out.parent / "runs"), name=out.name)
    n = r["epochs"]
elif what == "pack":
    from detforge.data import read
    from detforge.data.shards import pack
    pack(read(src), out, shard_size="2MB", workers=2, progress=False)
    n = None
else:
    from detforge.data.torch.loader import make_loader
    n = sum(len(images) for images, _ in make_loader(out, batch_size=16, workers=2))
# VmHWM: this process image's own peak (ru_maxrss would include the parent's size at fork)
status = Path("/proc/self/status").read_text()
self_kb = int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM")))
kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"self_mb": self_kb / 1024, "workers_mb": kids_kb / 1024, "n": n}))
"""


def measure(what: str, src: Path, out: Path) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, what, str(src), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def _data(task: str, tmp: Path, n: int, size: int) -> Path:
    """``n`` synthetic images on disk: YOLO detection files, or class folders."""
    from detforge.data import write
    from detforge.data.synth import classify_folders, generate

    if task == "classify":
        classify_folders(tmp / f"folders{n}", n, size=(size, size), sizes=True)
        return tmp / f"folders{n}"
    ds = generate(tmp / f"img{n}", n, size=(size, size))
    return write(ds, tmp / f"yolo{n}", "yolo", images="link")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=("detect", "classify"), default="detect")
    ap.add_argument("--small", type=int, default=None, help="default 1000 (classify: 2000)")
    ap.add_argument("--large", type=int, default=None, help="default 20000 (classify: 40000)")
    ap.add_argument("--size", type=int, default=None, help="default 160 (classify: 40)")
    args = ap.parse_args()
    classify = args.task == "classify"
    small = args.small or (2000 if classify else 1000)
    large = args.large or (40000 if classify else 20000)
    size = args.size or (40 if classify else 160)
    jobs = ("pack", "train") if classify else ("pack", "loader")
    tmp = scratch("detforge-mem-")
    results = {}
    for n in (small, large):
        t = time.perf_counter()
        src = _data(args.task, tmp, n, size)
        print(f"generated {n} images in {time.perf_counter() - t:.0f} s", flush=True)
        results[n] = {}
        for job in jobs:
            t = time.perf_counter()
            results[n][job] = measure(job, src, tmp / f"shards{n}")
            print(f"  {job} in {time.perf_counter() - t:.0f} s", flush=True)
        if not classify:
            assert results[n]["loader"]["n"] == n
    for job in jobs:
        for part in ("self_mb", "workers_mb"):
            a, b = results[small][job][part], results[large][job][part]
            if not a or not b:  # no worker processes for the small set (one shard, in-process)
                continue
            print(
                f"{job:>6} {part:>10}: {small:6d} images {a:7.1f} MB | "
                f"{large:6d} images {b:7.1f} MB | ratio {b / a:.2f}x"
            )


if __name__ == "__main__":
    main()
