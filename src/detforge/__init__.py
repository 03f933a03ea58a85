"""detforge: from a folder of labeled images to a trained, evaluated, exported detector."""

from detforge import errors
from detforge.api import (
    check,
    collect,
    convert,
    fix,
    pack,
    read,
    show,
    split,
    stats,
    synth,
    write,
)
from detforge.data import Dataset, Sample, read_splits
from detforge.data.formats import FORMATS

__version__ = "0.1.0"

# The model side imports torch (about 1 s and 400 MB): loaded on first use, so the data tools
# and the CLI's data commands start fast and stay small.
_LAZY = {
    "evaluate": ("detforge.engine.evaluate", "evaluate"),
    "export": ("detforge.engine.export", "export_onnx"),
    "load": ("detforge.engine.predict", "load"),
    "Predictor": ("detforge.engine.predict", "Predictor"),
    "Result": ("detforge.engine.predict", "Result"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'detforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "FORMATS",
    "Dataset",
    "Predictor",
    "Result",
    "Sample",
    "__version__",
    "check",
    "collect",
    "convert",
    "errors",
    "evaluate",
    "export",
    "fix",
    "load",
    "pack",
    "read",
    "read_splits",
    "show",
    "split",
    "stats",
    "synth",
    "write",
]
