"""Box-aware training augmentation with torchvision.transforms.v2.

``Augment(cfg)`` is a callable ``(image uint8 (3, H, W), target) -> (image,
target)`` for :class:`~detforge.data.torch.loader.SampleDataset`. ``SanitizeBoundingBoxes`` runs
last, so no degenerate box reaches a loss; negatives pass through untouched.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from detforge.data.augmentation import AugmentConfig
from detforge.data.torch import cache as decoded
from detforge.data.torch.loader import SampleDataset, SceneStream
from detforge.data.viz import show_dataset


class Augment:
    """The v2 pipeline around our (image, target) tuples."""

    def __init__(self, cfg: AugmentConfig | None = None):
        cfg = cfg or AugmentConfig()
        ops: list = []
        if cfg.color > 0 or cfg.hue > 0:
            ops.append(v2.ColorJitter(cfg.color, cfg.color, cfg.color, cfg.hue))
        if cfg.iou_crop > 0:
            ops.append(v2.RandomApply([v2.RandomIoUCrop()], p=cfg.iou_crop))
        lo, hi = cfg.scale_jitter
        if (lo, hi) != (1.0, 1.0):
            ops.append(v2.RandomAffine(degrees=0, scale=(lo, hi)))
        if cfg.hflip > 0:
            ops.append(v2.RandomHorizontalFlip(cfg.hflip))
        if cfg.vflip > 0:
            ops.append(v2.RandomVerticalFlip(cfg.vflip))
        ops.append(v2.ClampBoundingBoxes())
        ops.append(v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=_labels))
        self.pipeline = v2.Compose(ops)

    def __call__(self, image: torch.Tensor, target: dict):
        h, w = image.shape[-2:]
        img = tv_tensors.Image(image)
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
        img, boxes, labels, crowd = self.pipeline(img, boxes, target["labels"], target["iscrowd"])
        out = dict(target)
        out.update(boxes=boxes.as_subclass(torch.Tensor).float(), labels=labels, iscrowd=crowd)
        return img.as_subclass(torch.Tensor), out


def _labels(inputs):
    """Tell SanitizeBoundingBoxes which tensors run parallel to the boxes (labels, iscrowd)."""
    flat = inputs[0] if len(inputs) == 1 else inputs
    return tuple(x for x in flat[2:] if isinstance(x, torch.Tensor))


class Mosaic(Dataset):
    """With probability ``p``, four samples tiled around a random center into one
    ``size`` x ``size`` image (each scaled to cover its quadrant, then cropped); boxes follow
    and are clipped, and those left under 2 px are dropped. Otherwise the sample as it is.
    Randomness comes from torch's RNG, so DataLoader worker seeding keeps it reproducible."""

    def __init__(self, base, p: float, size: int, transform=None):
        self.base, self.p, self.size, self.transform = base, p, size, transform

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __getitem__(self, i: int):
        if self.p <= 0 or float(torch.rand(())) >= self.p:
            item = self.base[i]
        else:
            others = torch.randint(len(self.base), (3,)).tolist()
            item = self._mosaic([self.base[k] for k in [i, *others]], i)
        return self.transform(*item) if self.transform else item

    def _mosaic(self, items, i: int):
        s = self.size
        cx, cy = (int(v) for v in (torch.rand(2) * s * 0.5 + s * 0.25))
        canvas = torch.full((3, s, s), 114, dtype=torch.uint8)
        quads = [(0, 0, cx, cy), (cx, 0, s, cy), (0, cy, cx, s), (cx, cy, s, s)]
        boxes, labels, crowd = [], [], []
        for (img, t), (x0, y0, x1, y1) in zip(items, quads):
            qw, qh = x1 - x0, y1 - y0
            if qw < 2 or qh < 2:
                continue
            h, w = img.shape[-2:]
            scale = max(qw / w, qh / h)  # cover the quadrant
            nw, nh = max(qw, round(w * scale)), max(qh, round(h * scale))
            img = v2.functional.resize(img, [nh, nw], antialias=True)
            ox, oy = (nw - qw) // 2, (nh - qh) // 2  # centered crop
            canvas[:, y0:y1, x0:x1] = img[:, oy : oy + qh, ox : ox + qw]
            b = t["boxes"] * scale - torch.tensor([ox, oy, ox, oy]) + torch.tensor([x0, y0, x0, y0])
            b[:, 0::2] = b[:, 0::2].clamp(x0, x1)
            b[:, 1::2] = b[:, 1::2].clamp(y0, y1)
            keep = ((b[:, 2] - b[:, 0]) >= 2) & ((b[:, 3] - b[:, 1]) >= 2)
            boxes.append(b[keep])
            labels.append(t["labels"][keep])
            crowd.append(t["iscrowd"][keep])
        target = {
            "boxes": torch.cat(boxes).float(),
            "labels": torch.cat(labels),
            "iscrowd": torch.cat(crowd),
            "image_id": i,
        }
        return canvas, target


