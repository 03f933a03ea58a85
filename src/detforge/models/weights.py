"""Pretrained weights through torchvision's weights API, with a clear offline error."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from detforge.errors import DetforgeError

PRETRAINED = ("none", "imagenet", "coco")


def check_pretrained(value: str) -> str:
    if value not in PRETRAINED:
        raise DetforgeError(f"unknown pretrained {value!r}", f"use one of {', '.join(PRETRAINED)}")
    return value


def ensure_downloaded(weights) -> None:
    """Make sure torchvision ``weights`` are in the torch hub cache, downloading them if needed;
    offline, say which file to put where."""
    if weights is None:
        return
    url = weights.url
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    target = folder / os.path.basename(url)
    if target.is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=True)
    except Exception as e:  # URLError, socket errors, HTTP errors
        raise DetforgeError(
            f"could not download pretrained weights {weights} ({e})",
            f"offline? download {url} elsewhere and place it at {target} "
            "(or set TORCH_HOME), or train with --pretrained none",
        ) from e
