"""Training augmentation settings (torch-free, so configs load without torch); the
transforms that apply them live in :mod:`detforge.data.torch.augment`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AugmentConfig:
    hflip: float = 0.5  # probability of a horizontal flip
    vflip: float = 0.0  # probability of a vertical flip (aerial or microscope images)
    scale_jitter: tuple[float, float] = (0.75, 1.25)  # random rescale range (1, 1 = off)
    iou_crop: float = 0.0  # probability of an SSD-style IoU crop
    color: float = 0.2  # brightness/contrast/saturation jitter strength (0 = off)
    hue: float = 0.02  # hue jitter
    mosaic: float = 0.0  # probability of a 4-image mosaic (needs the whole dataset: Mosaic)
    close_mosaic: float = 0.15  # share of the run (epochs or --time) at the end without mosaic
    crop_scale: tuple[float, float] = (0.5, 1.0)  # classifiers: random crop's share of the area
