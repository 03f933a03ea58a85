"""The engine's jobs as the API calls them: load a model, evaluate it, predict on files.

Each goes through the same Predictor (backend + the task's result type), so ``detforge eval``
scores exactly what training validated and what ``predict`` draws."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import torch

from detforge.data.dataset import Dataset
from detforge.data.reading import is_data_yaml
from detforge.engine.evaluate.detection import EVAL_BATCH
from detforge.engine.infer.backends import OnnxBackend, OpenVinoBackend, TorchBackend
from detforge.engine.infer.predictor import Predictor
from detforge.engine.report import read_metrics, try_report, write_run_report
from detforge.engine.tasks import task
from detforge.errors import DetforgeError
from detforge.fileio import atomic_write_json
from detforge.runs import new_run_dir


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


def eval_split(data, split: str | None, weights=None, **opts) -> tuple[Dataset, str]:
    """The dataset to evaluate on: a data YAML's ``split`` (val by default); for a source
    without splits all of it, or with ``split`` train/val the part the run that wrote
    ``weights`` (a .pt) trained or validated on (its seed and ratio are in the checkpoint)."""
    from detforge.data import read
    from detforge.data.formula import formula_splits, is_formula
    from detforge.data.reading import is_data_yaml, read_splits

    if is_formula(data):  # pretraining scenes: their fixed val set, at the model's size
        return formula_splits(data, _trained_imgsz(weights))[1], "val"
    if is_data_yaml(Path(data)):
        parts = read_splits(data, **opts)
        split = split or ("val" if "val" in parts else "test" if "test" in parts else "train")
        if split not in parts:
            raise DetforgeError(
                f"{data}: has no {split!r} split", f"use --split {' or '.join(parts)}"
            )
        return parts[split], split
    ds = read(data, **opts)
    if split in (None, "all"):
        return ds, "all"
    return _held_out_part(ds, data, split, weights), split


def _trained_imgsz(weights, default: int = 320) -> int:
    from detforge.models.checkpoint import read_checkpoint

    if weights is None or Path(weights).suffix.lower() != ".pt":
        return default
    return int(read_checkpoint(weights)["model"].get("options", {}).get("imgsz", default))


def _held_out_part(ds: Dataset, data, split: str, weights) -> Dataset:
    """The train or val part of ``ds`` as the run of ``weights`` cut it; refused when that
    is not known (never the whole set reported as one split)."""
    from detforge.data.split import split as cut
    from detforge.models.checkpoint import read_checkpoint

    fp = {}
    if weights is not None and Path(weights).suffix.lower() == ".pt":
        fp = read_checkpoint(weights).get("data") or {}
    held = fp.get("held_out")
    same = held and Path(fp.get("source", "")).resolve() == Path(data).resolve()
    if split not in ("train", "val") or not same:
        why = (
            f"{weights} was trained on {fp['source']}"
            if held and not same
            else f"{weights} does not say how its run split {data}"
        )
        raise DetforgeError(
            f"{data} has no splits, so --split {split} is not defined ({why})",
            "evaluate all of it (drop --split), pass the run's best.pt or last.pt with the "
            "data it trained on (--split val then means its held-out images), or a data.yaml",
        )
    parts = cut(ds, (1 - held["val_split"], held["val_split"]), seed=held["seed"])
    return parts[split]


def scoring_set(det, weights, data, split: str | None, **opts) -> tuple[Dataset, str]:
    """The images ``det`` (loaded from ``weights``) is scored on: the ``split`` of ``data``
    (see :func:`eval_split`), its unreadable images and invalid boxes left out, refused
    when its task or classes differ from the model's."""
    from detforge.data.check import without_invalid_boxes
    from detforge.data.verify import usable

    ds, split = eval_split(data, split, weights, **opts)
    if ds.task != det.task:
        what = {"detect": "boxes", "classify": "a class per image (class folders)"}
        raise DetforgeError(
            f"{weights} is a {det.task} model but {data} holds {what[ds.task]}",
            f"evaluate it on {what[det.task]}",
        )
    ds = without_invalid_boxes(usable(ds)[0], "scored")
    if list(ds.classes) != list(det.names):
        raise DetforgeError(
            f"{weights}: the model's classes {det.names} differ from the dataset's {ds.classes}",
            "evaluate on the data the model was trained for (same class list and order)",
        )
    return ds, split


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
    ``predictions.json`` and ``gt.json`` in COCO format) into ``runs/eval/NAME``; returns the
    metrics with ``task``, ``split`` and ``run_dir``."""
    det = load(weights, device=device)
    opts = {"outside_paths": "allow"} if allow_outside_paths else {}
    ds, split = scoring_set(det, weights, data, split, **opts)
    t = task(det.task)
    scored = t.score(det, ds, batch=batch, conf=conf, iou=iou, engine=engine, progress=progress)
    run = new_run_dir("eval", name, project)
    try:
        t.write_report(scored, ds, run)
        metrics = dict(scored.metrics)
        metrics.update(task=t.name, split=split, weights=str(weights), run_dir=str(run))
        if not isinstance(data, Dataset):
            metrics["data"] = str(data)
        atomic_write_json(run / "results.json", metrics)
    except BaseException:
        shutil.rmtree(run, ignore_errors=True)  # no half-written eval folder
        raise
    info = _eval_info(metrics)
    page = try_report(lambda: write_run_report(run, info=info, task=t.name, scored=scored, ds=ds))
    metrics["report"] = str(page) if page else None
    return metrics


def _eval_info(results: dict) -> dict:
    rows = [
        ("weights", results["weights"]),
        ("data", results.get("data", "(a Dataset in memory)")),
        ("split", results["split"]),
        ("images", results["images"]),
    ]
    return {"kind": "evaluation", "split": results["split"], "rows": rows}


def _train_info(run: Path, cfg: dict, weights: Path, split: str, rows: list[dict], t) -> dict:
    key = t.fitness
    best = max((r for r in rows if key in r), key=lambda r: r[key], default=None)
    started = (run / "config.yaml").stat().st_mtime
    ended = max((p.stat().st_mtime for p in (run / "weights").glob("*.pt")), default=started)
    stamp = datetime.datetime.fromtimestamp
    info_rows = [
        ("model", cfg.get("model")),
        ("data", cfg.get("data")),
        ("epochs run", len(rows)),
        (
            "best epoch",
            f"{int(best['epoch'])} ({key} {best[key]:.4f})" if best else "no epoch finished",
        ),
        ("image size, batch", f"{cfg.get('imgsz')} px, {cfg.get('batch')}"),
        ("started", stamp(started).isoformat(timespec="seconds")),
        ("last checkpoint", f"{stamp(ended).isoformat(timespec='seconds')}"
         f" ({(ended - started) / 60:.1f} min after the start)"),
        ("scored", f"{weights.name} on the {split} split"),
    ]  # fmt: skip
    return {"kind": "training", "split": split, "rows": info_rows, "config": cfg}


def _what_to_score(run: Path) -> dict:
    """What a run folder's report scores: weights, data, split, thresholds, and what the
    page says about the run."""
    import yaml

    if (run / "results.json").is_file():
        res = json.loads((run / "results.json").read_text(encoding="utf-8"))
        if not res.get("data"):
            raise DetforgeError(
                f"{run / 'results.json'} does not name the data it scored",
                "evaluate again with detforge eval (it writes the report itself)",
            )
        return {
            "weights": Path(res["weights"]),
            "data": res["data"],
            "split": res["split"],
            "conf": res.get("conf"),
            "iou": res.get("iou", 0.5),
            "results": res,
        }
    if not (run / "config.yaml").is_file():
        raise DetforgeError(
            f"{run}: not a run folder (no config.yaml or results.json)",
            "pass a folder under runs/train or runs/eval",
        )
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    found = [run / "weights" / n for n in ("best.pt", "last.pt")]
    weights = next((p for p in found if p.is_file()), None)
    if weights is None:
        raise DetforgeError(f"{run}: no weights yet", "train at least one epoch first")
    data = cfg.get("data")
    env = run / "environment.json"
    return {
        "weights": weights,
        "data": data,
        "conf": None,  # the model's own
        "iou": 0.5,
        "config": cfg,
        "split": None if is_data_yaml(Path(data)) else "val",
        "environment": json.loads(env.read_text(encoding="utf-8")) if env.is_file() else {},
    }


def report(run, *, device: str = "auto", progress: bool = False) -> Path:
    """Write (again) ``report.html`` of a run folder: a training run's best.pt (else
    last.pt) scored on its validation images, or an eval run's model on its data and split.
    Returns the page's path."""
    run = Path(run)
    w = _what_to_score(run)
    det = load(w["weights"], device=device)
    ds, split = scoring_set(det, w["weights"], w["data"], w["split"])
    t = task(det.task)
    scored = t.score(det, ds, conf=w["conf"], iou=w["iou"], progress=progress)
    rows = [] if "results" in w else read_metrics(run)
    if "results" in w:
        info = _eval_info({**w["results"], "images": len(ds)})
    else:
        info = _train_info(run, w["config"], w["weights"], split, rows, t)
        info["environment"] = w["environment"]
    return write_run_report(run, info=info, task=t.name, scored=scored, ds=ds, rows=rows)


def predict(
    weights,
    source,
    *,
    save_dir=None,
    project="runs",
    name: str = "exp",
    device: str = "auto",
    **options,
) -> dict:
    """Run a model over ``source`` (images, folder, glob, video, camera) and write the
    results into ``save_dir`` (default: a new ``runs/predict/NAME``); see
    :func:`~detforge.engine.infer.outputs.predict_files` for ``options``."""
    from detforge.engine.infer.outputs import predict_files

    det = load(weights, device=device)
    made = save_dir is None or not Path(save_dir).exists()
    save_dir = Path(save_dir) if save_dir is not None else new_run_dir("predict", name, project)
    options.setdefault("model", f"detforge {Path(weights).name}")
    try:
        return predict_files(det, source, save_dir, **options)
    except BaseException:
        if made and save_dir.is_dir() and not any(save_dir.iterdir()):
            save_dir.rmdir()  # nothing was predicted: no empty folder left behind
        raise
