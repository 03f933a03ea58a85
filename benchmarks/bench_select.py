"""Is `data select` worth a labeler's time? On a generated set: train det-n on a small labeled
start, let it pick 100 of the unlabeled pool (`detforge.engine.select`), label those (their
ground truth is known here), retrain; against labeling 100 picked at random. Both sides
retrain from scratch for the same wall-clock budget and are scored on the same val images.

    python benchmarks/bench_select.py [--seeds 0,1] [--minutes 2] [--start 60] [--pool 500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from _common import scratch


def _train(tmp: Path, name: str, train_dir: Path, val_dir: Path, minutes: float, seed: int):
    yaml = tmp / f"{name}.yaml"
    yaml.write_text(f"train: {train_dir}\nval: {val_dir}\n")
    subprocess.run(
        [sys.executable, "-m", "detforge", "train", "--data", str(yaml), "--model", "det-n",
         "--time", str(minutes), "--seed", str(seed), "--project", str(tmp / "runs"),
         "--name", name],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return tmp / "runs" / "train" / name / "weights" / "best.pt"


def _subset(ds, indices, dst: Path):
    from detforge.data import write

    return write(ds.subset(indices), dst, "yolo")


def _score(weights: Path, val_ds) -> float:
    import detforge
    from detforge.engine.evaluate.detection import coco_dt, coco_gt, coco_metrics, detections

    det = detforge.load(weights, device="cpu")
    return coco_metrics(coco_gt(val_ds), coco_dt(detections(det, val_ds)))["mAP50-95"]


def one_seed(tmp: Path, seed: int, args) -> dict:
    import detforge
    from detforge.data import read
    from detforge.data.synth import generate
    from detforge.engine.select import pick, score_images

    gen = generate(tmp / "render", args.start + args.pool + 150, seed=100 + seed, size=(320, 240))
    order = np.random.default_rng(seed).permutation(len(gen))
    start, pool = order[: args.start], order[args.start : args.start + args.pool]
    val = order[args.start + args.pool :]
    val_dir = _subset(gen, val, tmp / f"val{seed}")
    start_dir = _subset(gen, start, tmp / f"start{seed}")
    m0 = _train(tmp, f"start{seed}", start_dir, val_dir, args.minutes, seed)
    det = detforge.load(m0, device="cpu")
    pool_paths = [str(gen.samples[i].path) for i in pool]
    scored = score_images(det, pool_paths)
    assert [s["source"] for s in scored] == pool_paths  # in order, every image read
    chosen = pool[pick(scored, args.n, seed)]
    rand = np.random.default_rng(1000 + seed).choice(pool, args.n, replace=False)
    val_ds = read(val_dir)
    out = {"start_mAP50-95": _score(m0, val_ds)}
    for side, picked in (("selected", chosen), ("random", rand)):
        d = _subset(gen, np.concatenate([start, np.asarray(picked)]), tmp / f"{side}{seed}")
        w = _train(tmp, f"{side}{seed}", d, val_dir, args.minutes, seed)
        out[f"{side}_mAP50-95"] = _score(w, val_ds)
        out[f"{side}_boxes"] = int(sum(len(gen.samples[i].boxes) for i in picked))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--start", type=int, default=60)
    ap.add_argument("--pool", type=int, default=500)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    tmp = scratch("detforge-select-")
    rows = {}
    for seed in map(int, args.seeds.split(",")):
        rows[seed] = r = one_seed(tmp, seed, args)
        print(f"seed {seed}: start {r['start_mAP50-95']:.3f}  +{args.n} selected "
              f"{r['selected_mAP50-95']:.3f} ({r['selected_boxes']} boxes)  +{args.n} random "
              f"{r['random_mAP50-95']:.3f} ({r['random_boxes']} boxes)", flush=True)  # fmt: skip
    sel = np.mean([r["selected_mAP50-95"] for r in rows.values()])
    rnd = np.mean([r["random_mAP50-95"] for r in rows.values()])
    print(f"mean over seeds: selected {sel:.3f}  random {rnd:.3f}  difference {sel - rnd:+.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