def training_view(ds, cfg: AugmentConfig | None = None, imgsz: int = 320, cache: bool = False):
    """The torch dataset training sees: samples decoded, shrunk to what ``imgsz`` needs with
    the resize serving uses (:func:`detforge.data.resize.shrink`), mosaicked (by
    ``cfg.mosaic``) and augmented. ``detforge data
    show --augment`` draws exactly this. ``cache``: hold the decoded images in memory when they
    fit the budget of :mod:`detforge.data.torch.cache`."""
    cfg = cfg or AugmentConfig()
    side = imgsz * 3 // 2 if ds.task == "classify" else imgsz  # crops need the margin

    def source(transform=None):
        if hasattr(ds, "scenes"):  # --data formula: rendered as trained on
            return SceneStream(ds, transform)
        if cache and decoded.fits(ds, side):
            return decoded.DecodedSamples(ds, side, transform)
        return SampleDataset(ds, transform, side)

    if ds.task == "classify":
        return source(ClassifyAugment(imgsz, cfg))
    if cfg.mosaic > 0:
        return Mosaic(source(), cfg.mosaic, imgsz, Augment(cfg))
    return source(Augment(cfg))


class ClassifyAugment:
    """Training view of a classification image: random resized crop to ``imgsz`` (any input
    size works: every image leaves here at imgsz x imgsz), horizontal flip, colour jitter."""

    def __init__(self, imgsz: int, cfg: AugmentConfig | None = None):
        cfg = cfg or AugmentConfig()
        lo, hi = cfg.crop_scale
        if lo < 1:
            ops: list = [v2.RandomResizedCrop(imgsz, scale=(lo, hi), antialias=True)]
        else:  # the whole image, at the size and scale eval sees it
            ops = [v2.Resize((imgsz, imgsz), antialias=True)]
        if cfg.hflip > 0:
            ops.append(v2.RandomHorizontalFlip(cfg.hflip))
        if cfg.vflip > 0:
            ops.append(v2.RandomVerticalFlip(cfg.vflip))
        if cfg.color > 0 or cfg.hue > 0:
            ops.append(v2.ColorJitter(cfg.color, cfg.color, cfg.color, cfg.hue))
        self.pipeline = v2.Compose(ops)

    def __call__(self, image: torch.Tensor, target: dict):
        return self.pipeline(image), target


def show_training_view(ds, out, augment, imgsz: int, *, n: int = 16, seed: int = 0, cols=4):
    """:func:`~detforge.data.viz.show_dataset` of :func:`training_view`: ``augment`` is True,
    an AugmentConfig or a dict of its fields. The draws are seeded by ``seed``; the caller's
    torch RNG is left as it was."""
    cfg = augment if isinstance(augment, AugmentConfig) else None
    if isinstance(augment, dict):
        cfg = AugmentConfig(**augment)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        view = training_view(ds, cfg, imgsz)
        return show_dataset(ds, out, n=n, seed=seed, cols=cols, view=view)
