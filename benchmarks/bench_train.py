"""Training throughput per model at 320 on this machine, with the loader's rate beside it.

    python benchmarks/bench_train.py [--imgsz 320] [--batch 8] [--steps 5]

Training images/s: forward + backward + optimizer step on batches from the real loader (raccoon,
augmented). Loader images/s: the same loader alone (decode + augment). The loader must not be
the bottleneck: its rate should be well above every model's.
"""

from __future__ import annotations

import argparse
import time

import torch

from detforge.data.torch.augment import training_view
from detforge.data.torch.loader import collate
from detforge.models import build, names

from _common import dataset


def loader_rate(ds, imgsz, batch, workers, n_batches) -> float:
    dl = torch.utils.data.DataLoader(
        training_view(ds, imgsz=imgsz), batch, shuffle=True, num_workers=workers, collate_fn=collate
    )
    it = iter(dl)
    next(it)  # worker start-up
    t, n = time.perf_counter(), 0
    for _ in range(n_batches):
        n += len(next(it)[0])
    return n / (time.perf_counter() - t)


def train_rate(name, ds, imgsz, batch, steps) -> float:
    model = (
        build(name, ds.classes, imgsz=imgsz, largest=True)
        if name == "localizer"
        else build(name, ds.classes, imgsz=imgsz)
    )
    model.train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    view = training_view(ds, imgsz=imgsz)
    batches = [
        collate([view[(k * batch + j) % len(ds)] for j in range(batch)]) for k in range(steps + 1)
    ]  # pre-decoded: this times the model alone

    def step(images, targets):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(*batches[0])  # warm-up
    t = time.perf_counter()
    for b in batches[1:]:
        step(*b)
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--models", default=",".join(names()))
    args = ap.parse_args()
    ds, what = dataset()
    torch.manual_seed(0)
    rate = loader_rate(ds, args.imgsz, args.batch, args.workers, 10)
    print(
        f"dataset: {what}; imgsz {args.imgsz}, batch {args.batch}, "
        f"{torch.get_num_threads()} torch threads"
    )
    print(f"loader ({args.workers} workers, decode + augment): {rate:7.1f} images/s")
    for name in args.models.split(","):
        r = train_rate(name, ds, args.imgsz, args.batch, args.steps)
        print(f"{name:>26}: {r:7.2f} training images/s  (loader {rate / r:6.1f}x faster)")


if __name__ == "__main__":
    main()
