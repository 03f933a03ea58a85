"""The model contract shared by detectors and classifiers, and the input check at its edge.

A :class:`Model` takes a list of images, each a ``(3, H, W)`` tensor: uint8 RGB (0-255), or
float in [0, 1]. It resizes and normalizes them itself. In train mode, with targets, it returns
a dict of losses. :meth:`Model.infer` is the one inference function: a uint8 batch
``(B, 3, S, S)`` at the model's input size in, flat output tensors out. The Predictor, the
training-time validation, ``detforge eval`` and the ONNX graph all call it.

Detectors (``task = "detect"``) take targets with ``boxes`` float (N, 4) absolute xyxy and
``labels`` int64 (N,) 0-based; ``infer`` returns ``boxes`` (N, 4) xyxy in input pixels,
``scores`` (N,), ``labels`` (N,) and ``batch_index`` (N,). Classifiers (``task = "classify"``)
take targets with ``category``; ``infer`` returns ``probs`` (B, K).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from detforge.errors import DetforgeError

MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, applied inside the models
STD = (0.229, 0.224, 0.225)


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


class Normalize(nn.Module):
    """[0, 1] float images -> ImageNet-normalized (the buffers are not saved: they are fixed)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


# The confidence a detector predicts with when it carries no measured threshold of its own
# (training measures one: the F1-best on validation, see detforge.engine.evaluate.threshold).
FALLBACK_CONF = 0.25


class Model(nn.Module):
    """Base class: subclasses set ``name``, ``classes`` and ``options`` (all that rebuilds them)
    and implement ``forward(images, targets=None)`` (training) and ``infer(x)``."""

    name: str = ""
    task: str = ""  # detect or classify: see detforge.engine.tasks
    output_names: tuple[str, ...] = ()
    resize_mode = "stretch"  # how the host brings an image to the square input
    dynamic_batch = False  # whether infer() traces with a free batch dimension

    def __init__(self, classes: list[str], options: dict):
        super().__init__()
        self.classes = list(classes)
        self.options = dict(options)
        # a detector's measured default confidence (set by validation; None: FALLBACK_CONF)
        self.default_conf: float | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def imgsz(self) -> int:
        return int(self.options["imgsz"])

    def spec(self) -> dict:
        spec = {"name": self.name, "classes": self.classes, "options": self.options}
        if self.default_conf is not None:
            spec["conf"] = float(self.default_conf)
        return spec

    def infer(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    @contextlib.contextmanager
    def nms_left_out(self):
        """Inside: ``infer`` skips its final NMS (for a graph whose user runs it). Models
        without an NMS of their own have nothing to leave out."""
        yield


class Detector(Model):
    """Boxes, scores and labels per image."""

    task = "detect"
    output_names = ("boxes", "scores", "labels", "batch_index")

    def infer(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
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


class Classifier(Model):
    """Class probabilities per image."""

    task = "classify"
    output_names = ("probs",)
    dynamic_batch = True
