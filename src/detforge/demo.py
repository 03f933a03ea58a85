"""``detforge demo``: the pipeline on a synthetic dataset, end to end, in one run folder."""

from __future__ import annotations

from rich.console import Console

from detforge import api
from detforge.fileio import atomic_write_json
from detforge.runs import new_run_dir


def run_demo(project="runs", n: int = 240, seed: int = 0, console: Console | None = None) -> dict:
    """Synthesize ``n`` images, check, split 70/15/15, pack each split, and write stats.
    Returns a summary (also saved as ``summary.json`` in the run folder)."""
    say = (console or Console()).print
    run = new_run_dir("demo", "exp", project)
    say(f"[bold]1/5 synthesize[/] {n} images -> {run / 'dataset'}")
    ds = api.synth(run / "dataset", n, "yolo", seed=seed)
    say("[bold]2/5 check[/]")
    report = api.check(ds, progress=False)
    say(f"    {report.errors} errors, {report.count('warning')} warnings")
    say("[bold]3/5 split[/] 0.7/0.15/0.15")
    parts = api.split(ds, run / "splits", seed=seed, images="link")
    say("[bold]4/5 pack[/] sharded TFRecords")
    packed = {}
    for name, part in parts.items():
        index = api.pack(part, run / "shards" / name, shard_size="2MB", progress=False)
        packed[name] = {"records": index["records"], "shards": len(index["shards"])}
        say(f"    {name}: {index['records']} records in {len(index['shards'])} shards")
    say("[bold]5/5 stats[/]")
    stats = api.stats(ds)
    api.show(ds, run / "samples.png", n=16, seed=seed)
    summary = {
        "run_dir": str(run),
        "images": stats["images"],
        "boxes": stats["boxes"],
        "negatives": stats["negatives"],
        "classes": stats["classes"],
        "check": {"errors": report.errors, "warnings": report.count("warning")},
        "splits": {k: len(v) for k, v in parts.items()},
        "shards": packed,
    }
    atomic_write_json(run / "summary.json", summary)
    say(f"    {stats['images']} images, {stats['boxes']} boxes, {stats['negatives']} negatives")
    say(f"    grid of samples: {run / 'samples.png'}; summary: {run / 'summary.json'}")
    return summary


__all__ = ["run_demo"]
