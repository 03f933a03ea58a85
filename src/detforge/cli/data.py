"""``detforge data ...``: read, check, report, split, convert, pack, show, synthesize, collect."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

import detforge
from detforge.cli.common import err, esc, out, renamed, required, show
from detforge.errors import DetforgeError

app = typer.Typer(no_args_is_help=True, help="Read, check, split, convert and pack datasets.")

FormatOpt = typer.Option("auto", "--format", "-f", help="Source format, or auto to detect it.")
ImagesOpt = typer.Option(None, "--images", help="Folder to look for images in (VOC, COCO, CSV).")
LabelMapOpt = typer.Option(None, "--label-map", help="label_map.pbtxt for TFRecord sources.")
NegOpt = typer.Option(
    False, "--negatives", help="Add images without annotation as negatives (labelme, VOC)."
)
OutsideOpt = typer.Option(
    False,
    "--allow-outside-paths",
    help="Follow annotation image paths that lead outside the dataset folder (refused by "
    "default: annotations from strangers could point anywhere).",
)
StrictOpt = typer.Option(
    False, "--strict", help="Refuse images that do not decode (default: skip them, named)."
)


def _src_opts(images, label_map, negatives, allow_outside=False) -> dict:
    opts = {"outside_paths": "allow"} if allow_outside else {}
    if images:
        opts["images"] = images
    if label_map:
        opts["label_map"] = label_map
    if negatives:
        opts["negatives"] = True
    return opts


def _image_mode(link: bool, no_images: bool) -> str:
    return "none" if no_images else "link" if link else "copy"


@app.command("check")
def data_check(
    src: Path = typer.Argument(..., help="Dataset: folder, annotation file, data.yaml or records."),
    format: str = FormatOpt,
    images: Path = ImagesOpt,
    label_map: Path = LabelMapOpt,
    negatives: bool = NegOpt,
    allow_outside: bool = OutsideOpt,
    names: str = typer.Option(None, help="Expected class names, comma-separated."),
    as_json: bool = typer.Option(False, "--json", help="Print every finding as JSON."),
    fast: bool = typer.Option(False, help="Read image headers only (misses truncated files)."),
    fix: str = typer.Option(None, help="Write a fixed copy: clip or drop bad boxes (needs --out)."),
    out_dir: Path = typer.Option(None, "--out", help="Where --fix writes the fixed copy."),
    to: str = typer.Option(None, help="Format of the fixed copy (default: the source's)."),
    overwrite: bool = typer.Option(False, help="Allow writing into a non-empty --out."),
):
    """Find missing/unreadable images, size mismatches, bad boxes, unknown classes, duplicates.
    Exits 1 when errors remain."""
    opts = _src_opts(images, label_map, negatives, allow_outside)
    names_list = [n.strip() for n in names.split(",")] if names else None
    result = detforge.check(
        src, format=format, names=names_list, decode=not fast, progress=not as_json, **opts
    )
    if fix:
        if out_dir is None:
            raise DetforgeError("--fix needs --out DIR", "the source is never edited in place")
        fix_opts = dict(opts, images_dir=opts.get("images"))
        fix_opts.pop("images", None)  # the source's image folder; the copy's images are copied
        dst, after = detforge.fix(
            src, out_dir, policy=fix, to=to, format=format, overwrite=overwrite, **fix_opts
        )
        if not as_json:
            _print_findings(result)
            for line in after.changes[:50]:
                out.print(f"  {line}", highlight=False)
            if len(after.changes) > 50:
                out.print(f"  ... and {len(after.changes) - 50} more (--json lists all)")
            out.print(f"fixed copy written to [bold]{esc(dst)}[/] ({len(after.changes)} changes)")
        result = after
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _print_findings(result)
    raise typer.Exit(0 if result.ok else 1)


def _short(path: str) -> str:
    """A path relative to the working folder when it lies below it."""
    rel = os.path.relpath(path) if path and os.path.isabs(path) else path
    return rel if rel and not rel.startswith("..") else path


def _print_findings(result) -> None:
    t = Table(title=f"{result.images} images, {result.boxes} boxes")
    for col in ("severity", "kind", "count"):
        t.add_column(col, no_wrap=True)
    t.add_column("first example", overflow="fold")  # paths are shown whole, wrapped
    first: dict[str, str] = {}
    for f in result.findings:
        first.setdefault(f.kind, f"{_short(f.path)}: {f.message}")
    sev = {f.kind: f.severity for f in result.findings}
    for kind, n in sorted(result.by_kind().items(), key=lambda kv: (sev[kv[0]] != "error", kv[0])):
        style = {"error": "red", "warning": "yellow"}.get(sev[kind], "dim")
        t.add_row(f"[{style}]{sev[kind]}[/]", kind, str(n), esc(first[kind]))
    show(t)
    verdict = "[green]no errors[/]" if result.ok else f"[red]{result.errors} errors[/]"
    out.print(f"{verdict}, {result.count('warning')} warnings")


@app.command("split")
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
    allow_outside: bool = OutsideOpt,
    strict: bool = StrictOpt,
    link: bool = typer.Option(False, help="Hard-link images instead of copying them."),
    no_images: bool = typer.Option(False, "--no-images", help="Write annotations only."),
    overwrite: bool = typer.Option(False, help="Allow writing into a non-empty --out."),
):
    """Seeded split, stratified by class (detection: each image's rarest class); negatives
    spread proportionally."""
    opts = _src_opts(images, label_map, negatives, allow_outside)
    parts = detforge.split(
        src,
        out_dir,
        ratios=ratios,
        seed=seed,
        to=to,
        format=format,
        images=_image_mode(link, no_images),
        overwrite=overwrite,
        strict=strict,
        images_dir=opts.pop("images", None),
        **opts,
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
    out.print(f"written to [bold]{esc(out_dir)}[/] (data.yaml names the splits)")


@app.command("convert")
def data_convert(
    src: Path = typer.Argument(..., help="Dataset to read."),
    dst: Path = typer.Argument(None, hidden=True, help="Before 0.1.0: the output folder."),
    out_dir: Path = typer.Option(None, "--out", help="Folder to write."),
    to: str = typer.Option(..., help="Target format: " + ", ".join(detforge.FORMATS)),
    format: str = FormatOpt,
    images: Path = ImagesOpt,
    label_map: Path = LabelMapOpt,
    negatives: bool = NegOpt,
    allow_outside: bool = OutsideOpt,
    strict: bool = StrictOpt,
    link: bool = typer.Option(False, help="Hard-link images instead of copying them."),
    no_images: bool = typer.Option(False, "--no-images", help="Write annotations only."),
    overwrite: bool = typer.Option(False, help="Allow writing into a non-empty --out folder."),
):
    """Convert between labelme, voc, coco, yolo, csv, tfrecord, folders, cvat and
    labelstudio."""
    dst = required(renamed(out_dir, dst, "DST (positional)"))
    opts = _src_opts(images, label_map, negatives, allow_outside)
    path = detforge.convert(
        src,
        dst,
        to,
        format=format,
        images=_image_mode(link, no_images),
        overwrite=overwrite,
        strict=strict,
        images_dir=opts.pop("images", None),
        **opts,
    )
    out.print(f"written {to} to [bold]{esc(path)}[/]")


@app.command("report")
def data_report(
    src: Path = typer.Argument(..., help="Dataset, or a data.yaml (every split)."),
    out_dir: Path = typer.Option(
        None, "--out", help="Folder for report.html (default: a new runs/report/NAME)."
    ),
    project: Path = typer.Option(Path("runs"), help="Where run folders go."),
    name: str = typer.Option(None, help="Folder name under runs/report/ (default: the data's)."),
    no_decode: bool = typer.Option(
        False, "--no-decode", help="Check image headers only (faster; misses truncated files)."
    ),
    format: str = FormatOpt,
    images: Path = ImagesOpt,
    label_map: Path = LabelMapOpt,
    negatives: bool = NegOpt,
    allow_outside: bool = OutsideOpt,
):
    """One HTML page about a dataset: counts per split and class, box size and aspect
    histograms, every check finding with its image, and a paged, filterable grid of every
    image with its boxes. Opens offline; thumbnails sit beside it in report_files/."""
    page = detforge.data_report(
        src,
        out_dir,
        format=format,
        project=project,
        name=name,
        decode=not no_decode,
        **_src_opts(images, label_map, negatives, allow_outside),
    )
    out.print(f"report: [bold]{esc(page)}[/] (open it in a browser)")


@app.command("stats")
def data_stats(
    src: Path = typer.Argument(..., help="Dataset to describe."),
    format: str = FormatOpt,
    images: Path = ImagesOpt,
    label_map: Path = LabelMapOpt,
    negatives: bool = NegOpt,
    allow_outside: bool = OutsideOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    imgsz: int = typer.Option(
        320, "--imgsz", min=32, help="Say how the boxes fare at this input size."
    ),
):
    """Images, negatives, boxes per class, box sizes, image sizes, and whether objects keep
    enough pixels at the input size (the size `train` would pick when not told)."""
    opts = _src_opts(images, label_map, negatives, allow_outside)
    s = detforge.stats(src, format=format, imgsz=imgsz, **opts)
    if as_json:
        print(json.dumps(s, indent=2))
        return
    _print_stats(s)


def _print_stats(s: dict) -> None:
    classify = s["task"] == "classify"
    head = f"[bold]{esc(s['images'])}[/] images"
    if not classify:
        head += f" ({s['negatives']} negatives), [bold]{esc(s['boxes'])}[/] boxes"
    out.print(f"{head}, format {s['format']}, task {s['task']}")
    t = Table()
    cols = ("class", "images", "share") if classify else ("class", "boxes", "images")
    for col in cols:
        t.add_column(col)
    for c, v in s["classes"].items():
        if classify:
            t.add_row(esc(c), str(v["images"]), f"{100 * v['images'] / max(s['images'], 1):.1f}%")
        else:
            t.add_row(esc(c), str(v["boxes"]), str(v["images"]))
    show(t)
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
    if "small" in s:
        out.print(small_objects_line(s["small"]))


def small_objects_line(small: dict) -> str:
    """One line on whether boxes keep enough pixels at an input size, and the size the rule
    of ``train`` picks when it is not told one."""
    n, side, pick = small["imgsz"], small["p10_side"], small["suggested"]
    line = (
        f"at imgsz {n}: the 10th-percentile box keeps {side} px on its shorter side, "
        f"{100 * small['under']:.0f}% of boxes have under {small['min_side']} px"
    )
    if pick["imgsz"] > n:
        return f"[yellow]{line}: objects will be too small; try --imgsz {pick['imgsz']}[/]"
    return line + " (enough)"


@app.command("show")
def data_show(
    src: Path = typer.Argument(..., help="Dataset to draw."),
    out_png: Path = typer.Option(Path("grid.png"), "--out", help="PNG to write."),
    n: int = typer.Option(16, help="Number of samples."),
    seed: int = typer.Option(0, help="Which samples (seeded)."),
    augment: bool = typer.Option(False, help="Draw the training view (augmented)."),
    mosaic: float = typer.Option(0.0, help="With --augment: mosaic probability."),
    imgsz: int = typer.Option(
        None, help="With --augment: the input size (default: det-n's, as training uses)."
    ),
    format: str = FormatOpt,
    images: Path = ImagesOpt,
    label_map: Path = LabelMapOpt,
    allow_outside: bool = OutsideOpt,
):
    """Save a grid of samples with their labeled boxes (--augment: as training sees them)."""
    aug = {"mosaic": mosaic} if augment else None
    opts = _src_opts(images, label_map, False, allow_outside)
    path = detforge.show(
        src, out_png, n=n, seed=seed, augment=aug, imgsz=imgsz, format=format, **opts
    )
    out.print(f"saved [bold]{esc(path)}[/]")


@app.command("pack")
def data_pack(
    src: Path = typer.Argument(..., help="Dataset to pack."),
    dst: Path = typer.Argument(None, hidden=True, help="Before 0.1.0: the output folder."),
    out_dir: Path = typer.Option(None, "--out", help="Folder for the shards and index.json."),
    shard_size: str = typer.Option(
        "100MB", help="Per shard: a size (100MB, 1GB) or a record count (1000)."
    ),
    workers: int = typer.Option(None, help="Parallel writers (default: CPU count)."),
    name: str = typer.Option("data", help="Shard file prefix."),
    format: str = FormatOpt,
    images: Path = ImagesOpt,
    label_map: Path = LabelMapOpt,
    negatives: bool = NegOpt,
    allow_outside: bool = OutsideOpt,
    strict: bool = StrictOpt,
    overwrite: bool = typer.Option(False, help="Allow writing into a non-empty --out folder."),
):
    """Sharded TFRecords (TF OD API keys) + index.json; re-run after a kill to resume."""
    dst = required(renamed(out_dir, dst, "DST (positional)"))
    index = detforge.pack(
        src,
        dst,
        shard_size=shard_size,
        workers=workers,
        name=name,
        overwrite=overwrite,
        format=format,
        strict=strict,
        **_src_opts(images, label_map, negatives, allow_outside),
    )
    skipped = f", {index['skipped']} images that do not decode left out" * bool(index["skipped"])
    out.print(
        f"{index['records']} records, {index['boxes']} boxes in {len(index['shards'])} "
        f"shards -> [bold]{esc(dst)}[/] (index.json, label_map.pbtxt){skipped}"
    )
    if "splits" in index:
        each = ", ".join(f"{k} {v['records']}" for k, v in index["splits"].items())
        out.print(f"one folder per split ({each}); [bold]{esc(index['data_yaml'])}[/] trains as is")


@app.command("synth")
def data_synth(
    dst: Path = typer.Argument(None, hidden=True, help="Before 0.1.0: the output folder."),
    out_dir: Path = typer.Option(None, "--out", help="Folder to write."),
    n: int = typer.Option(200, help="Number of images (with --video: of frames)."),
    format: str = typer.Option("yolo", "--format", "-f", help="Format to write."),
    seed: int = typer.Option(0, help="Seed."),
    size: int = typer.Option(320, help="Largest image side."),
    overwrite: bool = typer.Option(False, help="Allow writing into a non-empty --out folder."),
    video: bool = typer.Option(
        False,
        "--video",
        help="Write OUT/video.mp4 of moving shapes with known identities and "
        "OUT/gt.txt, their MOTChallenge ground-truth tracks (for predict --track, eval-track).",
    ),
    scene: int = typer.Option(
        None,
        help="With --video: the background's seed (default --seed); clips of one scene are "
        "one fixed camera's footage of other objects.",
    ),
    pretrain: bool = typer.Option(
        False,
        "--pretrain",
        help="Formula-driven pretraining scenes (fractals and contours, one class per formula) "
        "instead of shapes: to look at what pretraining sees.",
    ),
    classes: int = typer.Option(
        None,
        help="With --pretrain: how many formula classes "
        "(default 256, as det-n's shipped weights saw).",
    ),
):
    """Write a deterministic synthetic shapes dataset (circle, square, triangle; negatives),
    or with --video a tracking video and its ground truth."""
    dst = required(renamed(out_dir, dst, "DST (positional)"))
    if video:
        v = detforge.synth_video(dst, n, seed=seed, size=size, scene=scene, overwrite=overwrite)
        out.print(f"{v['frames']} frames, {v['objects']} objects -> [bold]{esc(v['video'])}[/], "
                  f"ground truth [bold]{esc(v['gt'])}[/]")  # fmt: skip
        return
    ds = detforge.synth(dst, n, format, seed=seed, size=size, overwrite=overwrite,
                        pretrain=pretrain, classes=classes)  # fmt: skip
    out.print(
        f"{len(ds)} images, {ds.num_boxes} boxes, {ds.num_negatives} negatives -> "
        f"[bold]{esc(dst)}[/] ({format})"
    )


@app.command("collect")
def data_collect(
    out_dir: Path = typer.Option(..., "--out", help="Folder for the frames."),
    camera: str = typer.Option("0", help="Camera index, or a video file."),
    count: int = typer.Option(50, help="Frames to save."),
    interval: float = typer.Option(0.5, help="Seconds between frames."),
):
    """Save webcam frames with unique names, ready to label."""
    saved = detforge.collect(out_dir, camera, count, interval)
    out.print(f"saved {len(saved)} frames to [bold]{esc(out_dir)}[/]")


@app.command("select")
def data_select(
    weights: Path = typer.Argument(..., help="A trained model (.pt, .onnx or OpenVINO .xml)."),
    source: str = typer.Option(..., "--source", help="Unlabeled images: a folder or a glob."),
    n: int = typer.Option(100, "--n", min=1, help="How many images to pick."),
    out_dir: Path = typer.Option(..., "--out", help="New folder for the batch to label."),
    seed: int = typer.Option(0, help="Breaks ties (the same seed picks the same images)."),
    link: bool = typer.Option(False, "--link", help="Hard-link the images instead of copying."),
    save_labelme: bool = typer.Option(False, "--save-labelme", help="labelme JSON beside each."),
    save_cvat: bool = typer.Option(False, "--save-cvat", help="cvat_annotations.xml in --out."),
    save_labelstudio: bool = typer.Option(
        False, "--save-labelstudio", help="labelstudio_tasks.json in --out."
    ),
    device: str = typer.Option("auto", help="auto (a GPU when there is one), cpu, cuda, mps."),
):
    """Pick the unlabeled images worth labeling next: those the model is least sure of (its
    boxes change when the image is mirrored, or score near its threshold), spread over
    different scenes; copies them with the model's boxes as pre-annotations into --out."""
    s = detforge.select(
        weights, source, out_dir, n, seed=seed, link=link, labelme=save_labelme, cvat=save_cvat,
        labelstudio=save_labelstudio, device=device,
    )  # fmt: skip
    for path in s["unreadable"][:20]:
        err.print(f"[yellow]could not read[/] {escape(path)}", highlight=False)
    out.print(f"{s['selected']} of {s['images']} images picked into [bold]{esc(s['out'])}[/] "
              f"(threshold {s['threshold']:g})")  # fmt: skip
    out.print(f"how: {s['how']}")
    for row in s["picks"][:5]:
        parts = f"flip {row['disagreement']:.2f}, borderline {row['borderline']:.2f}"
        out.print(f"  {row['rank']}. {escape(row['source'])}: {row['uncertainty']:.2f} ({parts})")
    out.print(f"the full list: {s['out']}/selection.json")
