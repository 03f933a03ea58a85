"""Pretrained weights through torchvision's weights API, with a clear offline error."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from detforge.errors import DetforgeError

PRETRAINED = ("none", "imagenet", "coco", "synthetic")


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


# --- weights shipped inside the package ------------------------------------------------------

SHIPPED_DIR = Path(__file__).parent / "shipped"
# model -> (file in SHIPPED_DIR, its SHA-256): pretrained on formula scenes only (no real
# image), Apache-2.0 like the code; how they were made: shipped/det-n-formula.md
SHIPPED = {
    "det-n": (
        "det-n-formula.pt",
        "63e79d34357fb03294a42d5a955ab84281021e385b8a6a4599575e98c0b7bc00",
    ),
}
# the class head is the user's; the step counter restarts so the warm start runs again
NOT_LOADED = ("head.cls.", "steps")


def shipped_file(name: str) -> tuple[Path, str]:
    if name not in SHIPPED:
        have = ", ".join(SHIPPED)
        raise DetforgeError(
            f"{name} has no synthetic pretrained weights (shipped for: {have})",
            "use --pretrained none, or pick --model " + have,
        )
    file, sha = SHIPPED[name]
    return SHIPPED_DIR / file, sha


def load_shipped(model: torch.nn.Module, name: str, path: Path | None = None) -> int:
    """Load the shipped weights of ``name`` into ``model`` (its SHA-256 checked first; the class
    head and the step counter left as built, so any class list fits); returns the number of
    tensors loaded. ``path`` reads another copy (checked against the same SHA-256)."""
    import hashlib
    import io

    default, sha = shipped_file(name)
    path = Path(path or default)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DetforgeError(
            f"{path}: cannot read the shipped weights ({e.strerror})",
            "reinstall detforge (pip install --force-reinstall detforge) or use --pretrained none",
        ) from e
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        raise DetforgeError(
            f"{path}: SHA-256 {got[:12]}... is not the shipped weights' {sha[:12]}... "
            "(a damaged or altered copy; not loaded)",
            "reinstall detforge (pip install --force-reinstall detforge) or use --pretrained none",
        )
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    own = model.state_dict()
    keep = {
        k: v.to(own[k].dtype)
        for k, v in state.items()
        if k in own and own[k].shape == v.shape and not k.startswith(NOT_LOADED)
    }
    model.load_state_dict(keep, strict=False)
    return len(keep)
