"""``detforge demo``: the pipeline on a synthetic dataset, end to end, in one run folder, as a
list of steps. Each step takes the demo's context (settings, run folder, what earlier steps
made) and prints one or two lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from detforge import api
from detforge.fileio import atomic_write_json
from detforge.runs import new_run_dir

# what differs between the two demos: data format, model, image sizes, learning rate
TASKS = {
    "detect": {"format": "yolo", "model": "det-n", "n": 240, "size": 320, "imgsz": 320,
               "lr": None, "batch": None, "run": "exp"},  # det-n's own recipe
    "classify": {"format": "folders", "model": "resnet18", "n": 300, "size": 64, "imgsz": 64,
                 "lr": 1e-3, "batch": 8, "run": "classify"},
}  # fmt: skip


@dataclass
class Demo:
    task: str
    run: Path
    n: int
    imgsz: int
    epochs: int
    seed: int
    say: object
    console: Console
    summary: dict = field(default_factory=dict)
    dataset: object = None  # what synthesize made
    parts: dict = field(default_factory=dict)  # what split made

    @property
    def setting(self) -> dict:
        return TASKS[self.task]

    @property
    def best(self) -> Path:
        return Path(self.summary["train"]["run_dir"]) / "weights" / "best.pt"


def synthesize(d: Demo) -> None:
    d.say(f"    {d.n} images ({d.setting['format']}) -> {d.run / 'dataset'}")
    d.dataset = api.synth(d.run / "dataset", d.n, d.setting["format"], seed=d.seed,
                          size=d.setting["size"])  # fmt: skip


def check(d: Demo) -> None:
    report = api.check(d.dataset, progress=False)
    d.say(f"    {report.errors} errors, {report.count('warning')} warnings")
    d.summary["check"] = {"errors": report.errors, "warnings": report.count("warning")}


def split(d: Demo) -> None:
    parts = api.split(d.dataset, d.run / "splits", seed=d.seed, images="link")
    d.say("    " + ", ".join(f"{k} {len(v)}" for k, v in parts.items()))
    d.summary["splits"] = {k: len(v) for k, v in parts.items()}
    d.parts = parts


def pack(d: Demo) -> None:
    index = api.pack(
        d.run / "splits" / "data.yaml", d.run / "shards", shard_size="2MB", progress=False
    )  # each split into its own folder, plus a data.yaml
    packed = {}
    for name, part in index["splits"].items():
        packed[name] = {"records": part["records"], "shards": len(part["shards"])}
        d.say(f"    {name}: {part['records']} records in {len(part['shards'])} shards")
    d.summary["shards"] = packed


def stats(d: Demo) -> None:
    s = api.stats(d.dataset)
    api.show(d.dataset, d.run / "samples.png", n=16, seed=d.seed)
    if d.task == "classify":
        d.say(f"    {s['images']} images, class imbalance {s.get('imbalance')}x")
    else:
        d.say(f"    {s['images']} images, {s['boxes']} boxes, {s['negatives']} negatives")
    d.summary.update({k: s[k] for k in ("images", "boxes", "negatives", "classes")})


def train(d: Demo) -> None:
    t = d.setting
    d.say(f"    {t['model']}, {d.epochs} epochs at {d.imgsz} px on the CPU")
    r = api.train(data=str(d.run / "splits" / "data.yaml"), model=t["model"], epochs=d.epochs,
                  imgsz=d.imgsz, batch=t["batch"], lr=t["lr"], project=str(d.run),
                  name="exp", seed=d.seed, console=d.console)  # fmt: skip
    keys = ("run_dir", "epochs", "metric", "best", "best_epoch", "report")
    d.summary["train"] = {k: r[k] for k in keys}
    label = api.task_info(r["task"]).fitness_label
    d.say(f"    best val {label} {r['best']:.3f} (epoch {r['best_epoch']}); weights, "
          f"metrics.csv and plots in {r['run_dir']}")  # fmt: skip


def evaluate(d: Demo) -> None:
    m = api.evaluate(d.best, d.run / "splits" / "data.yaml", split="test", project=d.run,
                     name="test")  # fmt: skip
    d.say(f"    test {api.task_info(m['task']).headline(m)}; report in {m['run_dir']}")
    keys = ("mAP50-95", "mAP50", "precision", "recall", "top1", "top5", "run_dir", "report")
    d.summary["eval"] = {k: m[k] for k in keys if k in m}


def export(d: Demo) -> None:
    ex = api.export(d.best, d.run / "model.onnx", dynamic_batch=d.task == "classify")
    d.say(f"    {ex['path']}: parity with PyTorch {ex['parity']}")
    d.summary["onnx"] = {"path": ex["path"], "parity": ex["parity"]}


def predict(d: Demo) -> None:
    if d.task == "classify":
        v = api.predict(d.summary["onnx"]["path"], str(d.run / "splits" / "test"),
                        out=d.run / "predict", progress=False)  # fmt: skip
        d.say(f"    {v['frames']} images at {v['fps']:.1f} images/s -> {v['save_dir']}")
        d.summary["predict"] = {k: v[k] for k in ("frames", "fps", "predictions")}
        return
    clip = api.synth_video(d.run / "video", 150, seed=d.seed)
    track = _can_track()
    v = api.predict(d.summary["onnx"]["path"], clip["video"], out=d.run / "predict",
                    progress=False, track=track)  # fmt: skip
    d.say(f"    {v['frames']} frames at {v['fps']:.1f} frames/s -> {v['video']}")
    d.summary["predict"] = {k: v[k] for k in ("frames", "fps", "video", "predictions", "tracks")}
    if not track:
        d.say("    (pip install 'detforge[track]' to follow the shapes across frames)")
        return
    m = api.evaluate_tracks(v["tracks"], clip["gt"])
    d.say(f"    tracked against the video's ground truth: MOTA {m['mota']:.3f}, IDF1 "
          f"{m['idf1']:.3f}, {m['id_switches']} ID switches, {m['tracks']} tracks for "
          f"{m['objects']} objects")  # fmt: skip
    d.summary["track"] = {k: m[k] for k in ("mota", "idf1", "id_switches", "tracks", "objects")}


def _can_track() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("supervision", "motmetrics"))


DATA_STEPS = [synthesize, check, split, pack, stats]
MODEL_STEPS = [train, evaluate, export, predict]


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
    ``task`` detect trains det-n on boxes, classify trains resnet18 on class folders.
    Returns a summary (also saved as ``summary.json`` in the run folder)."""
    api.task_info(task)  # an unknown task fails here, before any work
    t = TASKS[task]
    console = console or Console()
    run = new_run_dir("demo", t["run"], project)
    d = Demo(task, run, n or t["n"], imgsz or t["imgsz"], epochs, seed, console.print, console)
    d.summary.update(task=task, run_dir=str(run))
    steps = DATA_STEPS + (MODEL_STEPS if epochs else [])
    for k, step in enumerate(steps, start=1):
        console.print(f"[bold]{k}/{len(steps)} {step.__name__}[/]")
        step(d)
    atomic_write_json(run / "summary.json", d.summary)
    d.say(f"    grid of samples: {run / 'samples.png'}; summary: {run / 'summary.json'}")
    if "eval" in d.summary:
        head = api.task_info(task).headline(d.summary["eval"])
        d.say(f"[bold]reached[/] test {head}; predictions in {d.summary['predict']['predictions']}")
    pages = [d.summary.get(k, {}).get("report") for k in ("train", "eval")]
    if any(pages):
        d.say("    open in a browser: " + ", ".join(str(p) for p in pages if p))
    return d.summary


__all__ = ["TASKS", "run_demo"]
