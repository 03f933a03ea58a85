"""One table of what differs between the tasks (detect, classify): the result type, how a
model is scored and which metric picks ``best.pt``, what metrics.csv logs, the free axis of an
exported graph, and the summary lines people read. Everything else is shared code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from detforge.engine.evaluate import classification, detection
from detforge.engine.infer.results import ClassResult, Result
from detforge.errors import DetforgeError


@dataclass(frozen=True)
class Task:
    name: str
    result: type  # what the Predictor returns per image
    score: Callable  # (predictor, dataset, *, batch, conf, iou, progress) -> Scored
    write_report: Callable  # (Scored, dataset, run folder) -> files of `detforge eval`
    fitness: str  # the metric that picks best.pt and early stopping
    fitness_label: str  # how people call it
    logged: tuple[str, ...]  # metrics written to metrics.csv and TensorBoard each epoch
    output_axis: str  # the free first axis of each output under --dynamic-batch
    counted: str  # what `predict` counts per class

    def headline(self, m: dict) -> str:
        """One line of the key metrics."""
        return "  ".join(f"{k} {m[k]:.4f}" for k in self.logged if k in m)


TASKS = {
    "detect": Task(
        name="detect",
        result=Result,
        score=detection.score,
        write_report=detection.write_report,
        fitness="mAP50-95",
        fitness_label="mAP50-95",
        logged=("mAP50-95", "mAP50"),
        output_axis="detections",
        counted="detections",
    ),
    "classify": Task(
        name="classify",
        result=ClassResult,
        score=classification.score,
        write_report=classification.write_report,
        fitness="top1",
        fitness_label="top-1",
        logged=("top1", "top5"),
        output_axis="batch",
        counted="top-1 classes",
    ),
}


def task(name: str) -> Task:
    if name not in TASKS:
        raise DetforgeError(f"unknown task {name!r}", "use " + " or ".join(TASKS))
    return TASKS[name]
