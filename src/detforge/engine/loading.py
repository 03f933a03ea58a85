"""Loading a model for inference: a ``.pt`` checkpoint, an ``.onnx`` export or an OpenVINO
``.xml``, once, as a :class:`~detforge.engine.infer.predictor.Predictor` with its task's result
type. Everything that predicts (eval, predict, serve, training's validation) starts here."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from detforge.engine.infer.backends import OnnxBackend, OpenVinoBackend, TorchBackend
from detforge.engine.infer.predictor import Predictor
from detforge.engine.tasks import task
from detforge.errors import DetforgeError


def predictor(backend, weights: Path | None = None) -> Predictor:
    """A Predictor over ``backend`` (loaded from ``weights``) with its task's result type."""
    return Predictor(backend, task(backend.task).result, weights)


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
    if path.suffix.lower() == ".xml":
        return predictor(OpenVinoBackend(path, device, threads, precision), path)
    if precision != "f32":
        raise DetforgeError(
            f"{path.name}: precision {precision!r} is for OpenVINO models (.xml)",
            "export it with: detforge export WEIGHTS --format openvino (or drop --precision)",
        )
    if path.suffix.lower() == ".onnx":
        return predictor(OnnxBackend(path, device, threads), path)
    if threads:
        torch.set_num_threads(threads)
    return predictor(TorchBackend.from_checkpoint(path, device), path)


def model_files(weights: Path) -> dict[str, bytes]:
    """The model's file (an OpenVINO ``.xml`` with its ``.bin``) as ``{name: bytes}``, the
    file to load first: what Ray ships to its actors and replicas through the object store."""
    weights = Path(weights)
    files = {weights.name: weights.read_bytes()}
    if weights.suffix.lower() == ".xml":
        files[weights.with_suffix(".bin").name] = weights.with_suffix(".bin").read_bytes()
    return files


@contextmanager
def unpacked(files: dict[str, bytes]):
    """The path of the first of :func:`model_files` written to a temporary folder, removed on
    exit (load the model inside: Ray ends its workers without their finalizers, so a folder
    kept for a worker's life would stay in /tmp)."""
    with tempfile.TemporaryDirectory(prefix="detforge-model-", ignore_cleanup_errors=True) as d:
        for name, data in files.items():
            Path(d, name).write_bytes(data)
        yield Path(d, next(iter(files)))
