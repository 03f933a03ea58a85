"""detforge: from a folder of labeled images to a trained, evaluated, exported detector."""

from detforge import errors
from detforge._version import __version__
from detforge.api import (
    Outputs,
    Thresholds,
    check,
    collect,
    convert,
    data_report,
    evaluate,
    evaluate_tracks,
    export,
    fix,
    list_models,
    load,
    pack,
    predict,
    predict_dataset,
    read,
    report,
    select,
    show,
    split,
    stats,
    synth,
    synth_video,
    train,
    write,
)
from detforge.data import Dataset, Sample, read_splits
from detforge.data.formats import FORMATS

# The model side imports torch (about 1 s and 400 MB): the API functions above import it on
# first call, and these classes load on first use, so the data tools start fast and stay small.
_LAZY = {
    "Predictor": ("detforge.engine.infer.predictor", "Predictor"),
    "Result": ("detforge.engine.infer.results", "Result"),
    "ClassResult": ("detforge.engine.infer.results", "ClassResult"),
    "TrainConfig": ("detforge.engine.train.config", "TrainConfig"),
    "run_demo": ("detforge.demo", "run_demo"),
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
    "ClassResult",
    "FORMATS",
    "Outputs",
    "Thresholds",
    "Dataset",
    "Predictor",
    "Result",
    "Sample",
    "__version__",
    "check",
    "collect",
    "convert",
    "data_report",
    "errors",
    "evaluate",
    "evaluate_tracks",
    "export",
    "fix",
    "load",
    "list_models",
    "pack",
    "predict",
    "predict_dataset",
    "run_demo",
    "read",
    "read_splits",
    "report",
    "select",
    "show",
    "split",
    "stats",
    "synth",
    "synth_video",
    "train",
    "TrainConfig",
    "write",
]
