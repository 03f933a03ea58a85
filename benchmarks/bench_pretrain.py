"""Is det-n's shipped formula-pretrained start (`--pretrained synthetic`) worth it? Both sides
train det-n on the same data for the same wall-clock budget with the same seeds, one after the
other in this run: from scratch (`--pretrained none`) and from the shipped weights. Scored on
the set's val images (COCO mAP50-95 and mAP50 by detforge's evaluator), with the default
threshold each run stored.

Sets: ``raccoon`` (the shared data's train.txt / val.txt), ``few`` (a generated set of 50 train
and 100 val images: few labels, where pretraining should matter most), ``trees`` (a real set
unlike raccoon: NEON aerial images of Yellowstone forest with every tree crown boxed, as the
DeepForest package ships them; median crown 40 px, about 9 a tile. Train: 320 px tiles of one
2299x2472 image, 574 crowns; val: tiles of another, 1249x1035, 279 crowns. The wheel comes
from PyPI, ``pip download deepforest==2.1.0 --no-deps``, into the scratch folder unless
``--deepforest-wheel`` names one; nothing of it is stored in the project).

    python benchmarks/bench_pretrain.py [--sets raccoon,few,trees] [--budgets 3,5,14]
                                        [--seeds 0,1] [--sides none,synthetic]
                                        [--deepforest-wheel W] [--json out.json]
                                        [--keep DIR]

``--sides synthetic`` trains only the default start: a before/after figure for a change
elsewhere (run it on both checkouts).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from _common import scratch

SIDES = ("none", "synthetic")


def few_set(root: Path) -> Path:
    from detforge.data import write
    from detforge.data.synth import generate

    for split, n, seed in (("train", 50, 7), ("val", 100, 1007)):
        ds = generate(root / "render" / split, n, seed=seed, size=(320, 240))
        write(ds, root / split, "yolo")
    (root / "data.yaml").write_text("train: train\nval: val\n")
    return root / "data.yaml"


TREES = {
    "train": "2019_YELL_2_528000_4978000_image_crop2",
    "val": "2019_YELL_2_541000_4977000_image_crop",
}


def tile_starts(length: int, tile: int) -> list[int]:
    """Tile origins covering ``length``: a stride of ``tile``, the last tile flush with the end."""
    starts = list(range(0, max(length - tile, 0) + 1, tile))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def tiles(image, boxes, tile: int = 320, keep: float = 0.5):
    """(crop, yolo lines) for each tile; a box is kept, clipped, when at least ``keep`` of its
    area lies in the tile, else the tile would hold an unlabeled crown."""
    import numpy as np

    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for y in tile_starts(image.height, tile):
        for x in tile_starts(image.width, tile):
            b = boxes - np.array([x, y, x, y], np.float32)
            c = b.clip(0, tile)
            inside = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
            c = c[inside >= keep * area]
            cxcywh = np.stack([(c[:, 0] + c[:, 2]) / 2, (c[:, 1] + c[:, 3]) / 2,
                               c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]], 1) / tile  # fmt: skip
            lines = ["0 " + " ".join(f"{v:.6f}" for v in row) for row in cxcywh]
            yield (x, y), image.crop((x, y, x + tile, y + tile)), lines


def trees_set(root: Path, wheel: Path | None) -> Path:
    import zipfile

    from PIL import Image

    from detforge.data import read

    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "deepforest==2.1.0", "--no-deps",
                        "-q", "-d", str(root / "wheel")], check=True)  # fmt: skip
        wheel = next((root / "wheel").glob("deepforest-*.whl"))
    for split, stem in TREES.items():
        src = root / "source" / split
        src.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            for ext in (".png", ".xml"):
                (src / (stem + ext)).write_bytes(z.read(f"deepforest/data/{stem}{ext}"))
        (sample,) = read(src, "voc").samples
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        with Image.open(src / (stem + ".png")) as im:
            for (x, y), crop, lines in tiles(im.convert("RGB"), sample.boxes):
                name = f"{stem}_{x}_{y}"
                crop.save(root / split / "images" / f"{name}.png")
                (root / split / "labels" / f"{name}.txt").write_text(
                    "".join(f"{t}\n" for t in lines)
                )
    (root / "data.yaml").write_text("train: train\nval: val\nnames: [tree]\n")
    return root / "data.yaml"


def data_set(name: str, root: Path, wheel: Path | None = None) -> Path:
    if name == "raccoon":
        from raccoon_table import splits

        return splits(root)
    if name == "few":
        return few_set(root)
    if name == "trees":
        return trees_set(root, wheel)
    raise SystemExit(f"unknown set {name!r}: use raccoon, few or trees")


def train_and_score(tmp: Path, data: Path, side: str, minutes: float, seed: int, keep=None):
    import detforge
    from detforge.engine.evaluate.detection import coco_dt, coco_gt, coco_metrics, detections
    from detforge.engine.jobs import eval_split

    name = f"{data.parent.name}-{side}-{minutes:g}-{seed}"
    subprocess.run(
        [sys.executable, "-m", "detforge", "train", "--data", str(data), "--model", "det-n",
         "--time", str(minutes), "--epochs", "1000", "--seed", str(seed), "--pretrained", side,
         "--project", str(tmp / "runs"), "--name", name],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    weights = tmp / "runs" / "train" / name / "weights" / "best.pt"
    if keep:  # the weights and the split, to score again later (the scratch folder goes)
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(weights, Path(keep) / f"{name}.pt")
        shutil.copytree(data.parent, Path(keep) / data.parent.name, dirs_exist_ok=True)
    det = detforge.load(weights, device="cpu")
    val, _ = eval_split(data, "val")
    m = coco_metrics(coco_gt(val), coco_dt(detections(det, val)))
    return {"mAP50-95": m["mAP50-95"], "mAP50": m["mAP50"], "conf": det.backend.default_conf}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="raccoon,few")
    ap.add_argument("--budgets", default="3,5,14", help="minutes, comma-separated")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--sides", default=",".join(SIDES), help="none, synthetic or both")
    ap.add_argument("--deepforest-wheel", type=Path, help="for --sets trees (else from PyPI)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", type=Path, help="copy each run's best.pt and data here")
    args = ap.parse_args()
    tmp = scratch("detforge-pretrain-")
    rows = []
    for set_name in args.sets.split(","):
        data = data_set(set_name, tmp / set_name, args.deepforest_wheel)
        for minutes in (float(b) for b in args.budgets.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                for side in args.sides.split(","):  # back to back: the same machine state
                    r = train_and_score(tmp, data, side, minutes, seed, args.keep)
                    rows.append({"set": set_name, "minutes": minutes, "seed": seed,
                                 "pretrained": side, **r})  # fmt: skip
                    print(json.dumps(rows[-1]), flush=True)
    print(f"\n{platform.processor() or platform.machine()}, torch threads default")
    print(
        "| set | minutes | scratch mAP50-95 | synthetic mAP50-95 | gain | scratch mAP50 "
        "| synthetic mAP50 | gain |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for set_name in args.sets.split(","):
        for minutes in sorted({r["minutes"] for r in rows if r["set"] == set_name}):
            mean = {}
            if set(args.sides.split(",")) != set(SIDES):
                continue
            for side in SIDES:
                got = [r for r in rows if (r["set"], r["minutes"], r["pretrained"])
                       == (set_name, minutes, side)]  # fmt: skip
                mean[side] = {k: sum(r[k] for r in got) / len(got) for k in ("mAP50-95", "mAP50")}
            a, b = mean["none"], mean["synthetic"]
            print(f"| {set_name} | {minutes:g} | {a['mAP50-95']:.3f} | {b['mAP50-95']:.3f} | "
                  f"{b['mAP50-95'] - a['mAP50-95']:+.3f} | {a['mAP50']:.3f} | {b['mAP50']:.3f} | "
                  f"{b['mAP50'] - a['mAP50']:+.3f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
