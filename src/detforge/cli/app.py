"""The ``detforge`` command: parses, calls the Python API, prints. No logic of its own."""

from __future__ import annotations

import contextlib
import errno
import json
import signal
import sys
import warnings
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

import detforge
from detforge.cli import data as data_cli
from detforge.cli import predict as predict_cli
from detforge.cli.common import (
    config_options,
    err,
    esc,
    out,
    parse_sets,
    renamed,
    show,
    with_options,
)
from detforge.errors import DetforgeError, DiskFullError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Labeled images in, trained and exported object detectors out.",
)
app.add_typer(data_cli.app, name="data")
app.command("predict")(predict_cli.predict)
app.command("eval-track")(predict_cli.eval_track)
app.command("serve")(predict_cli.serve)
_state = {"verbose": False}


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks."),
    max_pixels: int = typer.Option(
        None,
        "--max-pixels",
        help="Refuse images with more pixels than this as possible decompression bombs "
        "(default 89478485, PIL's; also $DETFORGE_MAX_PIXELS).",
    ),
):
    _state["verbose"] = verbose
    if max_pixels:
        detforge.api.set_max_pixels(max_pixels)


@app.command()
def version():
    """Print the detforge version."""
    out.print(detforge.__version__)


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """List the models `detforge train --model` builds, with their options (type = default;
    set them with --set model_options.NAME=VALUE), the training fields their recipe sets
    when you do not, and the weights shipped inside the package."""
    table = detforge.list_models()
    if as_json:
        print(json.dumps(table, indent=2, default=str))
        return
    t = Table()
    cols = ("model", "task", "what it is", "options (type = default)", "training recipe")
    for col in (*cols, "shipped weights"):
        t.add_column(col)
    for name, m in table.items():
        opts = ", ".join(f"{o['name']}: {o['type']} = {o['default']!r}" for o in m["options"])
        shipped = f"{m['shipped']} (--pretrained synthetic)" if m["shipped"] else ""
        cells = (name, m["task"], m["summary"], opts, _recipe_text(m["recipe"]), shipped)
        t.add_row(*(esc(c) for c in cells))
    show(t)


def _recipe_text(recipe: dict, prefix: str = "") -> str:
    """``batch=8, augment.mosaic=0.5``: the TrainConfig fields a model's recipe sets."""
    parts = []
    for k, v in recipe.items():
        if isinstance(v, dict):
            parts.append(_recipe_text(v, f"{prefix}{k}."))
        else:
            parts.append(f"{prefix}{k}={v}")
    return ", ".join(parts)


def train(
    config: Path = typer.Option(None, help="YAML with any training field; options override it."),
    resume: Path = typer.Option(
        None, help="Continue a run (runs/train/NAME); may change --epochs, --device, --workers."
    ),
    set_: list[str] = typer.Option(
        None, "--set", help="Any field as key=value, e.g. augment.mosaic=0.5 (repeatable)."
    ),
    **fields,
):
    """Train a detector (or a classifier: class folders or --task classify); each run gets
    its own folder. Every option is a TrainConfig field (`detforge train --config run.yaml`
    takes the same names)."""
    overrides = {k: v for k, v in fields.items() if v is not None}
    overrides.update(parse_sets(set_))
    if resume is not None:
        if config is not None:
            raise DetforgeError("--resume uses the run's saved config", "drop --config")
        result = detforge.train(resume=resume, console=out, **overrides)
    else:
        result = detforge.train(config, console=out, **overrides)
    label = detforge.api.task_info(result["task"]).fitness_label
    best = (
        f"best {label} {result['best']:.4f} (epoch {result['best_epoch']})"
        if result["best_epoch"] >= 1
        else "no epoch finished yet"
    )
    out.print(f"{best}; weights in [bold]{esc(result['run_dir'])}/weights[/]")


def _register_train() -> None:
    extra = config_options(detforge.api.train_config(), skip=("model_options", "augment"))
    app.command("train")(with_options(train, extra))


_register_train()


