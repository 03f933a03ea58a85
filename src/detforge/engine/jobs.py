"""The engine's jobs as the API calls them: load a model, evaluate it, predict on files, write
a run's report. Orchestration only: nothing inside the engine imports this module (the
floor plan is an import-linter contract in pyproject.toml).

Each goes through the same Predictor (backend + the task's result type), so ``detforge eval``
scores exactly what training validated and what ``predict`` draws."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from detforge.data.dataset import Dataset
from detforge.engine.evaluate.detection import EVAL_BATCH
from detforge.engine.infer.outputs import predict_files
from detforge.engine.loading import load, predictor
from detforge.engine.report import eval_info, report_run, try_report, write_run_report
from detforge.engine.scoring import eval_split, scoring_set
from detforge.engine.tasks import task
from detforge.errors import DetforgeError
from detforge.fileio import atomic_write_json
from detforge.runs import new_run_dir


def evaluate(
    weights,
    data,
    *,
    split: str | None = None,
    conf: float | None = None,
    iou: float = 0.5,
    batch: int = EVAL_BATCH,
    device: str = "auto",
    engine: str = "faster",
    out=None,
    project="runs",
    name: str = "exp",
    progress: bool = False,
    allow_outside_paths: bool = False,
) -> dict:
    """Evaluate a ``.pt`` or ``.onnx`` model on ``data`` (a data YAML's ``split``, else the
    whole dataset). Detectors: COCO mAP (negatives count), per-class AP, precision, recall
    and a confusion matrix at ``conf`` (IoU ``iou``; default conf: the model's measured one),
    and the threshold of best F1 on this data (``threshold``); classifiers: top-1/top-5 and
    per-class P/R/F1. Writes ``results.json`` and the task's plots (detectors also
    ``predictions.json`` and ``gt.json`` in COCO format) into ``out`` (a new or empty folder;
    default a new ``runs/eval/NAME``); returns the metrics with ``task``, ``split`` and
    ``run_dir``."""
    det = load(weights, device=device)
    opts = {"outside_paths": "allow"} if allow_outside_paths else {}
    ds, split = scoring_set(det, weights, data, split, **opts)
    t = task(det.task)
    scored = t.score(det, ds, batch=batch, conf=conf, iou=iou, engine=engine, progress=progress)
    run = _empty_folder(out) if out is not None else new_run_dir("eval", name, project)
    try:
        t.write_report(scored, ds, run)
        metrics = dict(scored.metrics)
        metrics.update(task=t.name, split=split, weights=str(weights), run_dir=str(run))
        if not isinstance(data, Dataset):
            metrics["data"] = str(data)
        atomic_write_json(run / "results.json", metrics)
    except BaseException:  # no half-written eval folder (an empty one given stays, empty)
        for p in list(run.iterdir()):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        if out is None:
            run.rmdir()
        raise
    info = eval_info(metrics)
    page = try_report(lambda: write_run_report(run, info=info, task=t.name, scored=scored, ds=ds))
    metrics["report"] = str(page) if page else None
    return metrics


def _empty_folder(path) -> Path:
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise DetforgeError(f"{path} is not an empty folder", "give a new or empty --out folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def predict(
    weights,
    source,
    *,
    out=None,
    project="runs",
    name: str = "exp",
    device: str = "auto",
    precision: str = "f32",
    **options,
) -> dict:
    """Run a model over ``source`` (images, folder, glob, video, camera) and write the
    results into ``out`` (default: a new ``runs/predict/NAME``); see
    :func:`~detforge.engine.infer.outputs.predict_files` for ``options``. ``precision``: an
    OpenVINO model's (f32, bf16, f16)."""

    if "save_dir" in options:  # its name until 0.1.0
        warnings.warn("predict(save_dir=) is now out=", FutureWarning, stacklevel=3)
        out = options.pop("save_dir")
    det = load(weights, device=device, precision=precision)
    made = out is None or not Path(out).exists()
    save_dir = Path(out) if out is not None else new_run_dir("predict", name, project)
    options.setdefault("model", f"detforge {Path(weights).name}")
    try:
        return predict_files(det, source, save_dir, **options)
    except BaseException:
        if made and save_dir.is_dir() and not any(save_dir.iterdir()):
            save_dir.rmdir()  # nothing was predicted: no empty folder left behind
        raise


__all__ = ["eval_split", "evaluate", "load", "predict", "predictor", "report", "scoring_set"]
report = report_run
