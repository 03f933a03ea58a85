"""The Python API behind every CLI command: each function takes a path or a Dataset."""

from __future__ import annotations

import warnings
from pathlib import Path

from detforge.data import Dataset, convert, fixed_copy, read, split_dataset, write
from detforge.data import check as _check
from detforge.data import stats as _stats
from detforge.data.collect import collect as _collect
from detforge.data.formula import write_scenes
from detforge.data.image import set_max_pixels
from detforge.data.reading import is_data_yaml, read_splits
from detforge.data.report import data_report as _data_report
from detforge.data.shards import DEFAULT_SHARD_SIZE, pack_splits
from detforge.data.shards import pack as _pack
from detforge.data.synth import synth as _synth
from detforge.data.synth import track_video
from detforge.data.viz import show_dataset
from detforge.engine.infer.options import Outputs, Thresholds
from detforge.engine.train.config import TrainConfig
from detforge.errors import DetforgeError
from detforge.fileio import prepare_destination, refuse_overlap


def as_dataset(src, format: str = "auto", **opts) -> Dataset:
    return src if isinstance(src, Dataset) else read(src, format, **opts)


def check(
    src, *, format: str = "auto", names=None, decode: bool = True, progress: bool = True, **opts
) -> _check.CheckResult:
    """Validate a dataset; see :func:`detforge.data.check.check`. Images an annotation points
    at outside the dataset are findings (``outside_path``) and skipped unless
    ``outside_paths='allow'``."""
    opts.setdefault("outside_paths", "skip")
    return _check.check(
        as_dataset(src, format, **opts), names=names, decode=decode, progress=progress
    )


def fix(
    src,
    out,
    *,
    policy: str = "clip",
    to: str | None = None,
    format: str = "auto",
    images: str = "copy",
    overwrite: bool = False,
    images_dir=None,
    **opts,
) -> tuple[Path, _check.CheckResult]:
    """Write a fixed copy of ``src`` to ``out`` (the source is never edited) and check it; the
    result's ``changes`` lists each image and box the fix dropped or clipped (see
    :func:`detforge.data.fixed_copy`). ``images`` is how the copy's images are written (copy,
    link, none); ``images_dir`` where the reader finds the source's (a reader's ``images=``)."""
    if images_dir is not None:
        opts["images"] = images_dir
    return fixed_copy(
        as_dataset(src, format, **opts), out, policy, to=to, images=images, overwrite=overwrite
    )


def split(
    src,
    out=None,
    *,
    ratios=(0.7, 0.15, 0.15),
    seed: int = 0,
    to: str | None = None,
    format: str = "auto",
    images: str = "copy",
    overwrite: bool = False,
    strict: bool = False,
    images_dir=None,
    **opts,
) -> dict[str, Dataset]:
    """Split a dataset; with ``out``, write each split (``out/<split>``) and ``out/data.yaml``
    (see :func:`detforge.data.split_dataset`). ``images``: how the splits' images are written
    (copy, link, none); ``images_dir``: where the reader finds the source's."""
    if images_dir is not None:
        opts["images"] = images_dir
    if out is not None and not isinstance(src, Dataset):
        refuse_overlap(out, [src])
    return split_dataset(
        as_dataset(src, format, **opts), ratios, seed,
        out=out, to=to, images=images, overwrite=overwrite, strict=strict,
    )  # fmt: skip


def stats(src, *, format: str = "auto", imgsz: int = 320, **opts) -> dict:
    """Counts of images, negatives, boxes per class, box and image sizes; ``small``: how the
    boxes fare at input size ``imgsz`` and the size ``train`` would pick."""
    return _stats.stats(as_dataset(src, format, **opts), imgsz=imgsz)


