"""Each model trained from scratch on the raccoon set (train.txt / val.txt) for the same CPU
time budget: epochs reached, val mAP50 and mAP50-95. Writes a Markdown table.

    python benchmarks/raccoon_table.py [--minutes 3] [--models ssdlite,localizer,...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from detforge.data import read, write
from detforge.engine.train.loop import train
from detforge.models import names

from _common import RACCOON, scratch


def splits(folder: Path) -> Path:
    ds = read(RACCOON)
    by_stem = {Path(s.name).stem: i for i, s in enumerate(ds)}
    for name in ("train", "val"):
        stems = (RACCOON / f"{name}.txt").read_text().split()
        write(ds.subset([by_stem[s] for s in stems]), folder / name, "yolo", images="link")
    (folder / "data.yaml").write_text("train: train\nval: val\nnames: [raccoon]\n")
    return folder / "data.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--models", default=",".join(names()))
    ap.add_argument("--imgsz", type=int, default=320)
    args = ap.parse_args()
    torch.set_num_threads(2)
    tmp = scratch("detforge-raccoon-")
    data = splits(tmp / "data")
    lines = ["| model | epochs in budget | val mAP50 | val mAP50-95 |", "|---|---|---|---|"]
    for name in args.models.split(","):
        opts = {"largest": True} if name == "localizer" else {}
        r = train(
            data=str(data),
            model=name,
            epochs=200,
            imgsz=args.imgsz,
            batch=8,
            workers=2,
            time=args.minutes,
            project=str(tmp / "runs"),
            name=name,
            model_options=opts,
            lr=1e-3,
            pretrained="none",  # every model from scratch (det-n's recipe would start pretrained)
        )
        import csv

        with open(Path(r["run_dir"]) / "metrics.csv", newline="") as f:
            best = max(csv.DictReader(f), key=lambda row: float(row["mAP50-95"]))
        lines.append(
            f"| {name} | {r['epochs']} | {float(best['mAP50']):.3f} | "
            f"{float(best['mAP50-95']):.3f} |"
        )
        print("\n".join(lines), flush=True)
    print(
        f"\n{args.minutes} min per model (wall clock, validation included), "
        f"imgsz {args.imgsz}, batch 8, AdamW lr 1e-3, from scratch"
    )


if __name__ == "__main__":
    main()
