"""The ``detforge`` command: parses, calls the Python API, prints. No logic of its own."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

import detforge
from detforge.errors import DetforgeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Labeled images in, trained and exported object detectors out.",
)
data_app = typer.Typer(no_args_is_help=True, help="Read, check, split, convert and pack datasets.")
app.add_typer(data_app, name="data")
out = Console()
err = Console(stderr=True)
_state = {"verbose": False}

FormatOpt = typer.Option("auto", "--format", "-f", help="Source format, or auto to detect it.")
ImagesOpt = typer.Option(None, "--images", help="Folder to look for images in (VOC, COCO, CSV).")
LabelMapOpt = typer.Option(None, "--label-map", help="label_map.pbtxt for TFRecord sources.")
NegOpt = typer.Option(
    False, "--negatives", help="Add images without annotation as negatives (labelme, VOC)."
)


def _src_opts(images, label_map, negatives) -> dict:
    opts = {}
    if images:
        opts["images"] = images
    if label_map:
        opts["label_map"] = label_map
    if negatives:
        opts["negatives"] = True
    return opts


def _image_mode(link: bool, no_images: bool) -> str:
    return "none" if no_images else "link" if link else "copy"


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks.")):
    _state["verbose"] = verbose


@app.command()
def version():
    """Print the detforge version."""
    out.print(detforge.__version__)


@data_app.command("check")
def data_check(
    src: Path = typer.Argument(..., help="Dataset: folder, annotation file, data.yaml or records."),
    format: str = FormatOpt,
    images: Path = ImagesOpt,
    label_map: Path = LabelMapOpt,
    negatives: bool = NegOpt,
    names: str = typer.Option(None, help="Expected class names, comma-separated."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    fast: bool = typer.Option(False, help="Read image headers only (misses truncated files)."),
    fix: str = typer.Option(None, help="Write a fixed copy: clip or drop bad boxes (needs --out)."),
    out_dir: Path = typer.Option(None, "--out", help="Where --fix writes the fixed copy."),
    to: str = typer.Option(None, help="Format of the fixed copy (default: the source's)."),
    overwrite: bool = typer.Option(False, help="Allow writing into a non-empty --out."),
):
    """Report missing/unreadable images, size mismatches, bad boxes, unknown classes, duplicates.
    Exits 1 when errors remain."""
    opts = _src_opts(images, label_map, negatives)
    names_list = [n.strip() for n in names.split(",")] if names else None
    report = detforge.check(
        src, format=format, names=names_list, decode=not fast, progress=not as_json, **opts
    )
    if fix:
        if out_dir is None:
            raise DetforgeError("--fix needs --out DIR", "the source is never edited in place")
        dst, after = detforge.fix(
            src, out_dir, policy=fix, to=to, format=format, overwrite=overwrite, **opts
        )
        if not as_json:
            _print_report(report)
            out.print(f"fixed copy written to [bold]{dst}[/]")
        report = after
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    raise typer.Exit(0 if report.ok else 1)


def _print_report(report) -> None:
    t = Table(title=f"{report.images} images, {report.boxes} boxes")
    for col in ("severity", "kind", "count", "first example"):
        t.add_column(col)
    first: dict[str, str] = {}
    for f in report.findings:
        first.setdefault(f.kind, f"{f.path}: {f.message}")
    sev = {f.kind: f.severity for f in report.findings}
    for kind, n in sorted(report.by_kind().items(), key=lambda kv: (sev[kv[0]] != "error", kv[0])):
        style = {"error": "red", "warning": "yellow"}.get(sev[kind], "dim")
        t.add_row(f"[{style}]{sev[kind]}[/]", kind, str(n), first[kind][:160])
    out.print(t)
    verdict = "[green]no errors[/]" if report.ok else f"[red]{report.errors} errors[/]"
    out.print(f"{verdict}, {report.count('warning')} warnings")


@data_app.command("split")
def data_split(
    src: Path = typer.Argument(..., help="Dataset to split."),
    out_dir: Path = typer.Option(
        ..., "--out", help="Folder for train/, val/, test/ and data.yaml."
    ),
    ratios: str = typer.Option("0.7,0.15,0.15", help="Two or three fractions summing to 1."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same split."),
    to: str = typer.Option(None, help="Format to write (default: the source's)."),
    format: str = FormatOpt,
    images: Path = ImagesOpt,
    label_map: Path = LabelMapOpt,
    negatives: bool = NegOpt,
    link: bool = typer.Option(False, help="Hard-link images instead of copying them."),
    no_images: bool = typer.Option(False, "--no-images", help="Write annotations only."),
    overwrite: bool = typer.Option(False, help="Allow writing into a non-empty --out."),
):
    """Seeded split, stratified by class (detection: each image's rarest class); negatives
    spread proportionally."""
    parts = detforge.split(
        src,
        out_dir,
        ratios=ratios,
        seed=seed,
        to=to,
        format=format,
        images=_image_mode(link, no_images),
        overwrite=overwrite,
        **_src_opts(images, label_map, negatives),
    )
    for name, ds in parts.items():
        if ds.task == "classify":
            per = Counter(s.category for s in ds)
            each = ", ".join(f"{c} {per[i]}" for i, c in enumerate(ds.classes))
            out.print(f"{name:>5}: {len(ds):6d} images ({each})")
            continue
        out.print(
            f"{name:>5}: {len(ds):6d} images, {ds.num_boxes:7d} boxes, "
            f"{ds.num_negatives:5d} negatives"
        )
    out.print(f"written to [bold]{out_dir}[/] (data.yaml names the splits)")


@data_app.command("convert")
def data_convert(
    src: Path = typer.Argument(..., help="Dataset to read."),
    dst: Path = typer.Argument(..., help="Folder to write."),
    to: str = typer.Option(..., help="Target format: " + ", ".join(detforge.FORMATS)),
    format: str = FormatOpt,
    images: Path = ImagesOpt,
    label_map: Path = LabelMapOpt,
    negatives: bool = NegOpt,
    link: bool = typer.Option(False, help="Hard-link images instead of copying them."),
    no_images: bool = typer.Option(False, "--no-images", help="Write annotations only."),
    overwrite: bool = typer.Option(False, help="Allow writing into a non-empty DST."),
):
    """Convert between labelme, voc, coco, yolo, csv, tfrecord and folders."""
    path = detforge.convert(
        src,
        dst,
        to,
        format=format,
        images=_image_mode(link, no_images),
        overwrite=overwrite,
        **_src_opts(images, label_map, negatives),
    )
    out.print(f"written {to} to [bold]{path}[/]")


@data_app.command("stats")
def data_stats(
    src: Path = typer.Argument(..., help="Dataset to describe."),
    format: str = FormatOpt,
    images: Path = ImagesOpt,
    label_map: Path = LabelMapOpt,
    negatives: bool = NegOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Images, negatives, boxes per class, box sizes, image sizes."""
    s = detforge.stats(src, format=format, **_src_opts(images, label_map, negatives))
    if as_json:
        print(json.dumps(s, indent=2))
        return
    _print_stats(s)


def _print_stats(s: dict) -> None:
    classify = s["task"] == "classify"
    head = f"[bold]{s['images']}[/] images"
    if not classify:
        head += f" ({s['negatives']} negatives), [bold]{s['boxes']}[/] boxes"
    out.print(f"{head}, format {s['format']}, task {s['task']}")
    t = Table()
    cols = ("class", "images", "share") if classify else ("class", "boxes", "images")
    for col in cols:
        t.add_column(col)
    for c, v in s["classes"].items():
        if classify:
            t.add_row(c, str(v["images"]), f"{100 * v['images'] / max(s['images'], 1):.1f}%")
        else:
            t.add_row(c, str(v["boxes"]), str(v["images"]))
    out.print(t)
    what = "images" if classify else "boxes"
    if "imbalance" in s:
        out.print(f"imbalance {s['imbalance']}x (most / fewest {what} per class)")
    else:
        out.print(f"[yellow]some classes have no {what}[/]")
    if not classify:
        b = s["box_sizes"]
        out.print(
            f"box sizes: {b['small']} small, {b['medium']} medium, {b['large']} large; "
            f"width {b['width']}, height {b['height']}"
        )
    out.print(
        f"image sizes: width {s['image_sizes']['width']}, height {s['image_sizes']['height']}"
    )


@data_app.command("show")
def data_show(
    src: Path = typer.Argument(..., help="Dataset to draw."),
    out_png: Path = typer.Option(Path("grid.png"), "--out", help="PNG to write."),
    n: int = typer.Option(16, help="Number of samples."),
    seed: int = typer.Option(0, help="Which samples (seeded)."),
    augment: bool = typer.Option(False, help="Draw the training view (augmented)."),
    mosaic: float = typer.Option(0.0, help="With --augment: mosaic probability."),
    imgsz: int = typer.Option(640, help="With --augment: mosaic size."),
    format: str = FormatOpt,
    images: Path = ImagesOpt,
    label_map: Path = LabelMapOpt,
):
    """Save a grid of samples with their labeled boxes (--augment: as training sees them)."""
    from detforge.data.augment import AugmentConfig

    aug = AugmentConfig(mosaic=mosaic) if augment else None
    opts = _src_opts(images, label_map, False)
    path = detforge.show(
        src, out_png, n=n, seed=seed, augment=aug, imgsz=imgsz, format=format, **opts
    )
    out.print(f"saved [bold]{path}[/]")


@data_app.command("pack")
def data_pack(
    src: Path = typer.Argument(..., help="Dataset to pack."),
    dst: Path = typer.Argument(..., help="Folder for the shards and index.json."),
    shard_size: str = typer.Option(
        "100MB", help="Per shard: a size (100MB, 1GB) or a record count (1000)."
    ),
    workers: int = typer.Option(None, help="Parallel writers (default: CPU count)."),
    name: str = typer.Option("data", help="Shard file prefix."),
    format: str = FormatOpt,
    images: Path = ImagesOpt,
    label_map: Path = LabelMapOpt,
    negatives: bool = NegOpt,
    overwrite: bool = typer.Option(False, help="Allow writing into a non-empty DST."),
):
    """Sharded TFRecords (TF OD API keys) + index.json; re-run after a kill to resume."""
    index = detforge.pack(
        src,
        dst,
        shard_size=shard_size,
        workers=workers,
        name=name,
        overwrite=overwrite,
        format=format,
        **_src_opts(images, label_map, negatives),
    )
    out.print(
        f"{index['records']} records, {index['boxes']} boxes in {len(index['shards'])} "
        f"shards -> [bold]{dst}[/] (index.json, label_map.pbtxt)"
    )


@data_app.command("synth")
def data_synth(
    dst: Path = typer.Argument(..., help="Folder to write."),
    n: int = typer.Option(200, help="Number of images."),
    format: str = typer.Option("yolo", "--format", "-f", help="Format to write."),
    seed: int = typer.Option(0, help="Seed."),
    size: int = typer.Option(320, help="Largest image side."),
    overwrite: bool = typer.Option(False, help="Allow writing into a non-empty DST."),
):
    """Write a deterministic synthetic shapes dataset (circle, square, triangle; negatives)."""
    ds = detforge.synth(dst, n, format, seed=seed, size=size, overwrite=overwrite)
    out.print(
        f"{len(ds)} images, {ds.num_boxes} boxes, {ds.num_negatives} negatives -> "
        f"[bold]{dst}[/] ({format})"
    )


@data_app.command("collect")
def data_collect(
    out_dir: Path = typer.Option(..., "--out", help="Folder for the frames."),
    camera: str = typer.Option("0", help="Camera index, or a video file."),
    count: int = typer.Option(50, help="Frames to save."),
    interval: float = typer.Option(0.5, help="Seconds between frames."),
):
    """Save webcam frames with unique names, ready to label."""
    saved = detforge.collect(out_dir, camera, count, interval)
    out.print(f"saved {len(saved)} frames to [bold]{out_dir}[/]")


@app.command()
def models():
    """List the models `detforge train --model` builds."""
    from detforge.models import describe

    t = Table()
    t.add_column("model")
    t.add_column("what it is")
    for name, doc in describe().items():
        t.add_row(name, doc.split(":", 1)[-1].strip())
    out.print(t)


@app.command()
def train(
    data: str = typer.Option(None, help="Dataset: folder, annotation file, data.yaml, shards."),
    model: str = typer.Option(None, help="Model name (see `detforge models`)."),
    task: str = typer.Option(None, help="detect or classify (default: from the data)."),
    config: Path = typer.Option(None, help="YAML with any training field; options override it."),
    epochs: int = typer.Option(None, help="Passes over the training set."),
    imgsz: int = typer.Option(None, help="Input size (longest side)."),
    batch: str = typer.Option(None, help="Images per step, or auto (largest that fits, CUDA)."),
    device: str = typer.Option(None, help="auto, cpu, cuda, cuda:1, mps."),
    workers: int = typer.Option(None, help="DataLoader workers."),
    pretrained: str = typer.Option(None, help="none, imagenet or coco."),
    name: str = typer.Option(None, help="Run name under PROJECT/train/."),
    project: str = typer.Option(None, help="Where run folders go (default: runs)."),
    lr: float = typer.Option(None, help="Peak learning rate."),
    patience: int = typer.Option(None, help="Stop after N epochs without mAP gain."),
    time_budget: float = typer.Option(None, "--time", help="Time budget in minutes."),
    seed: int = typer.Option(None, help="Seed."),
    balanced: bool = typer.Option(
        False, "--balanced", help="Sample rare classes as often as common ones."
    ),
    resume: Path = typer.Option(None, help="Continue a run: runs/train/NAME."),
):
    """Train a detector (or --task classify: a classifier); each run gets its own folder."""
    from detforge.engine.config import load_config
    from detforge.engine.train import train as run_train

    overrides = dict(
        data=data,
        model=model,
        task=task,
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        device=device,
        workers=workers,
        pretrained=pretrained,
        name=name,
        project=project,
        lr=lr,
        patience=patience,
        time=time_budget,
        seed=seed,
        balanced=balanced or None,  # unset: the config file's value stands
    )
    if resume is not None:
        result = run_train(resume=resume, console=out, epochs=epochs)
    else:
        result = run_train(load_config(config, **overrides), console=out)
    out.print(
        f"best {'top-1' if result.get('task') == 'classify' else 'mAP50-95'} "
        f"{result['best_map']:.4f} (epoch {result['best_epoch']}); "
        f"weights in [bold]{result['run_dir']}/weights[/]"
    )


@app.command("eval")
def eval_cmd(
    weights: Path = typer.Argument(..., help="best.pt / last.pt or an exported .onnx."),
    data: str = typer.Option(..., help="Dataset or data.yaml."),
    split: str = typer.Option(None, help="Split of a data.yaml (default val)."),
    conf: float = typer.Option(0.25, help="Confidence for precision, recall, confusion."),
    iou: float = typer.Option(0.5, help="IoU for a match at that confidence."),
    batch: int = typer.Option(8, help="Images per forward pass."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, mps."),
    project: Path = typer.Option(Path("runs"), help="Where run folders go."),
    name: str = typer.Option("exp", help="Run name under runs/eval/."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object."),
):
    """COCO mAP, per-class AP, precision/recall at --conf, PR curve and confusion matrix."""
    m = detforge.evaluate(
        weights,
        data,
        split=split,
        conf=conf,
        iou=iou,
        batch=batch,
        device=device,
        project=project,
        name=name,
        progress=not as_json,
    )
    if as_json:
        print(json.dumps({k: v for k, v in m.items() if k != "confusion"}))
        return
    if "top1" in m:
        t = Table(title=f"{m['split']}: {m['images']} images")
        for col in ("class", "precision", "recall", "F1", "images"):
            t.add_column(col)
        for c, v in m["per_class"].items():
            t.add_row(c, *(f"{v[k]:.3f}" for k in ("precision", "recall", "f1")), str(v["support"]))
        out.print(t)
        out.print(
            f"top-1 {m['top1']:.4f}  top-5 {m['top5']:.4f}; results in [bold]{m['run_dir']}[/]"
        )
        return
    t = Table(title=f"{m['split']}: {m['images']} images ({m['negatives']} negatives)")
    for col in ("class", "AP50-95", "AP50", f"P@{conf}", f"R@{conf}"):
        t.add_column(col)
    for c, v in m["per_class"].items():
        t.add_row(c, *(f"{v[k]:.3f}" for k in ("AP50-95", "AP50", "precision", "recall")))
    t.add_row(
        "all",
        f"{m['mAP50-95']:.3f}",
        f"{m['mAP50']:.3f}",
        f"{m['precision']:.3f}",
        f"{m['recall']:.3f}",
        style="bold",
    )
    out.print(t)
    out.print(
        f"mAP75 {m['mAP75']:.3f}  small/medium/large {m['mAP_small']:.3f}/"
        f"{m['mAP_medium']:.3f}/{m['mAP_large']:.3f}"
    )
    out.print(f"results.json, pr_curve.png, confusion_matrix.png in [bold]{m['run_dir']}[/]")


@app.command()
def predict(
    weights: Path = typer.Argument(..., help="best.pt or an exported .onnx."),
    source: str = typer.Option(..., help="Image, folder, glob, video file or camera index."),
    save_dir: Path = typer.Option(None, help="Output folder (default runs/predict/NAME)."),
    name: str = typer.Option("exp", help="Run name under runs/predict/."),
    conf: float = typer.Option(0.25, help="Minimum score."),
    iou: float = typer.Option(0.5, help="NMS IoU threshold."),
    batch: int = typer.Option(4, help="Images per forward pass."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, mps."),
    fmt: str = typer.Option("jsonl", "--format", help="Predictions file: jsonl, csv or coco."),
    no_save: bool = typer.Option(False, "--no-save", help="Do not write annotated images/video."),
    save_labelme: bool = typer.Option(
        False, "--save-labelme", help="Write a labelme JSON beside each image (kept if present)."
    ),
    overwrite_labelme: bool = typer.Option(False, help="Replace existing labelme JSON files."),
    show: bool = typer.Option(False, "--show", help="Live window (needs a display)."),
):
    """Detect objects (or classify images) in images, folders, videos or a webcam; the model
    loads once."""
    from detforge.engine.outputs import predict_files
    from detforge.runs import new_run_dir

    det = detforge.load(weights, device=device)
    if save_dir is None:
        save_dir = new_run_dir("predict", name)
    else:
        save_dir.mkdir(parents=True, exist_ok=True)
    s = predict_files(
        det,
        source,
        save_dir,
        conf=conf,
        iou=iou,
        batch=batch,
        fmt=fmt,
        save=not no_save,
        save_labelme=save_labelme,
        overwrite_labelme=overwrite_labelme,
        show=show,
    )
    for k in s["skipped"]:
        err.print(f"[yellow]skipped[/] {k['source']}: {k['error']}", highlight=False)
    found = (
        "top-1: " + ", ".join(f"{c} {k}" for c, k in s["top1"].items())
        if s["top1"] is not None
        else f"{s['detections']} detections"
    )
    out.print(f"{s['frames']} images/frames, {found}, {s['fps']} frames/s")
    if s["labelme_written"] or save_labelme:
        out.print(f"labelme files written beside the images: {s['labelme_written']}")
    out.print(f"results in [bold]{save_dir}[/]")


@app.command()
def export(
    weights: Path = typer.Argument(..., help="A .pt checkpoint."),
    fmt: str = typer.Option("onnx", "--format", help="Only onnx."),
    output: Path = typer.Option(None, help="Output file (default: beside the weights)."),
    imgsz: int = typer.Option(None, help="Input size (default: the training size)."),
    batch: int = typer.Option(1, help="Fixed batch of the graph."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Free batch dimension."),
    opset: int = typer.Option(17, help="ONNX opset."),
    nms: bool = typer.Option(True, "--nms/--no-nms", help="NMS inside the graph."),
    overwrite: bool = typer.Option(False, help="Replace an existing file."),
):
    """Export to ONNX (uint8 input, preprocessing inside) and check it against PyTorch."""
    if fmt != "onnx":
        raise DetforgeError(f"unknown export format {fmt!r}", "use --format onnx")
    r = detforge.export(
        weights,
        output,
        imgsz=imgsz,
        batch=batch,
        dynamic_batch=dynamic_batch,
        opset=opset,
        nms=nms,
        overwrite=overwrite,
    )
    p = r["parity"]
    check = (
        f"{p['detections']} detections matched, worst IoU {p['worst_iou']}, worst score diff "
        f"{p['worst_score_diff']}"
        if "detections" in p
        else f"{p['images']} images, max probability diff {p['max_prob_diff']}, same top-1"
    )
    out.print(
        f"wrote [bold]{r['path']}[/] (input uint8 {r['batch']}x3x{r['imgsz']}x{r['imgsz']}, "
        f"NMS {'inside' if r['nms'] else 'left out'})\nparity with PyTorch: {check}"
    )


@app.command()
def demo(
    project: Path = typer.Option(Path("runs"), help="Where run folders go."),
    n: int = typer.Option(None, help="Synthetic images (default 240; classify: 300)."),
    epochs: int = typer.Option(12, help="Training epochs (0 skips training)."),
    imgsz: int = typer.Option(None, help="Training image size (default 320; classify: 64)."),
    task: str = typer.Option("detect", help="detect (ssdlite on boxes) or classify (resnet18)."),
):
    """Synthesize, check, split, pack, train, evaluate, export to ONNX, run on a video."""
    from detforge.demo import TASKS, run_demo

    if task not in TASKS:
        raise DetforgeError(f"unknown --task {task!r}", "use detect or classify")
    summary = run_demo(project, n=n, epochs=epochs, imgsz=imgsz, console=out, task=task)
    out.print(f"\n[bold green]demo done[/]: everything is in [bold]{summary['run_dir']}[/]")


def main() -> None:
    try:
        app()
    except DetforgeError as e:
        if _state["verbose"]:
            raise
        err.print(f"[red]error:[/] {e.message}", highlight=False)
        if e.hint:
            err.print(f"[yellow]hint:[/] {e.hint}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; re-run the same command to resume where it can")
        sys.exit(130)


if __name__ == "__main__":
    main()
