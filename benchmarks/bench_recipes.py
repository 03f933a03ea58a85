"""Do detforge's default recipes learn as well as a plain PyTorch loop on the same model?

Two checks, each side measured in this run on this machine:

* classify: resnet18 from scratch, 180 generated texture images in three classes (96 px),
  6 epochs; top-1 on 90 held-out images. detforge with its defaults vs a plain loop
  (AdamW 1e-3, one-cycle, flips, batch 16).
* detect: ssdlite from scratch on the raccoon split (train.txt / val.txt) for the same wall
  clock budget; val mAP50-95. ``detforge train --model ssdlite --time M`` with its defaults vs
  a plain loop (AdamW 1e-3, warmup + cosine over the budget, photometric jitter, random IoU
  crop, flips, batch 8, 2 loader workers).

    python benchmarks/bench_recipes.py [--part classify|detect|both] [--minutes 14]
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

from _common import scratch

TEXTURES = ("stripes", "checker", "dots")


def texture(rng: np.random.Generator, kind: str, size: int = 96) -> Image.Image:
    """An easy texture: oriented stripes, a rotated checkerboard or scattered dots, in two
    random colours with pixel noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    a = rng.uniform(0, np.pi)
    u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
    period = rng.uniform(8, 20)
    if kind == "stripes":
        mask = np.sin(u * 2 * np.pi / period) > 0
    elif kind == "checker":
        mask = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    else:
        mask = np.zeros((size, size), bool)
        for _ in range(int(rng.integers(6, 14))):
            cx, cy, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(3, 8)
            mask |= (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    img = np.where(mask[..., None], c1, c0).astype(np.float32)
    img += rng.normal(0, 12, img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def texture_folders(root: Path, n_train: int = 180, n_val: int = 90, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            kind = TEXTURES[i % 3]
            (root / split / kind).mkdir(parents=True, exist_ok=True)
            texture(rng, kind).save(root / split / kind / f"{i:04d}.png")
    return root


def plain_classifier(root: Path, epochs: int) -> float:
    """The plain loop the issue names; top-1 on val after the last epoch."""
    norm = v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    aug = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()])
    train = torchvision.datasets.ImageFolder(root / "train", v2.Compose([v2.PILToTensor()]))
    val = torchvision.datasets.ImageFolder(root / "val", v2.Compose([v2.PILToTensor()]))
    net = torchvision.models.resnet18(num_classes=3)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    dl = DataLoader(train, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=epochs * len(dl))
    for _ in range(epochs):
        net.train()
        for x, y in dl:
            loss = torch.nn.functional.cross_entropy(net(norm(aug(x).float() / 255)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        hits = sum(
            int(net(norm(x.float() / 255)).argmax(1).eq(y).sum())
            for x, y in DataLoader(val, batch_size=64)
        )
    return hits / len(val)


def last_row(run_dir: str) -> dict:
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))[-1]


def classify(tmp: Path, epochs: int) -> dict:
    from detforge.api import train

    root = texture_folders(tmp / "textures")
    (root / "data.yaml").write_text("train: train\nval: val\n")
    torch.manual_seed(0)
    t0 = time.time()
    plain = plain_classifier(root, epochs)
    t_plain = time.time() - t0
    t0 = time.time()
    r = train(
        data=str(root / "data.yaml"),
        model="resnet18",
        imgsz=96,
        epochs=epochs,
        project=str(tmp / "runs"),
        name="cls",
    )
    ours = float(last_row(r["run_dir"])["top1"])
    return {
        "plain_top1": plain,
        "detforge_top1": ours,
        "plain_s": t_plain,
        "detforge_s": time.time() - t0,
        "epochs": epochs,
    }


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
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--minutes", type=float, default=14.0)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tmp = scratch("detforge-recipes-")
    out = {}
    if args.part in ("classify", "both"):
        out["classify"] = c = classify(tmp, args.epochs)
        print(
            f"classify resnet18 {args.epochs} epochs: detforge top-1 {c['detforge_top1']:.3f}"
            f"  plain {c['plain_top1']:.3f}  ratio {c['detforge_top1'] / c['plain_top1']:.2f}"
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
