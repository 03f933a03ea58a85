"""``detforge predict`` (one process, tracking, or Ray Data) and ``detforge eval-track``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

import detforge
from detforge.cli.common import err, esc, out, renamed
from detforge.errors import DetforgeError

SAVE_CVAT = typer.Option(
    False, "--save-cvat", help="Write cvat_annotations.xml: boxes to upload to a CVAT task."
)
SAVE_LABELSTUDIO = typer.Option(
    False,
    "--save-labelstudio",
    help="Write labelstudio_tasks.json: tasks with the boxes as Label Studio predictions.",
)
PRECISION = typer.Option(
    "f32",
    help="What an OpenVINO model (.xml) computes in: f32, or bf16 / f16 where the CPU has "
    "them (faster; the accuracy change is printed by export --format openvino).",
)
RECONNECT = typer.Option(
    -1,
    help="Network streams (rtsp://, http://): reconnect this many times after a drop or "
    "stall (-1: for ever).",
)


TRACK = typer.Option(
    False,
    "--track",
    help="Keep an id per object across frames (ByteTrack): ids in the "
    "table, ids and trails on the video, tracks.txt in MOTChallenge format.",
)
RAY = typer.Option(
    False,
    "--ray",
    help="Run on Ray Data: a pool of model actors, one row per image "
    "(pip install 'detforge\\[ray]').",
)


def predict(
    weights: Path = typer.Argument(..., help="best.pt, an exported .onnx or OpenVINO .xml."),
    source: str = typer.Option(
        ...,
        help="Image, folder, glob, video file or camera index (with --ray: also a URI "
        "Ray reads, such as s3://bucket/images/).",
    ),
    out_dir: Path = typer.Option(
        None, "--out", help="Output folder (default: a new PROJECT/predict/NAME)."
    ),
    save_dir: Path = typer.Option(None, "--save-dir", hidden=True, help="Before 0.1.0: --out."),
    project: Path = typer.Option(Path("runs"), help="Where new run folders go."),
    name: str = typer.Option("exp", help="Run name under PROJECT/predict/."),
    conf: float = typer.Option(
        None, help="Minimum score (default: the threshold measured for the model)."
    ),
    iou: float = typer.Option(
        detforge.Thresholds.iou, help="Class-wise NMS IoU threshold (1: no NMS beyond the model's)."
    ),
    max_det: int = typer.Option(detforge.Thresholds.max_det, help="Most boxes kept an image."),
    batch: int = typer.Option(4, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto (a GPU when there is one), cpu, cuda, mps."),
    precision: str = PRECISION,
    fmt: str = typer.Option(
        "jsonl",
        "--format",
        help="Predictions file: jsonl, csv or coco (with --ray: jsonl or parquet).",
    ),
    no_save: bool = typer.Option(False, "--no-save", help="Do not write annotated images/video."),
    save_labelme: bool = typer.Option(
        False, "--save-labelme", help="Write a labelme JSON beside each image (kept if present)."
    ),
    overwrite_labelme: bool = typer.Option(False, help="Replace existing labelme JSON files."),
    save_cvat: bool = SAVE_CVAT,
    save_labelstudio: bool = SAVE_LABELSTUDIO,
    show: bool = typer.Option(False, "--show", help="Live window (needs a display)."),
    reconnect: int = RECONNECT,
    track: bool = TRACK,
    ray: bool = RAY,
    address: str = typer.Option(
        None, help="With --ray: an existing cluster (auto, ray://HEAD:10001); default a local Ray."
    ),
    actors: int = typer.Option(None, help="With --ray: models at once (default: CPUs / 4)."),
):
    """Detect objects (or classify images) in images, folders, videos or a webcam; the model
    loads once. --track follows objects across video frames; --ray spreads a corpus over a
    Ray cluster."""
    save_dir = renamed(out_dir, save_dir, "--save-dir")
    if ray:
        _predict_on_ray(locals())
        return
    if address or actors:
        raise DetforgeError("--address and --actors go with --ray", "add --ray or drop them")
    s = detforge.predict(
        weights,
        source,
        out=save_dir,
        project=project,
        name=name,
        device=device,
        precision=precision,
        conf=conf,
        iou=iou,
        max_det=max_det,
        batch=batch,
        fmt=fmt,
        save=not no_save,
        save_labelme=save_labelme,
        overwrite_labelme=overwrite_labelme,
        save_cvat=save_cvat,
        save_labelstudio=save_labelstudio,
        reconnect=None if reconnect < 0 else reconnect,
        show=show,
        track=track,
    )
    _print_summary(s, track, save_labelme)


def _print_summary(s: dict, track: bool, save_labelme: bool) -> None:
    for k in s["skipped"]:
        err.print(f"[yellow]skipped[/] {escape(k['source'])}: {escape(k['error'])}",
                  highlight=False)  # fmt: skip
    counted = detforge.api.task_info(s["task"]).counted
    per = ", ".join(f"{c} {k}" for c, k in s["counts"].items()) or "none"
    out.print(f"{s['frames']} images/frames, {counted}: {per}, {s['fps']} frames/s")
    if "stream" in s:
        st = s["stream"]
        out.print(
            f"stream: {st['received']} frames received, {st['processed']} processed, "
            f"{st['dropped']} dropped (the model was behind), {st['reconnects']} reconnects "
            f"({st['gap_s']:g} s without frames)"
            + (f"; frame to result p50 {st['latency_ms_p50']} ms, p99 {st['latency_ms_p99']} ms"
               if "latency_ms_p50" in st else "")
        )  # fmt: skip
    if track:
        out.print(f"{s['track_ids']} tracks; MOTChallenge file [bold]{esc(s['tracks'])}[/]")
    if s["labelme_written"] or save_labelme:
        kept = s.get("labelme_kept", 0)
        keep = f", {kept} existing kept (--overwrite-labelme replaces them)" * bool(kept)
        out.print(f"labelme files written beside the images: {s['labelme_written']}{keep}")
    for path in s.get("preannotations", []):
        out.print(f"pre-annotations: [bold]{esc(path)}[/]")
    out.print(f"results in [bold]{esc(s['save_dir'])}[/]")


def _predict_on_ray(a: dict) -> None:
    flags = ("track", "show", "save_labelme", "overwrite_labelme", "save_cvat", "save_labelstudio")
    unused = [f for f in flags if a[f]]
    if unused:
        flags = ", ".join("--" + f.replace("_", "-") for f in unused)
        raise DetforgeError(f"{flags}: not with --ray, which writes one row per image",
                            "drop them, or predict without --ray")  # fmt: skip
    device = "cpu" if a["device"] == "auto" else a["device"]
    s = detforge.predict_dataset(
        a["weights"], a["source"], a["save_dir"], project=a["project"], name=a["name"],
        fmt=a["fmt"], address=a["address"], actors=a["actors"], device=device,
        batch=a["batch"], conf=a["conf"], iou=a["iou"], max_det=a["max_det"],
    )  # fmt: skip
    for e in s["errors"][:20]:
        err.print(f"[yellow]could not read[/] {escape(e['source'])}: {escape(e['error'])}",
                  highlight=False)  # fmt: skip
    bad = len(s["errors"])
    out.print(
        f"{s['images']} images, {bad} could not be read, {s['images_per_s']} images/s on "
        f"{s['actors']} actors x {s['threads']} threads"
    )
    out.print(f"results in [bold]{esc(s['out'])}[/] ({s['format']})")


def eval_track(
    pred: Path = typer.Argument(
        ..., help="Tracks in MOTChallenge format (predict --track writes tracks.txt)."
    ),  # fmt: skip
    gt: Path = typer.Argument(..., help="Ground truth in MOTChallenge format (gt.txt)."),
    iou: float = typer.Option(0.5, help="IoU a track's box needs to match a true box."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Score tracks against ground truth (motmetrics): MOTA, IDF1, ID switches and more."""
    m = detforge.evaluate_tracks(pred, gt, iou=iou)
    if as_json:
        import json

        out.print_json(json.dumps(m))
        return
    out.print(
        f"MOTA {m['mota']:.4f}  IDF1 {m['idf1']:.4f}  ID switches {m['id_switches']}  "
        f"MOTP (IoU) {m['motp_iou']:.4f}"
    )
    out.print(
        f"{m['frames']} frames, {m['objects']} true objects ({m['mostly_tracked']} mostly "
        f"tracked, {m['mostly_lost']} mostly lost), {m['tracks']} tracks; "
        f"{m['false_positives']} false positives, {m['misses']} misses; precision "
        f"{m['precision']:.4f}, recall {m['recall']:.4f}"
    )


