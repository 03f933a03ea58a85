"""Inference figures, each a ratio measured in this run:

1. video: end-to-end frames/s of `detforge predict` on a 1,500-frame video (decode + infer +
   draw + encode) vs inference alone on the same, already decoded frames (goal: <= 25%
   overhead);
2. load once vs load per call on 100 images (the classic mistake);
3. onnxruntime and OpenVINO vs PyTorch eager frames/s per exportable model at 320 and 640
   (OpenVINO when installed: pip install openvino).

    python benchmarks/bench_inference.py [--frames 1500] [--models ssdlite,retinanet]

Models are random-init with nudged weights (speed does not depend on training).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import detforge  # noqa: E402
from detforge.data.synth import video  # noqa: E402
from detforge.engine.export.onnx import NOT_EXPORTABLE  # noqa: E402
from detforge.engine.infer.inputs import Source  # noqa: E402
from detforge.models import names  # noqa: E402

from conftest import jittered_checkpoint  # noqa: E402


def bench_video(tmp: Path, n: int, model: str = "ssdlite") -> None:
    w = jittered_checkpoint(tmp / "v.pt", model, imgsz=320)
    det = detforge.load(w)
    src, _, _ = video(tmp / "in.mp4", frames=n, size=(640, 480), seed=0)
    decoded = [f.image for f in Source(str(src)).frames()]
    det.predict(decoded[:8], batch=4)  # warm up
    t = time.perf_counter()
    for i in range(0, n, 4):
        det.predict(decoded[i : i + 4], conf=0.3, batch=4)
    infer = n / (time.perf_counter() - t)
    out = tmp / "out"
    out.mkdir()
    s = detforge.predict(det, str(src), out=out, conf=0.3, batch=4, progress=False)
    e2e = s["frames"] / s["seconds"]
    print(f"video {n} frames 640x480, {model} at 320, batch 4, {torch.get_num_threads()} threads")
    print(f"  inference only (frames in memory): {infer:7.1f} frames/s")
    print(f"  end to end (decode+infer+draw+encode): {e2e:7.1f} frames/s")
    print(f"  overhead: {infer / e2e - 1:+.1%} (goal <= +25%)")


def bench_load(tmp: Path, n: int = 100) -> None:
    w = jittered_checkpoint(tmp / "l.pt", "ssdlite", imgsz=320)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (240, 320, 3), np.uint8) for _ in range(n)]
    t = time.perf_counter()
    det = detforge.load(w)
    for im in images:
        det.predict(im)
    once = time.perf_counter() - t
    t = time.perf_counter()
    for im in images:
        detforge.load(w).predict(im)
    per_call = time.perf_counter() - t
    print(f"{n} images, ssdlite 320: load once {once:.2f} s, load per image {per_call:.2f} s")
    print(f"  load per call is {per_call / once:.1f}x slower")


def _openvino(w: Path, name: str) -> str | None:
    """The model's OpenVINO IR, or None when OpenVINO is missing or the model cannot be one."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return None
    if name == "localizer":  # its graph has a dynamic batch; the IR export is fixed-batch
        return None
    return detforge.export(w, w.with_suffix(".xml"), format="openvino", check=False)["path"]


def bench_runtimes(tmp: Path, models: list[str], sizes=(320, 640), n: int = 12) -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (480, 640, 3), np.uint8) for _ in range(n)]
    print(f"onnxruntime and OpenVINO vs PyTorch eager, batch 1, {n} images 640x480, frames/s")
    print(
        f"  {'model':26s} {'size':>5s} {'torch':>8s} {'onnx':>8s} {'ratio':>7s} "
        f"{'openvino':>9s} {'ratio':>7s}"
    )
    for name in models:
        if name in NOT_EXPORTABLE:
            print(f"  {name:26s} not exportable: {NOT_EXPORTABLE[name][:60]}...")
            continue
        for size in (224,) if name in names("classify") else sizes:  # classifiers: ImageNet's size
            w = jittered_checkpoint(tmp / f"{name}{size}.pt", name, imgsz=size)
            onnx = detforge.export(w, check=False, dynamic_batch=name == "localizer")["path"]
            ir = _openvino(w, name)
            fps = []
            for path in (w, onnx, ir):
                if path is None:
                    fps.append(None)
                    continue
                det = detforge.load(path)
                det.predict(images[:2], batch=1)
                t = time.perf_counter()
                det.predict(images, batch=1)
                fps.append(n / (time.perf_counter() - t))
            ov = f"{fps[2]:9.1f} {fps[2] / fps[0]:6.2f}x" if fps[2] else f"{'-':>9s} {'':>7s}"
            print(
                f"  {name:26s} {size:5d} {fps[0]:8.1f} {fps[1]:8.1f} {fps[1] / fps[0]:6.2f}x {ov}"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--models", default=",".join(sorted(names())))
    ap.add_argument("--skip", default="", help="comma list of: video,load,runtimes")
    a = ap.parse_args()
    skip = set(a.skip.split(","))
    with tempfile.TemporaryDirectory(prefix="detforge-bench-") as d:
        tmp = Path(d)
        if "video" not in skip:
            bench_video(tmp, a.frames)
        if "load" not in skip:
            bench_load(tmp)
        if "runtimes" not in skip:
            bench_runtimes(tmp, a.models.split(","))


if __name__ == "__main__":
    main()
