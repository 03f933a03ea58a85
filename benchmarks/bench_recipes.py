"""Do detforge's default recipes learn as well as a plain PyTorch loop on the same model?

Two checks, each side measured in this run on this machine:

* classify: resnet18 from scratch on generated textures (``detforge.data.synth.texture``:
  stripes, checks, dots at a period of 6-16 px, two random colours, noise sigma 20, 96 px;
  60 a class, 20 a class held out), 20 epochs, two seeds. detforge with its defaults trains on
  the 180 (holding out its own 20% to pick the best epoch); the plain loop (AdamW 1e-3, weight
  decay 0.05, one-cycle with 20% warm-up, horizontal flips, batch 16) on the same 144; both
  scored on the 60 held-out images.
* detect: ssdlite from scratch on the raccoon split (train.txt / val.txt) for the same wall
  clock budget; val mAP50-95. ``detforge train --model ssdlite --time M`` with its defaults vs
  a plain loop (AdamW 1e-3, warmup + cosine over the budget, photometric jitter, random IoU
  crop, flips, batch 8, 2 loader workers).

    python benchmarks/bench_recipes.py [--part classify|detect|both] [--seeds 0,1] [--minutes 14]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from detforge.data.synth import TEXTURES, texture_folders

from _common import scratch


def _tensors(paths: list[Path], classes: list[str]):
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))) for p in paths])
    y = torch.tensor([classes.index(p.parent.name) for p in paths])
    return x.permute(0, 3, 1, 2).contiguous(), y


def plain_classifier(train: list[Path], test: list[Path], epochs: int, seed: int) -> float:
    """The plain loop the issue names (AdamW 1e-3, weight decay 0.05, one-cycle with 20%
    warm-up, horizontal flips, batch 16, nothing else); top-1 on ``test`` after the last
    epoch."""
    torch.manual_seed(seed)
    xs, ys = _tensors(train, list(TEXTURES))
    xt, yt = _tensors(test, list(TEXTURES))
    norm = v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    flip = v2.RandomHorizontalFlip()
    net = torchvision.models.resnet18(num_classes=len(TEXTURES))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    steps = math.ceil(len(xs) / 16)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, 1e-3, total_steps=epochs * steps, pct_start=0.2
    )
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(xs)).split(16):
            x = torch.stack([flip(im) for im in xs[idx]])
            loss = torch.nn.functional.cross_entropy(net(norm(x.float() / 255)), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        return float(net(norm(xt.float() / 255)).argmax(1).eq(yt).float().mean())


def last_row(run_dir: str) -> dict:
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))[-1]


def classify(tmp: Path, epochs: int, seeds: list[int]) -> list[dict]:
    """Both sides on one texture set a seed: detforge trains on the 180 images with its
    defaults (holding out its own 20% to pick the best epoch), the plain loop on the same 144
    images; both scored on the 60 held-out ones."""
    import detforge
    from detforge.api import train
    from detforge.data import read
    from detforge.data.split import split

    rows = []
    for seed in seeds:
        root = texture_folders(tmp / f"textures{seed}", seed=seed)
        parts = split(read(root / "train"), (0.8, 0.2), seed=seed)  # what detforge holds out
        train_paths = [Path(s.path) for s in parts["train"].samples]
        test = sorted((root / "test").rglob("*.png"))
        t0 = time.time()
        plain = plain_classifier(train_paths, test, epochs, seed)
        t_plain = time.time() - t0
        t0 = time.time()
        r = train(
            data=str(root / "train"),
            model="resnet18",
            imgsz=96,
            epochs=epochs,
            seed=seed,
            project=str(tmp / "runs"),
            name=f"cls{seed}",
        )
        t_ours = time.time() - t0
        m = detforge.evaluate(
            Path(r["run_dir"]) / "weights" / "best.pt", root / "test", project=str(tmp / "runs")
        )
        rows.append(
            {
                "seed": seed,
                "plain_top1": plain,
                "detforge_top1": m["top1"],
                "detforge_val_best": r["best"],
                "plain_s": t_plain,
                "detforge_s": t_ours,
                "train_images": len(train_paths),
                "test_images": len(test),
            }
        )
        print(
            f"seed {seed}: detforge {m['top1']:.3f} (val best {r['best']:.3f}, {t_ours:.0f} s)"
            f"  plain {plain:.3f} ({t_plain:.0f} s)",
            flush=True,
        )
    return rows


class RaccoonBoxes(Dataset):
    def __init__(self, ds, transform):
        self.ds, self.transform = ds, transform

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        s = self.ds.samples[i]
        img = tv_tensors.Image(
            torchvision.io.decode_image(str(s.path), mode=torchvision.io.ImageReadMode.RGB)
        )
        boxes = tv_tensors.BoundingBoxes(
            torch.as_tensor(s.boxes, dtype=torch.float32), format="XYXY", canvas_size=img.shape[-2:]
        )
        img, tgt = self.transform(img, {"boxes": boxes, "labels": torch.as_tensor(s.labels) + 1})
        return img.float() / 255, tgt


def plain_detector(train_ds, val_ds, minutes: float) -> float:
    """The plain torchvision recipe the issue names, for ``minutes`` of wall clock."""
    from detforge.engine.evaluate.detection import coco_dt, coco_gt, coco_metrics

    tf = v2.Compose(
        [
            v2.ColorJitter(0.3, 0.3, 0.3, 0.03),
            v2.RandomIoUCrop(),
            v2.RandomHorizontalFlip(),
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(),
        ]
    )
    dl = DataLoader(
        RaccoonBoxes(train_ds, tf),
        batch_size=8,
        shuffle=True,
        num_workers=2,
        collate_fn=lambda b: tuple(zip(*b)),
        drop_last=True,
        persistent_workers=True,
    )
    net = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=len(train_ds.classes) + 1
    )
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    budget, start, warm, step = minutes * 60, time.time(), 100, 0
    done = False
    while not done:
        net.train()
        for x, y in dl:
            spent = (time.time() - start) / budget
            if spent >= 0.97:  # leave time to evaluate, like detforge's budget does
                done = True
                break
            f = (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * spent))
            for g in opt.param_groups:
                g["lr"] = 1e-3 * max(f, 0.01)
            loss = sum(net(list(x), list(y)).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    net.eval()
    preds = []
    with torch.no_grad():
        for s in val_ds.samples:
            img = torchvision.io.decode_image(str(s.path), mode=torchvision.io.ImageReadMode.RGB)
            out = net([img.float() / 255])[0]
            preds.append(
                {"boxes": out["boxes"], "scores": out["scores"], "labels": out["labels"] - 1}
            )
    return coco_metrics(coco_gt(val_ds), coco_dt(preds))["mAP50-95"]


def detect(tmp: Path, minutes: float) -> dict:
    from detforge.api import train
    from detforge.data import read
    from raccoon_table import splits

    data = splits(tmp / "raccoon")
    train_ds, val_ds = read(tmp / "raccoon" / "train"), read(tmp / "raccoon" / "val")
    torch.manual_seed(0)
    plain = plain_detector(train_ds, val_ds, minutes)
    r = train(data=str(data), model="ssdlite", time=minutes, project=str(tmp / "runs"), name="det")
    ours = float(last_row(r["run_dir"])["mAP50-95"])
    return {
        "plain_mAP50-95": plain,
        "detforge_mAP50-95": ours,
        "detforge_best": r["best"],
        "detforge_epochs": r["epochs"],
        "minutes": minutes,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="both", choices=("classify", "detect", "both"))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--minutes", type=float, default=14.0)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tmp = scratch("detforge-recipes-")
    out = {}
    if args.part in ("classify", "both"):
        seeds = [int(x) for x in args.seeds.split(",")]
        out["classify"] = c = classify(tmp, args.epochs, seeds)
        ours = np.mean([r["detforge_top1"] for r in c])
        plain = np.mean([r["plain_top1"] for r in c])
        print(
            f"classify resnet18 textures {args.epochs} epochs, seeds {args.seeds}: held-out "
            f"top-1 detforge {ours:.3f}  plain {plain:.3f}  difference {ours - plain:+.3f}"
        )
    if args.part in ("detect", "both"):
        out["detect"] = d = detect(tmp, args.minutes)
        print(
            f"detect ssdlite {args.minutes:g} min: detforge mAP50-95 "
            f"{d['detforge_mAP50-95']:.3f} ({d['detforge_epochs']} epochs)  plain "
            f"{d['plain_mAP50-95']:.3f}  ratio "
            f"{d['detforge_mAP50-95'] / max(d['plain_mAP50-95'], 1e-9):.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