def serve(
    weights: Path = typer.Argument(..., help="best.pt, an exported .onnx or OpenVINO .xml."),
    host: str = typer.Option(
        "127.0.0.1", help="Address to bind (another than loopback needs --api-key or --insecure)."
    ),  # fmt: skip
    port: int = typer.Option(8000, help="Port."),
    api_key: str = typer.Option(
        None, "--api-key", envvar="DETFORGE_API_KEY", help="Key clients send as X-API-Key."
    ),
    insecure: bool = typer.Option(False, "--insecure", help="Serve another address without a key."),
    max_body_mb: float = typer.Option(32.0, help="Largest request body, MB."),
    timeout: float = typer.Option(30.0, help="Seconds a request may take."),
    batch: int = typer.Option(8, min=1, help="Images from concurrent requests run together."),
    wait_ms: float = typer.Option(
        0.0, help="How long a batch waits to fill, ms (0: it takes what queued meanwhile)."
    ),
    device: str = typer.Option("auto", help="auto (a GPU when there is one), cpu, cuda, mps."),
    precision: str = PRECISION,
    ray: bool = typer.Option(
        False, "--ray", help="Deploy on Ray Serve (pip install 'detforge\\[ray]')."
    ),
    address: str = typer.Option(
        None, help="With --ray: a Ray cluster's address (default: a local Ray)."
    ),
    replicas: int = typer.Option(1, min=1, help="With --ray: copies of the model."),
):
    """Serve a model over HTTP: POST /predict (an image as the body, or multipart files),
    GET /model, GET /health, and a page at / to try it. SIGTERM finishes the requests in
    flight and exits. --ray deploys the same service on Ray Serve."""
    if not ray and (address or replicas != 1):
        raise DetforgeError("--address and --replicas go with --ray", "add --ray or drop them")
    extra = {"ray": True, "address": address, "replicas": replicas} if ray else {}
    detforge.api.serve(
        weights, host=host, port=port, device=device, precision=precision, insecure=insecure,
        api_key=api_key,
        max_body=int(max_body_mb * (1 << 20)), timeout=timeout, batch=batch, wait_ms=wait_ms,
        say=out.print, **extra,
    )  # fmt: skip
