"""The Detector contract, input checks, and checkpoints that rebuild their model alone.

A Detector takes a list of images, each a ``(3, H, W)`` tensor: uint8 RGB (0-255), or float
in [0, 1]. It resizes and normalizes them itself. In train mode, with targets (``boxes`` float
(N, 4) absolute xyxy, ``labels`` int64 (N,) 0-based class indices), it returns a dict of
losses; in eval mode a list of dicts per image: ``boxes`` (K, 4) xyxy in that image's pixels,
``scores`` (K,), ``labels`` (K,) 0-based.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from detforge.errors import DetforgeError
from detforge.fileio import atomic_write_bytes

CHECKPOINT_FORMAT = "detforge-checkpoint"


def to_float(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """uint8 (or [0, 1] float) CHW images -> float32 [0, 1], checked once at the boundary."""
    out = []
    for k, img in enumerate(images):
        if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] != 3:
            shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise DetforgeError(
                f"image {k}: expected a (3, H, W) tensor, got {shape}",
                "pass RGB images as uint8 tensors (3, H, W)",
            )
        if img.dtype == torch.uint8:
            out.append(img.float().div_(255.0))
        elif img.is_floating_point():
            out.append(img.float())
        else:
            raise DetforgeError(f"image {k}: expected uint8 or float, got {img.dtype}")
    return out


class Detector(nn.Module):
    """Base class: subclasses set ``name``, ``classes`` and ``options`` (all that rebuilds them)
    and implement ``forward(images, targets=None)``."""

    name: str = ""
    task = "detect"
    output_names = ("boxes", "scores", "labels", "batch_index")
    resize_mode = "stretch"  # how a predictor brings an image to the square input
    dynamic_batch = False  # whether detect() traces with a free batch dimension

    def __init__(self, classes: list[str], options: dict):
        super().__init__()
        self.classes = list(classes)
        self.options = dict(options)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def spec(self) -> dict:
        return {"name": self.name, "classes": self.classes, "options": self.options}

    def detect(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Eval on a uint8 batch (B, 3, S, S) -> flat ``boxes`` (N, 4), ``scores`` (N,),
        ``labels`` (N,) and ``batch_index`` (N,): one tensor each, as the ONNX graph returns
        them."""
        outs = self(list(x.unbind(0)))
        index = [torch.full_like(o["labels"], i) for i, o in enumerate(outs)]
        return (
            torch.cat([o["boxes"] for o in outs]),
            torch.cat([o["scores"] for o in outs]),
            torch.cat([o["labels"] for o in outs]),
            torch.cat(index),
        )


def save_checkpoint(path, model: Detector, **extra) -> Path:
    """One file with the weights and everything needed to rebuild the model (plus ``extra``:
    plain Python values and tensors, so ``torch.load(weights_only=True)`` reads it)."""
    import io

    model = getattr(model, "module", model)  # DDP wrapper
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "model": model.spec(),
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


def load_checkpoint(path, map_location="cpu", **options) -> tuple[Detector, dict]:
    """Rebuild the model saved in ``path`` (``options`` override saved ones, e.g. ``imgsz``);
    returns ``(model in eval mode, checkpoint dict)``."""
    from detforge.models import build

    ckpt = read_checkpoint(path, map_location)
    spec = ckpt["model"]
    options = {**spec["options"], **{k: v for k, v in options.items() if v is not None}}
    model = build(spec["name"], spec["classes"], pretrained="none", **options)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt
