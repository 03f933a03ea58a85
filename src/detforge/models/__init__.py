"""Models by name: ``build(name, classes, **options)``; every builder is a plain function."""

from __future__ import annotations

import difflib
import re

from detforge.errors import DetforgeError
from detforge.models import classify, tracker, zoo
from detforge.models.base import Detector, load_checkpoint, save_checkpoint

MODELS = {"tracker": tracker.build, **{name: zoo.builder(name) for name in zoo.FAMILIES}}
CLASSIFIERS = {name: classify.builder(name) for name in classify.ARCHS}
MODELS.update(CLASSIFIERS)


def build(name: str, classes, **options) -> Detector:
    """Build model ``name`` for ``classes``. Options: ``imgsz``, ``pretrained`` (none, imagenet,
    coco) and the model's own (see ``detforge models``)."""
    if name not in MODELS:
        close = difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "one of " + ", ".join(MODELS)
        raise DetforgeError(f"unknown model {name!r}", hint)
    if not classes:
        raise DetforgeError("a model needs at least one class")
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return MODELS[name](list(classes), **options)
    except TypeError as e:
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if not bad:
            raise
        raise DetforgeError(
            f"model {name!r} has no option {bad.group(1)!r}",
            "`detforge models` lists each model's options",
        ) from None


def describe() -> dict[str, str]:
    return {name: (fn.__doc__ or "").strip() for name, fn in MODELS.items()}


__all__ = [
    "CLASSIFIERS",
    "MODELS",
    "Detector",
    "build",
    "describe",
    "load_checkpoint",
    "save_checkpoint",
]
