"""The engine's jobs as the API calls them: load a model, evaluate it, predict on files, write
a run's report. Orchestration only: nothing inside the engine imports this module (the
floor plan is an import-linter contract in pyproject.toml).

Each goes through the same Predictor (backend + the task's result type), so ``detforge eval``
scores exactly what training validated and what ``predict`` draws."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from detforge.data.dataset import Dataset
from detforge.engine.evaluate.detection import EVAL_BATCH
from detforge.engine.infer.inputs import Source
from detforge.engine.infer.options import Outputs, Thresholds
from detforge.engine.infer.outputs import PredictionWriter
from detforge.engine.infer.predictor import Predictor
from detforge.engine.loading import load, predictor
from detforge.engine.report import eval_info, report_run, try_report, write_run_report
from detforge.engine.scoring import eval_split, scoring_set
from detforge.engine.tasks import task
from detforge.errors import DetforgeError
from detforge.fileio import atomic_write_json, atomic_write_text
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
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
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
    out,
    limits: Thresholds,
    outputs: Outputs,
    batch: int,
    track: bool,
    tracker: dict | None,
    reconnect: int | None,
    progress: bool,
    device: str,
    precision: str,
    project,
    name: str,
) -> dict:
    """The one predict driver (the API's ``predict`` gives every option its default): load
    ``weights`` (or take a loaded Predictor), open ``source`` once, run it through the
    model (``track``: ByteTrack ids across frames, ``tracker`` its options) keeping what
    passes ``limits``, write ``outputs`` into ``out`` (default: a new PROJECT/predict/NAME)
    and return the summary (also ``summary.json``). A network stream reconnects
    ``reconnect`` times after a drop (None: for ever)."""
    if isinstance(weights, Predictor):
        det = weights
    else:
        det = load(weights, device=device, precision=precision)
    made = out is None or not Path(out).exists()
    save_dir = Path(out) if out is not None else new_run_dir("predict", name, project)
    try:
        src = Source(source, reconnect=reconnect)
        save_dir.mkdir(parents=True, exist_ok=True)
        writer = PredictionWriter(det, src, save_dir, outputs, track=track)
        summary = _predict_through(det, src, writer, limits, batch, track, tracker, progress)
    except BaseException:
        if made and save_dir.is_dir() and not any(save_dir.iterdir()):
            save_dir.rmdir()  # nothing was predicted: no empty folder left behind
        raise
    summary = {
        "source": src.name if src.live else str(source),  # a stream's password never shown
        **summary,
        "save_dir": str(save_dir),
    }
    if src.live:
        summary["stream"] = dict(src.video.stats)
    atomic_write_text(save_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def _predict_through(det, src, writer, limits, batch, track, tracker, progress) -> dict:
    skipped: list = []
    counts: Counter = Counter()
    tracks: set = set()
    warm_up_s = det.warm_up()  # speeds below leave out loading and the first call's setup
    n, ok, t0 = 0, False, time.perf_counter()
    opts = {**asdict(limits), "batch": batch, "on_error": skipped.append}
    try:
        with _progress(progress) as bar:
            row = bar.add_task("predict", total=src.total, fps=0.0)
            results = det.track(src, tracker=tracker, **opts) if track else det.stream(src, **opts)
            for r in results:
                n += 1
                counts.update(r.class_counts())
                if track:
                    tracks.update(r.track_ids.tolist())
                if not writer.add(r):
                    break
                bar.update(row, advance=1, fps=n / (time.perf_counter() - t0))
        ok = True
    finally:
        table = writer.close(keep_video=ok or n > 0)
        if not ok and n == 0:  # failed before the first frame: no empty tables left behind
            table.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    return {
        "task": det.task,
        "frames": n,
        "counts": dict(counts.most_common()),
        "seconds": round(seconds, 3),
        "fps": round(n / seconds, 2) if seconds else 0.0,
        "warm_up_s": round(warm_up_s, 3),
        "predictions": str(table),
        "video": str(writer.sink.path) if writer.sink else None,
        "tracks": str(writer.mot.path) if writer.mot else None,
        "track_ids": len(tracks),
        "labelme_written": writer.labelme_written,
        "labelme_kept": writer.labelme_kept,
        "preannotations": [str(p) for p in getattr(writer, "preannotations", [])],
        "skipped": [{"source": f.source, "error": f.error} for f in skipped],
    }


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("predicting"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[fps]:.1f} frames/s"),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )


__all__ = ["eval_split", "evaluate", "load", "predict", "predictor", "report", "scoring_set"]
report = report_run