def show(
    src,
    out,
    *,
    n: int = 16,
    seed: int = 0,
    augment=None,
    imgsz: int | None = None,
    cols: int = 4,
    format: str = "auto",
    **opts,
) -> Path:
    """Save a grid of ``n`` samples with their boxes as a PNG. ``augment`` (True or an
    AugmentConfig, or a dict of its fields) draws the training view instead: augmented,
    mosaicked as configured, at input size ``imgsz`` (default det-n's)."""
    ds = as_dataset(src, format, **opts)
    if not augment:
        return show_dataset(ds, out, n=n, seed=seed, cols=cols)
    from detforge.data.torch.augment import show_training_view

    return show_training_view(
        ds, out, augment, imgsz or TrainConfig.imgsz, n=n, seed=seed, cols=cols
    )


def pack(
    src,
    out,
    *,
    shard_size=DEFAULT_SHARD_SIZE,
    workers: int | None = None,
    name: str = "data",
    overwrite: bool = False,
    progress: bool = True,
    format: str = "auto",
    strict: bool = False,
    **opts,
) -> dict:
    """Pack a dataset into sharded TFRecords + index.json; resumes after a kill. Images that
    do not decode are left out and counted (``strict``: refused). A data YAML packs each split
    into ``out/<split>`` and writes ``out/data.yaml`` naming them (it trains as is); the
    returned index then sums the splits and holds each under ``splits``."""
    kw = dict(shard_size=shard_size, workers=workers, name=name, overwrite=overwrite)
    kw.update(progress=progress, strict=strict)
    if not isinstance(src, Dataset):
        refuse_overlap(out, [src])
        if format == "auto" and is_data_yaml(Path(src)):
            return pack_splits(read_splits(src, **opts), Path(out), **kw)
    return _pack(as_dataset(src, format, **opts), out, **kw)


def synth(
    out,
    n: int = 200,
    format: str = "yolo",
    *,
    seed: int = 0,
    size: int = 320,
    overwrite: bool = False,
    pretrain: bool = False,
    classes: int | None = None,
) -> Dataset:
    """Write a deterministic synthetic shapes dataset (3 classes, some negatives); with
    ``pretrain``, formula-driven pretraining scenes of ``classes`` classes (default 256, as
    det-n's shipped weights saw; see :mod:`detforge.data.formula`)."""
    if pretrain:
        return write_scenes(out, n, format, seed=seed, size=size, classes=classes,
                            overwrite=overwrite)  # fmt: skip
    return _synth(out, n, format, seed=seed, size=(size, size), overwrite=overwrite)


def synth_video(
    out, frames: int = 200, *, seed: int = 0, size: int = 320, objects: int = 6,
    scene: int | None = None, overwrite: bool = False,
) -> dict:  # fmt: skip
    """Write a video of moving shapes with known identities (``out/video.mp4``) and its
    MOTChallenge ground-truth tracks (``out/gt.txt``), for ``predict --track`` and
    ``eval-track``. ``scene`` seeds the background (default ``seed``): clips of one scene are
    one fixed camera's footage of other objects. See :func:`detforge.data.synth.track_video`."""
    out = prepare_destination(out, overwrite)
    video, gt = track_video(
        out, frames, (size, size * 3 // 4), seed=seed, objects=objects, scene=scene
    )
    return {"video": str(video), "gt": str(gt), "frames": frames, "objects": objects}


def collect(out, camera=0, count: int = 50, interval: float = 0.5) -> list[Path]:
    """Save webcam frames with unique names (OpenCV)."""
    return _collect(out, camera, count, interval)


# The model side (torch) loads on first call, so the data tools start fast and stay small.


def list_models() -> dict[str, dict]:
    """Every model ``train --model`` builds: ``{name: {task, summary, options}}``, each option
    with its type and default (from the builder's signature)."""
    from detforge.models import describe

    return describe()


def train_config():
    """The TrainConfig class (torch-free): its fields are ``train``'s options."""
    return TrainConfig


def train(config=None, *, resume=None, console=None, **overrides) -> dict:
    """Train a model (see :class:`~detforge.engine.train.config.TrainConfig` for every field;
    ``config`` is a TrainConfig or a YAML path, ``overrides`` win). ``resume``: a run folder
    to continue; it may change only epochs, device and workers. Returns a summary."""
    from detforge.engine.train.config import load_config
    from detforge.engine.train.loop import train as _train

    if resume is not None:
        return _train(resume=resume, console=console, **overrides)
    cfg = config if isinstance(config, TrainConfig) else load_config(config, **overrides)
    return _train(cfg, console=console)


def data_report(src, out=None, *, format: str = "auto", **opts) -> Path:
    """Write a dataset's HTML page (counts, histograms, check findings, a browsable grid of
    its images with their boxes) and return its path; see
    :func:`detforge.data.report.data_report`. Images an annotation points at outside the
    dataset are findings (``outside_path``) unless ``outside_paths='allow'``."""
    opts.setdefault("outside_paths", "skip")
    return _data_report(src, out, format=format, **opts)


def report(run, *, device: str = "auto", progress: bool = False) -> Path:
    """Write (again) a run folder's ``report.html`` and return its path; see
    :func:`detforge.engine.report.report_run`. ``train`` and ``eval`` write it themselves."""
    from detforge.engine.jobs import report as _report

    return _report(run, device=device, progress=progress)


def evaluate(weights, data, **options) -> dict:
    """Evaluate a ``.pt``/``.onnx`` model; see :func:`detforge.engine.jobs.evaluate`."""
    from detforge.engine.jobs import evaluate as _evaluate

    return _evaluate(weights, data, **options)


def load(path, device: str = "auto", threads: int | None = None, precision: str = "f32"):
    """Load a ``.pt``, ``.onnx`` or OpenVINO ``.xml`` model once; returns a Predictor
    (``precision``: an OpenVINO model computes in f32 unless bf16 or f16 is asked for)."""
    from detforge.engine.jobs import load as _load

    return _load(path, device, threads, precision)


def predict(
    weights,
    source,
    *,
    out=None,
    conf: float | None = Thresholds.conf,
    iou: float = Thresholds.iou,
    max_det: int = Thresholds.max_det,
    batch: int = 4,
    fmt: str = Outputs.fmt,
    save: bool = Outputs.save,
    save_labelme: bool = Outputs.save_labelme,
    overwrite_labelme: bool = Outputs.overwrite_labelme,
    save_cvat: bool = Outputs.save_cvat,
    save_labelstudio: bool = Outputs.save_labelstudio,
    show: bool = Outputs.show,
    track: bool = False,
    tracker: dict | None = None,
    reconnect: int | None = None,
    progress: bool = True,
    device: str = "auto",
    precision: str = "f32",
    project="runs",
    name: str = "exp",
    save_dir=None,
) -> dict:
    """Predict on ``source`` (an image, folder, glob, video, camera index or rtsp/http
    stream) with ``weights`` (a ``.pt``, ``.onnx`` or OpenVINO ``.xml``, or a loaded
    Predictor) and write the outputs into ``out`` (default: a new PROJECT/predict/NAME);
    returns the summary (also ``summary.json``).

    ``conf``, ``iou``, ``max_det``: see :class:`Thresholds` (default conf: the threshold
    measured for the model). ``fmt``, ``save``, ``save_labelme``, ``overwrite_labelme``,
    ``save_cvat``, ``save_labelstudio``, ``show``: see :class:`Outputs`. ``track``: ids
    across frames (ByteTrack; ``tracker`` its options) in the table, the drawings and
    ``tracks.txt``. A stream reconnects ``reconnect`` times after a drop (None: for ever).
    ``precision``: an OpenVINO model's (f32, bf16, f16). ``save_dir``: ``out`` before 0.1.0."""
    from detforge.engine.jobs import predict as _predict

    if save_dir is not None:
        warnings.warn("predict(save_dir=) is now out=", FutureWarning, stacklevel=2)
        out = save_dir if out is None else out
    path = weights if isinstance(weights, (str, Path)) else getattr(weights, "weights", None)
    model = f"detforge {Path(path).name}" if path is not None else "detforge"
    asked = Outputs(fmt, save, save_labelme, overwrite_labelme, save_cvat, save_labelstudio,
                    show, model)  # fmt: skip
    return _predict(weights, source, out=out, limits=Thresholds(conf, iou, max_det),
                    outputs=asked, batch=batch, track=track, tracker=tracker,
                    reconnect=reconnect, progress=progress, device=device, precision=precision,
                    project=project, name=name)  # fmt: skip


def select(weights, source, out, n: int = 100, *, device: str = "auto", **options) -> dict:
    """Pick the ``n`` images of ``source`` the model is least sure of (and most unlike each
    other) and put them, with pre-annotations, into ``out`` for labeling; see
    :func:`detforge.engine.select.select_batch` for ``options`` and the measure."""
    from detforge.engine.jobs import load
    from detforge.engine.select import select_batch

    options.setdefault("model", f"detforge {Path(weights).name}")
    return select_batch(load(weights, device=device), source, out, n, **options)


def serve(weights, *, ray: bool = False, **options) -> None:
    """Serve ``weights`` over HTTP until SIGTERM or Ctrl-C; see
    :func:`detforge.engine.serve.serve`. Needs ``pip install 'detforge[serve]'``. ``ray``:
    deploy it on Ray Serve instead (``address``, ``replicas``); see
    :func:`detforge.engine.serve.serve_on_ray`."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401

        from detforge.engine.serve import serve as _serve
        from detforge.engine.serve import serve_on_ray
    except ImportError as e:
        raise DetforgeError(
            f"detforge serve needs FastAPI and uvicorn ({e.name} is not installed)",
            "pip install 'detforge[serve]'",
        ) from None
    if ray:
        serve_on_ray(weights, **options)
    else:
        _serve(weights, **options)


def predict_dataset(weights, source, out, **options) -> dict:
    """Predict on a corpus with a pool of Ray actors (local, or a cluster at ``address``) and
    write one row per image with Ray's writers; see
    :func:`detforge.engine.ray_batch.predict_dataset`. Needs ``pip install 'detforge[ray]'``."""
    from detforge.engine.ray_batch import predict_dataset as _predict_dataset

    return _predict_dataset(weights, source, out, **options)


def evaluate_tracks(pred, gt, *, iou: float = 0.5) -> dict:
    """MOTA, IDF1, ID switches and more of MOTChallenge tracks ``pred`` (``predict --track``
    writes ``tracks.txt``) against ground truth ``gt``; see
    :func:`detforge.engine.evaluate.tracking.evaluate_tracks`."""
    from detforge.engine.evaluate.tracking import evaluate_tracks as _evaluate_tracks

    return _evaluate_tracks(pred, gt, iou=iou)


def export(weights, out=None, *, format: str = "onnx", **options) -> dict:
    """Export a checkpoint and check it against PyTorch: ``format`` ``onnx`` (see
    :func:`detforge.engine.export.onnx.export_onnx`) or ``openvino`` (an IR ``.xml`` +
    ``.bin``; see :func:`detforge.engine.export.openvino.export_openvino`)."""
    if format == "openvino":
        from detforge.engine.export.openvino import export_openvino

        return export_openvino(weights, out, **options)
    if format != "onnx":
        raise DetforgeError(f"unknown export format {format!r}", "use onnx or openvino")
    from detforge.engine.export.onnx import export_onnx

    return export_onnx(weights, out, **options)


def task_info(name: str):
    """The task table's row for ``detect`` or ``classify`` (metric names, summary lines)."""
    from detforge.engine.tasks import task

    return task(name)


__all__ = [
    "Outputs",
    "Thresholds",
    "as_dataset",
    "check",
    "collect",
    "convert",
    "evaluate",
    "evaluate_tracks",
    "export",
    "load",
    "list_models",
    "predict",
    "predict_dataset",
    "select",
    "serve",
    "task_info",
    "train",
    "train_config",
    "fix",
    "pack",
    "read",
    "set_max_pixels",
    "show",
    "split",
    "stats",
    "synth",
    "synth_video",
    "write",
]
