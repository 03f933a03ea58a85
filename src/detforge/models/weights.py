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
    """Make sure torchvision ``weights`` are in the torch hub cache, downloading them if needed
    (verified against the SHA-256 prefix in the file name); offline, say which file to put
    where."""
    if weights is None:
        return
    url = weights.url
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    target = folder / os.path.basename(url)
    if target.is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    # torchvision names files <name>-<first hex digits of their SHA-256>.pth; the download is
    # checked against them before it is moved into the cache (as torchvision itself does)
    m = torch.hub.HASH_REGEX.search(os.path.basename(url))
    try:
        torch.hub.download_url_to_file(
            url, str(target), hash_prefix=m.group(1) if m else None, progress=True
        )
    except Exception as e:  # URLError, socket errors, HTTP errors, a wrong hash
        if "invalid hash" in str(e):
            raise DetforgeError(
                f"the download of {url} does not match its published SHA-256 (not saved)",
                "try again; if it persists, something is altering the download",
            ) from e
        raise DetforgeError(
            f"could not download pretrained weights {weights} ({e})",
            f"offline? download {url} elsewhere and place it at {target} "
            "(or set TORCH_HOME), or train with --pretrained none",
        ) from e
