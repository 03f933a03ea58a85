"""``detforge demo``: the pipeline on a synthetic dataset, end to end, in one run folder."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from detforge import api
from detforge.fileio import atomic_write_json
from detforge.runs import new_run_dir

# what differs between the two demos: data format, model, image sizes, learning rate
TASKS = {
    "detect": {
        "format": "yolo",
        "model": "ssdlite",
        "n": 240,
        "size": 320,
        "imgsz": 320,
        "lr": 3e-3,
    },
    "classify": {
        "format": "folders",
        "model": "resnet18",
        "n": 300,
        "size": 64,
        "imgsz": 64,
        "lr": 1e-3,
    },
}


def run_demo(
    project="runs",
    n: int | None = None,
    seed: int = 0,
    epochs: int = 12,
    imgsz: int | None = None,
    console: Console | None = None,
    task: str = "detect",
) -> dict:
    """Synthesize ``n`` images, check, split 70/15/15, pack each split, write stats, train
    for ``epochs`` epochs on the CPU (0 stops there), evaluate on the test split, export to
    ONNX and run the ONNX model (on a synthetic video; a classifier on the test images).
    ``task`` detect trains ssdlite on boxes, classify trains resnet18 on class folders.
    Returns a summary (also saved as ``summary.json`` in the run folder)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    t = TASKS[task]
    n, imgsz = n or t["n"], imgsz or t["imgsz"]
    say = (console or Console()).print
    run = new_run_dir("demo", "exp" if task == "detect" else "classify", project)
    steps = 9 if epochs else 5
    say(f"[bold]1/{steps} synthesize[/] {n} images ({t['format']}) -> {run / 'dataset'}")
    ds = api.synth(run / "dataset", n, t["format"], seed=seed, size=t["size"])
    say(f"[bold]2/{steps} check[/]")
    report = api.check(ds, progress=False)
    say(f"    {report.errors} errors, {report.count('warning')} warnings")
    say(f"[bold]3/{steps} split[/] 0.7/0.15/0.15")
    parts = api.split(ds, run / "splits", seed=seed, images="link")
    say(f"[bold]4/{steps} pack[/] sharded TFRecords")
    packed = {}
    for name, part in parts.items():
        index = api.pack(part, run / "shards" / name, shard_size="2MB", progress=False)
        packed[name] = {"records": index["records"], "shards": len(index["shards"])}
        say(f"    {name}: {index['records']} records in {len(index['shards'])} shards")
    say(f"[bold]5/{steps} stats[/]")
    stats = api.stats(ds)
    api.show(ds, run / "samples.png", n=16, seed=seed)
    if task == "classify":
        say(f"    {stats['images']} images, class imbalance {stats.get('imbalance')}x")
    else:
        say(f"    {stats['images']} images, {stats['boxes']} boxes, {stats['negatives']} negatives")
    summary = {
        "task": task,
        "run_dir": str(run),
        "images": stats["images"],
        "boxes": stats["boxes"],
        "negatives": stats["negatives"],
        "classes": stats["classes"],
        "check": {"errors": report.errors, "warnings": report.count("warning")},
        "splits": {k: len(v) for k, v in parts.items()},
        "shards": packed,
    }
    if epochs:
        from detforge.engine.train import train

        say(f"[bold]6/{steps} train[/] {t['model']}, {epochs} epochs at {imgsz} px on the CPU")
        result = train(
            data=str(run / "splits" / "data.yaml"),
            model=t["model"],
            epochs=epochs,
            imgsz=imgsz,
            batch=8,
            workers=2,
            lr=t["lr"],
            project=str(run),
            name="exp",
            seed=seed,
            console=console,
        )
        summary["train"] = {k: result[k] for k in ("run_dir", "epochs", "best_map", "best_epoch")}
        metric = "top-1" if task == "classify" else "mAP50-95"
        say(
            f"    best val {metric} {result['best_map']:.3f} (epoch {result['best_epoch']}); "
            f"weights, metrics.csv and plots in {result['run_dir']}"
        )
        deploy = _deploy_classifier if task == "classify" else _deploy
        summary.update(deploy(run, result["run_dir"], seed, say, steps))
    atomic_write_json(run / "summary.json", summary)
    say(f"    grid of samples: {run / 'samples.png'}; summary: {run / 'summary.json'}")
    if "eval" in summary and task == "classify":
        e = summary["eval"]
        say(f"[bold]reached[/] test top-1 {e['top1']:.3f}; predictions: {e['predictions']}")
    elif "eval" in summary:
        e = summary["eval"]
        say(
            f"[bold]reached[/] test mAP50 {e['mAP50']:.3f}, mAP50-95 {e['mAP50-95']:.3f}; "
            f"annotated video: {summary['video']['video']}"
        )
    return summary