@app.command("eval")
def eval_cmd(
    weights: Path = typer.Argument(..., help="best.pt / last.pt or an exported .onnx."),
    data: str = typer.Option(..., help="Dataset or data.yaml."),
    split: str = typer.Option(
        None,
        help="Split of a data.yaml (default val); for data without splits, train or val as "
        "the run that wrote the .pt held them out (default: all of it).",
    ),
    conf: float = typer.Option(
        None,
        help="Confidence for precision, recall, confusion (default: the threshold measured "
        "for the model).",
    ),
    iou: float = typer.Option(0.5, help="IoU for a match at that confidence."),
    batch: int = typer.Option(8, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto (a GPU when there is one), cpu, cuda, mps."),
    out_dir: Path = typer.Option(
        None, "--out", help="Folder for the results (default: a new PROJECT/eval/NAME)."
    ),
    project: Path = typer.Option(Path("runs"), help="Where new run folders go."),
    name: str = typer.Option("exp", help="Run name under PROJECT/eval/."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object."),
    allow_outside: bool = typer.Option(
        False, "--allow-outside-paths", help="Follow image paths that leave the dataset folder."
    ),
):
    """Detectors: COCO mAP, per-class AP, precision/recall at --conf, PR curve, confusion
    matrix, and the scored detections as COCO files. Classifiers: top-1/top-5, per class."""
    m = detforge.evaluate(
        weights,
        data,
        split=split,
        conf=conf,
        iou=iou,
        batch=batch,
        device=device,
        out=out_dir,
        project=project,
        name=name,
        progress=not as_json,
        allow_outside_paths=allow_outside,
    )
    if as_json:
        print(json.dumps({k: v for k, v in m.items() if k != "confusion"}))
        return
    _print_eval(m)


@app.command()
def report(
    run: Path = typer.Argument(..., help="A run folder: runs/train/NAME or runs/eval/NAME."),
    device: str = typer.Option("auto", help="auto (a GPU when there is one), cpu, cuda, mps."),
):
    """Write (again) the run's report.html: what it was, its curves, the evaluation, and its
    validation images with ground truth and predictions, worst first. train and eval write
    it themselves; this one re-scores the run's weights."""
    page = detforge.report(run, device=device, progress=True)
    out.print(f"report: [bold]{esc(page)}[/] (open it in a browser)")


def _print_eval(m: dict) -> None:
    t = detforge.api.task_info(m["task"])
    if t.name == "classify":
        cols, keys = ("class", "precision", "recall", "F1", "images"), ("precision", "recall", "f1")
        title = f"{m['split']}: {m['images']} images"
        count = "support"
    else:
        cols = ("class", "AP50-95", "AP50", f"P@{m['conf']}", f"R@{m['conf']}")
        keys = ("AP50-95", "AP50", "precision", "recall")
        title = f"{m['split']}: {m['images']} images ({m['negatives']} negatives)"
        count = None
    table = Table(title=title)
    for col in cols:
        table.add_column(col)
    for c, v in m["per_class"].items():
        table.add_row(esc(c), *(f"{v[k]:.3f}" for k in keys), *([str(v[count])] if count else []))
    show(table)
    if t.name == "detect":
        line = f"conf {m['conf']:g}: precision {m['precision']:.2f}, recall {m['recall']:.2f}"
        th = m.get("threshold")
        if th:
            line += (f"; best F1 here {th['f1']:.2f} at conf {th['conf']:g} (precision "
                     f"{th['precision']:.2f}, recall {th['recall']:.2f})")  # fmt: skip
        out.print(f"{line} on {m['split']}")
    out.print(f"{t.headline(m)}; results in [bold]{esc(m['run_dir'])}[/]")
    if m.get("report"):
        out.print(f"report: [bold]{esc(m['report'])}[/]")


@app.command()
def export(
    weights: Path = typer.Argument(..., help="A .pt checkpoint."),
    fmt: str = typer.Option(
        "onnx", "--format", help="onnx, or openvino (an IR .xml + .bin; pip install openvino)."
    ),
    out_file: Path = typer.Option(None, "--out", help="File to write (default: by the weights)."),
    output: Path = typer.Option(None, hidden=True, help="Before 0.1.0: --out."),
    imgsz: int = typer.Option(None, help="Input size (default: the training size)."),
    batch: int = typer.Option(1, help="Fixed batch of the graph."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Free batch dimension."),
    opset: int = typer.Option(17, help="ONNX opset."),
    nms: bool = typer.Option(True, "--nms/--no-nms", help="NMS inside the graph."),
    overwrite: bool = typer.Option(False, help="Replace an existing file."),
    int8: bool = typer.Option(
        False,
        "--int8",
        help="Also write NAME-int8.onnx (onnxruntime static INT8) or NAME-int8.xml (OpenVINO: "
        "NNCF post-training quantization), calibrated on training images, and print its mAP "
        "change and speedup on the val split (OpenVINO on a CPU with bf16 units: bf16's too).",
    ),
    data: str = typer.Option(None, help="With --int8: the training data (default: the run's)."),
):
    """Export to ONNX or OpenVINO (uint8 input, preprocessing and NMS inside) and check it
    against PyTorch."""
    if fmt not in ("onnx", "openvino"):
        raise DetforgeError(f"unknown export format {fmt!r}", "use --format onnx or openvino")
    kw = dict(imgsz=imgsz, batch=batch, opset=opset, nms=nms, overwrite=overwrite)
    kw.update(int8=int8, data=data)
    if fmt == "onnx":
        kw.update(dynamic_batch=dynamic_batch)
    elif dynamic_batch:
        raise DetforgeError("--dynamic-batch is an ONNX option", "drop it for --format openvino")
    r = detforge.export(weights, renamed(out_file, output, "--output"), format=fmt, **kw)
    p = r["parity"]
    check = (
        f"{p['detections']} detections matched, worst IoU {p['worst_iou']}, worst score diff "
        f"{p['worst_score_diff']}"
        if "detections" in p
        else f"{p['images']} images, max probability diff {p['max_prob_diff']}, same top-1"
    )
    post = f", NMS {'inside' if r['nms'] else 'left out'}" if "detections" in p else ""
    out.print(
        f"wrote [bold]{esc(r['path'])}[/] (input uint8 {r['batch']}x3x{r['imgsz']}x{r['imgsz']}"
        f"{post})\nparity with PyTorch: {check}"
    )
    if "int8" in r:
        q = r["int8"]
        out.print(
            f"wrote [bold]{esc(q['path'])}[/] (INT8, calibrated on {q['calibration_images']} "
            f"training images)\n{q['val_split']} {q['metric']}: fp32 {q['fp32']:.4f}, int8 "
            f"{q['int8']:.4f} ({q['change']:+.4f}); {q['ms_fp32']:.1f} -> {q['ms_int8']:.1f} "
            f"ms/image: {q['speedup']:.2f}x"
        )
    if "bf16" in r:  # a CPU with bf16 units: the other faster choice, nothing to write
        b = r["bf16"]
        out.print(
            f"bf16 on this CPU (--precision bf16): {b['val_split']} {b['metric']} "
            f"{b['bf16']:.4f} ({b['change']:+.4f}); {b['ms_fp32']:.1f} -> {b['ms_bf16']:.1f} "
            f"ms/image: {b['speedup']:.2f}x"
        )


@app.command()
def demo(
    project: Path = typer.Option(Path("runs"), help="Where run folders go."),
    n: int = typer.Option(None, help="Synthetic images (default 240; classify: 300)."),
    epochs: int = typer.Option(12, help="Training epochs (0 skips training)."),
    imgsz: int = typer.Option(None, help="Training image size (default 320; classify: 64)."),
    task: str = typer.Option("detect", help="detect (det-n on boxes) or classify (resnet18)."),
):
    """Synthesize, check, split, pack, train, evaluate, export to ONNX, run on a video."""
    summary = detforge.run_demo(project, n=n, epochs=epochs, imgsz=imgsz, console=out, task=task)
    out.print(f"\n[bold green]demo done[/]: everything is in [bold]{esc(summary['run_dir'])}[/]")


def _warning_line(message, category, filename, lineno, file=None, line=None):
    err.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends a command as Ctrl-C does: cleanly, resumable


def main() -> None:
    shown = warnings.showwarning
    if not _state["verbose"] and "-v" not in sys.argv and "--verbose" not in sys.argv:
        warnings.showwarning = _warning_line  # one line per warning, no source location
    old = None
    with contextlib.suppress(ValueError):  # not the main thread
        old = signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except DetforgeError as e:
        if _state["verbose"]:
            raise
        err.print(f"[red]error:[/] {escape(e.message)}", highlight=False)
        if e.hint:  # escaped: "detforge[ray]" and paths with brackets are text, not markup
            err.print(f"[yellow]hint:[/] {escape(e.hint)}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; re-run the same command to resume where it can")
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if _state["verbose"]:
            raise
        _unexpected(e)
    finally:  # main() called from Python (tests, notebooks) leaves the process as it was
        warnings.showwarning = shown
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _unexpected(e: BaseException) -> None:
    """Anything that is not a DetforgeError: one line, never a traceback without --verbose."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        e = DiskFullError(e.filename or "output", limit=e.errno == errno.EFBIG)
        err.print(f"[red]error:[/] {escape(e.message)}\n[yellow]hint:[/] {escape(e.hint)}",
                  highlight=False)  # fmt: skip
        sys.exit(2)
    if isinstance(e, OSError) and e.filename:
        err.print(f"[red]error:[/] {escape(str(e.filename))}: {e.strerror}", highlight=False)
        sys.exit(2)
    if isinstance(e, MemoryError):
        err.print(
            "[red]error:[/] out of memory\n[yellow]hint:[/] use a smaller --batch or --imgsz, "
            "or fewer --workers",
            highlight=False,
        )
        sys.exit(2)
    err.print(
        f"[red]error:[/] unexpected {type(e).__name__}: "
        f"{escape(str(e).splitlines()[0]) if str(e) else ''}"
        "\n[yellow]hint:[/] run again with --verbose for the traceback, and please report it",
        highlight=False,
    )
    sys.exit(3)


if __name__ == "__main__":
    main()
