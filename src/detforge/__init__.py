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
from detforge.engine.evaluate import evaluate
from detforge.engine.export import export_onnx as export
from detforge.engine.predict import Predictor, Result, load

__version__ = "0.1.0"

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
