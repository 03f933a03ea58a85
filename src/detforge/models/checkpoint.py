"""Checkpoints: one file with the weights and everything that rebuilds the model (name,
classes, options), plus the detforge version, the resize mode, and whatever training adds
(best metric, data fingerprint, optimizer state). Read with ``weights_only=True``."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from detforge._version import __version__
from detforge.errors import DetforgeError
from detforge.fileio import atomic_write_bytes
from detforge.models.base import Model

CHECKPOINT_FORMAT = "detforge-checkpoint"


def save_checkpoint(path, model: Model, **extra) -> Path:
    """Write ``model`` (unwrapped from DDP) and ``extra`` (plain values and tensors) to
    ``path`` atomically."""
    model = getattr(model, "module", model)  # DDP wrapper
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "detforge": __version__,
        "model": model.spec(),
        "task": model.task,
        "resize": model.resize_mode,
        "state_dict": model.state_dict(),
        **extra,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as e:
        raise DetforgeError(f"{path}: checkpoint not found", "check the path") from e
    except Exception as e:  # unpickling errors come in many types
        raise DetforgeError(
            f"{path}: not a readable checkpoint ({e})", "pass a .pt file written by detforge"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DetforgeError(
            f"{path}: not a detforge checkpoint",
            "detforge reads the .pt files it writes (runs/train/NAME/weights)",
        )
    return ckpt


def load_checkpoint(path, map_location="cpu", **options) -> tuple[Model, dict]:
    """Rebuild the model saved in ``path`` (``options`` override saved ones, e.g. ``imgsz``);
    returns ``(model in eval mode, checkpoint dict)``."""
    from detforge.models.registry import build

    ckpt = read_checkpoint(path, map_location)
    spec = ckpt["model"]
    options = {**spec["options"], **{k: v for k, v in options.items() if v is not None}}
    model = build(spec["name"], spec["classes"], pretrained="none", **options)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt
