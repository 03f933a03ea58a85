"""Corpus-scale batch inference on Ray Data: ``detforge predict --ray`` and
:func:`predict_dataset`.

Ray reads the files (local paths, or any URI its filesystems take: ``s3://``, ``gs://``...),
tasks decode them with detforge's decoder and prepare the model's input (the Predictor's own
:meth:`~detforge.engine.infer.predictor.Predictor.prepare`), a pool of actors each holding
one loaded model runs the batches (:meth:`~detforge.engine.infer.predictor.Predictor.finish`,
the same path as ``predict``), and Ray's writers write one row per image: the prediction row
``predict`` writes (:meth:`~detforge.engine.infer.results.Result.to_dict`: ``source``,
``boxes`` (xyxy pixels), ``scores``, ``labels``, ``names``) with ``error`` (None, or why the
file did not decode) after ``source``. Ray restarts a killed actor and retries its batch, so
every image is written once.
The output goes to a hidden folder beside ``out`` and is renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from detforge.data.image import IMAGE_EXTS, decode
from detforge.data.resize import prepare
from detforge.engine.infer.inputs import Frame, image_paths
from detforge.engine.infer.options import Thresholds
from detforge.engine.loading import load, model_files, unpacked
from detforge.errors import DetforgeError, ImageError, require
from detforge.fileio import atomic_write_json
from detforge.runs import new_run_dir

FORMATS = ("jsonl", "parquet")
DECODE_CPUS = 0.5  # what a read + decode task reserves; unlike the actors', so Ray keeps them apart


def import_ray():
    """``ray`` with Ray Data (the extra, not only the core), or one line on how to install it."""
    message = "--ray needs Ray Data, which is not installed"
    install = "pip install 'detforge[ray]' (or: pip install 'ray[data]')"
    ray = require("ray", message, install)
    require("ray.data", message, install)
    return ray


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("source", pa.string()),
            ("error", pa.string()),
            ("boxes", pa.list_(pa.list_(pa.float32(), 4))),
            ("scores", pa.list_(pa.float32())),
            ("labels", pa.list_(pa.int64())),
            ("names", pa.list_(pa.string())),
        ]
    )


def input_paths(source) -> list[str]:
    """What Ray reads: local paths, folders and globs expanded here to their image files (as
    ``predict`` would read them); a URI (``s3://...``) is left for Ray's filesystems."""

    specs = source if isinstance(source, (list, tuple)) else [source]
    out: list[str] = []
    for s in specs:
        s = str(s)
        out += [s] if "://" in s else [os.path.abspath(p) for p in image_paths(s)]
    return out


def decode_batch(batch: dict, *, imgsz: int, resize: str) -> dict:
    """Ray task: file bytes -> the model's uint8 input, its scale back, the image size, and
    the error (an empty string when the file decoded)."""
    n = len(batch["path"])
    images = np.zeros((n, 3, imgsz, imgsz), np.uint8)
    scales = np.ones((n, 2), np.float32)
    hw = np.zeros((n, 2), np.int64)
    errors = []
    for k, (path, data) in enumerate(zip(batch["path"], batch["bytes"])):
        try:
            image = decode(data, path)
        except ImageError as e:
            errors.append(e.message.removeprefix(f"{path}: ") or "cannot decode")
            continue
        images[k], scales[k] = prepare(image, imgsz, resize)
        hw[k] = image.shape[:2]
        errors.append("")
    return {
        "path": batch["path"],
        "error": np.array(errors),
        "image": images,
        "scale": scales,
        "hw": hw,
    }


class PredictActor:
    """One model, loaded once per actor process; called on a batch of prepared images. The
    model's files come through Ray's object store (``model``: ``{file name: bytes}``), so
    actors on other machines need no copy of them."""

    def __init__(self, model, device: str, threads: int, limits: Thresholds):
        import ray

        files = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        with unpacked(files) as path:  # removed once loaded
            self.det = load(path, device=device, threads=threads)
        self.limits = limits

    def __call__(self, batch: dict):
        import pyarrow as pa

        ok = np.flatnonzero(batch["error"] == "")
        frames = [Frame(None, str(batch["path"][k]), int(k), hw=tuple(batch["hw"][k])) for k in ok]
        results = (
            self.det.finish(frames, batch["image"][ok], batch["scale"][ok], self.limits)
            if len(ok)
            else []
        )
        rows = {int(k): r.to_dict() for k, r in zip(ok, results)}  # the one prediction row
        empty = {"boxes": [], "scores": [], "labels": [], "names": []}
        cols: dict[str, list] = {name: [] for name in _schema().names}
        for k, path in enumerate(batch["path"]):
            cols["source"].append(str(path))
            cols["error"].append(str(batch["error"][k]) or None)
            row = rows.get(k, empty)
            for name in empty:
                cols[name].append(row[name])
        return pa.table(cols, schema=_schema())


def _plan(ray, actors: int | None, threads: int | None, device: str) -> dict:
    """The actor pool: ``actors``, ``threads`` each, the CPUs each ``reserve``s in Ray's
    scheduler, and how many ``decoders`` (decode tasks) run at once. Threads are shared out
    so that actors x threads = the cluster's CPUs; the reservation leaves one CPU in eight
    (at least one) to reading and decoding, which would otherwise wait forever for a CPU the
    actors hold, and that many decode tasks run beside the actors."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1)))
    actors = actors or max(1, cpus // 4)
    threads = threads or max(1, cpus // actors)
    spare = max(1.0, cpus / 8) if cpus > 1 else 0.5
    reserve = min(float(threads), max(0.1, (cpus - spare) / actors))
    return {"actors": actors, "threads": threads, "reserve": round(reserve, 2),
            "decoders": max(1, round(spare)), "device": device}  # fmt: skip


def _blocks(paths: list[str], batch: int, cpus: int) -> int | None:
    """How many blocks Ray splits local files into: sixteen per CPU, so the actors start on
    the first block early, decoding overlaps inference and a retried block is small, but at
    most ~1,000 images each (one output file per block)."""
    if any("://" in p for p in paths):
        return None  # Ray sizes what it lists itself
    per_block = min(1024, max(batch, len(paths) // (16 * max(cpus, 1))))
    per_block = -(-per_block // batch) * batch  # whole batches: a fixed-batch graph pads the rest
    return max(1, -(-len(paths) // per_block))


def _start(ray, address: str | None, progress: bool) -> bool:
    """Connect to ``address`` or start a local Ray; True when this call started it. Without
    ``progress`` Ray Data's bars and periodic log lines are off."""
    import logging

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = progress
    logging.getLogger("ray.data").setLevel(logging.INFO if progress else logging.WARNING)
    if ray.is_initialized():
        return False
    # Ray's core logs an internal note on every actor pool ("constructor arguments in the
    # object store", ray-project/ray#53727) at error level; real failures still raise here.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    ray.init(
        address=address, include_dashboard=False, logging_level=logging.ERROR,
        log_to_driver=False,  # workers' own log lines; their errors still raise here
    )  # fmt: skip
    return True


def _count(out: Path, fmt: str) -> tuple[int, list[dict]]:
    """Rows written and the error rows, read back from ``out``."""
    import pyarrow.dataset as pds

    if fmt == "parquet":
        table = pds.dataset(out, format="parquet").to_table(columns=["source", "error"])
        rows = table.num_rows
        errors = [r for r in table.to_pylist() if r["error"]]
        return rows, errors
    rows, errors = 0, []
    for f in sorted(out.glob("*.json*")):
        with open(f) as lines:
            for line in lines:
                rows += 1
                r = json.loads(line)
                if r.get("error"):
                    errors.append({"source": r["source"], "error": r["error"]})
    return rows, errors


def _pipeline(ray, paths: list[str], meta, weights: Path, batch: int, pool: dict, limits):
    """The Ray Dataset: read the files, decode and prepare them (tasks), predict (actors)."""

    cuda = pool["device"].startswith("cuda")
    ds = ray.data.read_binary_files(
        paths,
        include_paths=True,
        file_extensions=[e[1:] for e in IMAGE_EXTS],
        override_num_blocks=_blocks(paths, batch, pool["actors"] * pool["threads"]),
        num_cpus=DECODE_CPUS,
    )
    ds = ds.map_batches(  # own tasks (not fused into the actors): decoding runs beside them
        decode_batch,
        fn_kwargs={"imgsz": meta.imgsz, "resize": meta.backend.resize},
        batch_size=batch,
        num_cpus=DECODE_CPUS,
        compute=ray.data.TaskPoolStrategy(size=pool["decoders"]),
    )
    return ds.map_batches(
        PredictActor,
        fn_constructor_kwargs={
            "model": ray.put(model_files(weights)),
            "device": pool["device"],
            "threads": pool["threads"],
            "limits": limits,
        },
        batch_size=batch,
        compute=ray.data.ActorPoolStrategy(size=pool["actors"]),
        num_cpus=1 if cuda else pool["reserve"],
        num_gpus=1 if cuda else 0,
    )


def _write(ds, tmp: Path, out: Path, fmt: str) -> tuple[int, list[dict]]:
    """Run the pipeline into ``tmp`` with Ray's writer, count the rows, move it to ``out``."""
    if fmt == "parquet":
        ds.write_parquet(str(tmp))
    else:
        ds.write_json(str(tmp))
    rows, errors = _count(tmp, fmt)
    if out.exists():
        out.rmdir()  # empty: checked before the run
    tmp.rename(out)
    return rows, errors


def predict_dataset(
    weights,
    source,
    out=None,
    *,
    project="runs",
    name: str = "exp",
    fmt: str = "jsonl",
    address: str | None = None,
    actors: int | None = None,
    threads: int | None = None,
    device: str = "cpu",
    batch: int = 16,
    conf: float | None = Thresholds.conf,
    iou: float = Thresholds.iou,
    max_det: int = Thresholds.max_det,
    progress: bool = True,
) -> dict:
    """Predict on every image of ``source`` with a pool of Ray actors and write one row per
    image into ``out`` (``fmt`` jsonl or parquet files, as Ray's writers name them; default
    a new ``runs/predict/NAME``; an existing ``out`` must be empty).

    ``source``: a folder, glob, file, a URI Ray reads (``s3://bucket/images/``), or a list of
    these. ``address``: an existing Ray cluster (``auto``, ``ray://head:10001``); without it a
    local Ray is started (or the one this process already runs is used). ``actors`` models
    run at once, each on ``threads`` CPU threads (default: the cluster's CPUs shared out);
    with ``device`` ``cuda`` each actor takes one GPU. Returns a summary (also in
    ``out/_summary.json``)."""
    if fmt not in FORMATS:
        raise DetforgeError(f"--format {fmt!r} with --ray", f"use {' or '.join(FORMATS)}")
    if out is not None:
        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise DetforgeError(f"{out}: already exists and is not empty", "pass a new --out")
    ray = import_ray()
    weights = Path(weights).resolve()
    paths = input_paths(source)

    meta = load(weights, device="cpu")  # checks the file here, once, with a clear error
    if out is None:
        out = new_run_dir("predict", name, project)
    started = _start(ray, address, progress)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        pool = _plan(ray, actors, threads, device)
        ds = _pipeline(ray, paths, meta, weights, batch, pool, Thresholds(conf, iou, max_det))
        rows, errors = _write(ds, tmp, out, fmt)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # nothing was written: no empty folder left behind
        raise
    finally:
        if started:
            ray.shutdown()
    seconds = time.perf_counter() - t0
    summary = {
        "source": [str(s) for s in source] if isinstance(source, (list, tuple)) else str(source),
        "weights": str(weights), "images": rows, "errors": errors, "actors": pool["actors"],
        "threads": pool["threads"], "seconds": round(seconds, 3),
        "images_per_s": round(rows / seconds, 2) if seconds else 0.0, "format": fmt,
        "out": str(out),
    }  # fmt: skip

    atomic_write_json(out / "_summary.json", summary)
    return summary
