"""COCO evaluation time on 5,000 images: faster-coco-eval (our engine) vs pycocotools, on the
same ground truth and detections, with the numbers checked equal.

    python benchmarks/bench_eval.py [--images 5000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from detforge.engine.evaluate.detection import STAT_KEYS, coco_metrics


def synthetic(n: int, seed: int = 0):
    """GT (1-8 boxes, 5 classes, 10% negatives) and noisy detections with false positives."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, n + 1):
        images.append({"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"})
        k = 0 if rng.random() < 0.1 else int(rng.integers(1, 9))
        for _ in range(k):
            w, h = rng.uniform(10, 200, 2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            c = int(rng.integers(1, 6))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": c,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            jit = rng.normal(0, 0.08, 4) * [w, h, w, h]
            dets.append(
                {
                    "image_id": i,
                    "category_id": c if rng.random() < 0.9 else 1,
                    "bbox": list(np.array([x, y, w, h]) + jit),
                    "score": rng.random(),
                }
            )
        for _ in range(int(rng.integers(0, 4))):
            dets.append(
                {
                    "image_id": i,
                    "category_id": int(rng.integers(1, 6)),
                    "bbox": [*rng.uniform(0, 400, 2), *rng.uniform(10, 100, 2)],
                    "score": rng.random() * 0.5,
                }
            )
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, 6)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=5000)
    n = ap.parse_args().images
    gt, dets = synthetic(n)
    res, times = {}, {}
    for engine in ("pycocotools", "faster"):
        t = time.perf_counter()
        res[engine] = coco_metrics(gt, dets, engine)
        times[engine] = time.perf_counter() - t
    diff = max(abs(res["faster"][k] - res["pycocotools"][k]) for k in STAT_KEYS)
    print(f"{n} images, {len(gt['annotations'])} boxes, {len(dets)} detections, 5 classes")
    print(f"  pycocotools     {times['pycocotools']:6.2f} s")
    speed = times["pycocotools"] / times["faster"]
    print(f"  faster-coco-eval {times['faster']:6.2f} s  ({speed:.1f}x faster)")
    print(f"  mAP50-95 {res['faster']['mAP50-95']:.4f}; largest difference: {diff:.1e}")


if __name__ == "__main__":
    main()