def _deploy(run: Path, train_dir: str, seed: int, say, steps: int) -> dict:
    """Evaluate best.pt on the test split, export it to ONNX, run the ONNX model on a
    synthetic video."""
    from detforge.data.synth import video
    from detforge.engine.evaluate import evaluate
    from detforge.engine.export import export_onnx
    from detforge.engine.outputs import predict_files
    from detforge.engine.predict import load

    best = Path(train_dir) / "weights" / "best.pt"
    say(f"[bold]7/{steps} evaluate[/] {best.name} on the test split")
    m = evaluate(best, run / "splits" / "data.yaml", split="test", project=run, name="test")
    say(
        f"    test mAP50 {m['mAP50']:.3f}, mAP50-95 {m['mAP50-95']:.3f}, precision "
        f"{m['precision']:.3f}, recall {m['recall']:.3f} at conf 0.25; plots in {m['run_dir']}"
    )
    say(f"[bold]8/{steps} export[/] ONNX (uint8 input, NMS inside) and check it against PyTorch")
    ex = export_onnx(best, run / "model.onnx")
    p = ex["parity"]
    say(f"    {ex['path']}: {p['detections']} detections agree (worst IoU {p['worst_iou']})")
    say(f"[bold]9/{steps} predict[/] with the ONNX model on a synthetic video")
    src, _, _ = video(run / "video.mp4", frames=150, size=(320, 240), seed=seed)
    out = run / "predict"
    out.mkdir()
    v = predict_files(load(ex["path"]), str(src), out, progress=False)
    say(f"    {v['frames']} frames at {v['fps']:.1f} frames/s -> {v['video']}")
    keys = ("mAP50-95", "mAP50", "precision", "recall", "run_dir")
    return {
        "eval": {k: m[k] for k in keys},
        "onnx": {"path": ex["path"], "parity": p},
        "video": {k: v[k] for k in ("frames", "fps", "video", "predictions")},
    }


def _deploy_classifier(run: Path, train_dir: str, seed: int, say, steps: int) -> dict:
    """Evaluate best.pt on the test split, export it to ONNX, classify the test images with
    the ONNX model."""
    from detforge.engine.evaluate import evaluate
    from detforge.engine.export import export_onnx
    from detforge.engine.outputs import predict_files
    from detforge.engine.predict import load

    best = Path(train_dir) / "weights" / "best.pt"
    say(f"[bold]7/{steps} evaluate[/] {best.name} on the test split")
    m = evaluate(best, run / "splits" / "data.yaml", split="test", project=run, name="test")
    say(f"    test top-1 {m['top1']:.3f}, top-5 {m['top5']:.3f}; confusion matrix and")
    say(f"    misclassified examples in {m['run_dir']}")
    say(f"[bold]8/{steps} export[/] ONNX (uint8 input, softmax inside) and check it")
    ex = export_onnx(best, run / "model.onnx", dynamic_batch=True)
    p = ex["parity"]
    say(f"    {ex['path']}: max probability diff {p['max_prob_diff']:.2e}, same top-1")
    say(f"[bold]9/{steps} predict[/] with the ONNX model on the test images")
    out = run / "predict"
    v = predict_files(load(ex["path"]), str(run / "splits" / "test"), out, progress=False)
    say(f"    {v['frames']} images at {v['fps']:.1f} images/s -> {v['predictions']}")
    return {
        "eval": {"top1": m["top1"], "top5": m["top5"], "predictions": v["predictions"]},
        "onnx": {"path": ex["path"], "parity": p},
    }


__all__ = ["TASKS", "run_demo"]
