"""Batch inference on Ray Data against the plain Predictor, on this machine.

Both sides run the same ssdlite ONNX export (random init: no weights can be downloaded here,
and throughput does not depend on them) over the same folder of JPEGs, each in its own
process, one after the other:
- plain: ``detforge.load(onnx).stream(folder, batch=16)``, one process, timed from the load;
- ray: ``detforge.predict_dataset(onnx, folder, out, batch=16)``, a local Ray started by the
  call (its start and stop are timed apart), one actor with all the cores (its start and
  model load timed in), rows written as JSON lines.
Prints images/s of each and their ratio (goal >= 0.8x on one machine, where Ray can only add
overhead), and each side's peak memory (PSS of the process and all its children: for Ray
the raylet, GCS, workers and the object store's mapped pages).

    python benchmarks/bench_ray.py [--images 2000] [--imgsz 320]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import PeakRSS, scratch  # noqa: E402

PLAIN = """
import json, sys, time
import detforge
t = time.perf_counter()
det = detforge.load(sys.argv[1], device="cpu")
n = sum(1 for _ in det.stream(sys.argv[2], batch=16))
print(json.dumps({"images": n, "seconds": time.perf_counter() - t}))
"""

RAY = """
import json, sys, time
import detforge
t = time.perf_counter()
s = detforge.predict_dataset(sys.argv[1], sys.argv[2], sys.argv[3], batch=16, progress=False)
wall = time.perf_counter() - t
print(json.dumps({"images": s["images"], "seconds": s["seconds"], "wall": wall,
                  "actors": s["actors"], "threads": s["threads"]}))
"""


def images(folder: Path, n: int) -> Path:
    from detforge.data.synth import render

    folder.mkdir(parents=True)
    for k in range(n):
        rng = np.random.default_rng(k)
        w, h = int(rng.integers(480, 800)), int(rng.integers(360, 600))
        img, _, _ = render(rng, w, h, int(rng.integers(0, 5)))
        img.save(folder / f"im{k:05d}.jpg", quality=90)
    return folder


def measured(code: str, *args) -> tuple[dict, float]:
    p = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                         text=True)  # fmt: skip
    rss = PeakRSS(p.pid)
    stdout, _ = p.communicate()
    if p.returncode:
        raise SystemExit(f"a side failed (exit {p.returncode})")
    return json.loads(stdout.strip().splitlines()[-1]), rss.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--imgsz", type=int, default=320)
    a = ap.parse_args()
    import detforge

    from conftest import jittered_checkpoint

    tmp = scratch("detforge-bench-ray-")
    folder = images(tmp / "images", a.images)
    weights = jittered_checkpoint(tmp / "ssdlite.pt", "ssdlite", imgsz=a.imgsz)
    onnx = detforge.export(weights, tmp / "ssdlite.onnx", batch=16, check=False)["path"]
    plain, plain_mem = measured(PLAIN, onnx, folder)
    ray, ray_mem = measured(RAY, onnx, folder, tmp / "out")
    p_ips, r_ips = plain["images"] / plain["seconds"], ray["images"] / ray["seconds"]
    print(f"{a.images} JPEGs (480-800 px), ssdlite ONNX at {a.imgsz}, batch 16")
    print(f"plain Predictor: {p_ips:.1f} images/s, peak PSS {plain_mem:.2f} GiB")
    print(
        f"Ray Data ({ray['actors']} actor x {ray['threads']} threads): {r_ips:.1f} images/s "
        f"({ray['wall'] - ray['seconds']:.1f} s to start and stop Ray apart), peak PSS "
        f"{ray_mem:.2f} GiB"
    )
    print(f"ratio ray / plain: {r_ips / p_ips:.2f}x (goal >= 0.8x)")
    print(f"with Ray's start: {ray['images'] / ray['wall'] / p_ips:.2f}x")


if __name__ == "__main__":
    main()
