"""Peak RSS of pack and of a full shard-loader pass: 1k vs 20k synthetic images.

    python benchmarks/bench_memory.py [--small 1000] [--large 20000]

Goal: flat in dataset size (large <= 1.2x small). Each measurement runs in a fresh process;
peak RSS is that process's (and its worker processes') high-water mark. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys
from pathlib import Path
what, src, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if what == "pack":
    from detforge.data import read
    from detforge.data.shards import pack
    pack(read(src), out, shard_size="2MB", workers=2, progress=False)
    n = None
else:
    from detforge.data.loader import make_loader
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


def main() -> None:
    from detforge.data import write
    from detforge.data.synth import generate

    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=20000)
    ap.add_argument("--size", type=int, default=160)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="detforge-mem-"))
    results = {}
    for n in (args.small, args.large):
        t = time.perf_counter()
        src = write(
            generate(tmp / f"img{n}", n, size=(args.size, args.size)),
            tmp / f"yolo{n}",
            "yolo",
            images="link",
        )
        print(f"generated {n} images in {time.perf_counter() - t:.0f} s")
        results[n] = {
            "pack": measure("pack", src, tmp / f"shards{n}"),
            "loader": measure("loader", src, tmp / f"shards{n}"),
        }
        assert results[n]["loader"]["n"] == n
    for job in ("pack", "loader"):
        for part in ("self_mb", "workers_mb"):
            a, b = results[args.small][job][part], results[args.large][job][part]
            if not a or not b:  # no worker processes for the small set (one shard, in-process)
                continue
            print(
                f"{job:>6} {part:>10}: {args.small:6d} images {a:7.1f} MB | "
                f"{args.large:6d} images {b:7.1f} MB | ratio {b / a:.2f}x"
            )


if __name__ == "__main__":
    main()
