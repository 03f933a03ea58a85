"""Box-aware training augmentation with torchvision.transforms.v2.

``build_transform(cfg)`` returns a callable ``(image uint8 (3, H, W), target) -> (image,
target)`` for :class:`~detforge.data.loader.DetectionDataset`. ``SanitizeBoundingBoxes`` runs
last, so no degenerate box reaches a loss; negatives pass through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


@dataclass
class AugmentConfig:
    hflip: float = 0.5  # probability of a horizontal flip
    vflip: float = 0.0  # probability of a vertical flip (aerial or microscope images)
    scale_jitter: tuple[float, float] = (0.75, 1.25)  # random rescale range (1, 1 = off)
    iou_crop: float = 0.0  # probability of an SSD-style IoU crop
    color: float = 0.2  # brightness/contrast/saturation jitter strength (0 = off)
    hue: float = 0.02  # hue jitter


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
