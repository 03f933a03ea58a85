"""Loading a model for inference: a ``.pt`` checkpoint, an ``.onnx`` export or an OpenVINO
``.xml``, once, as a :class:`~detforge.engine.infer.predictor.Predictor` with its task's result
type. Everything that predicts (eval, predict, serve, training's validation) starts here."""

from __future__ import annotations

from pathlib import Path

import torch

from detforge.engine.infer.backends import OnnxBackend, OpenVinoBackend, TorchBackend
from detforge.engine.infer.predictor import Predictor
from detforge.engine.tasks import task
from detforge.errors import DetforgeError


def predictor(backend) -> Predictor:
    """A Predictor over ``backend`` with its task's result type."""
    return Predictor(backend, task(backend.task).result)


def load(
    path, device: str = "auto", threads: int | None = None, precision: str = "f32"
) -> Predictor:
    """Load a ``.pt`` checkpoint, an ``.onnx`` export or an OpenVINO ``.xml`` once; returns
    a :class:`Predictor`. ``threads`` caps the CPU threads it runs on (for a ``.pt``, torch's
    are process-wide: this sets them for the process). ``precision``: what an OpenVINO model
    computes in (f32 by default on every CPU; bf16 or f16 only when asked)."""
    path = Path(path)
    if not path.exists():
        raise DetforgeError(
            f"{path}: not found", "pass runs/train/NAME/weights/best.pt, .onnx or OpenVINO .xml"
        )
    if path.suffix.lower() == ".onnx":
        return predictor(OnnxBackend(path, device, threads))
    if path.suffix.lower() == ".xml":
        return predictor(OpenVinoBackend(path, device, threads, precision))
    if threads:
        torch.set_num_threads(threads)
    return predictor(TorchBackend.from_checkpoint(path, device))
