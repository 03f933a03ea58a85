"""Models by name: ``build(name, classes, **options)``; every builder is a plain, typed
function registered in :mod:`detforge.models.registry`. Importing this package registers the
torchvision zoo, the single-object localizer and the classifiers."""

from __future__ import annotations

from detforge.models import classify, localizer, zoo  # noqa: F401 - they register themselves
from detforge.models.base import Classifier, Detector, Model
from detforge.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from detforge.models.fastdet import model as _fastdet  # noqa: F401 - det-n/s/m
from detforge.models.registry import (
    REGISTRY,
    build,
    canonical,
    describe,
    entry,
    names,
    register_model,
)

__all__ = [
    "canonical",
    "REGISTRY",
    "Classifier",
    "Detector",
    "Model",
    "build",
    "describe",
    "entry",
    "load_checkpoint",
    "names",
    "read_checkpoint",
    "register_model",
    "save_checkpoint",
]
