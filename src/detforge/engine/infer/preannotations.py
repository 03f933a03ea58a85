"""Predictions as pre-annotations for the labeling tools people use: a CVAT task's annotations
file and Label Studio tasks with predictions. Both are written once, atomically, when the
prediction run ends (a run that fails before its first image leaves neither)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from detforge.data.dataset import Dataset, Sample
from detforge.data.formats import cvat, labelstudio
from detforge.data.image import FileImage
from detforge.fileio import atomic_write_text

CVAT_FILE = "cvat_annotations.xml"
LABELSTUDIO_FILE = "labelstudio_tasks.json"


def source_root(source) -> Path:
    """The folder image names are given relative to: the source folder, or a file's folder
    (a glob's: the folder before its first wildcard)."""
    p = Path(str(source))
    while any(c in p.name for c in "*?[") and p != p.parent:
        p = p.parent
    return p if p.is_dir() else p.parent


class Preannotations:
    """Collects each result's boxes (in the model's default threshold or ``--conf``) and
    writes ``cvat_annotations.xml`` (CVAT for images 1.1, boxes marked ``source="auto"``:
    upload it to the task holding these images) and/or ``labelstudio_tasks.json`` (tasks with
    ``predictions`` carrying the model's name and each box's score; ``data.image`` is
    ``/data/local-files/?d=`` the image's path under the source folder)."""

    def __init__(self, save_dir: Path, classes, source, *, cvat: bool, labelstudio: bool,
                 model: str = "detforge"):  # fmt: skip
        self.dir, self.classes, self.model = Path(save_dir), list(classes), model
        self.root = os.path.abspath(source_root(source))
        self.cvat, self.labelstudio = cvat, labelstudio
        self.samples: list[Sample] = []
        self.scores: list = []

    @property
    def wanted(self) -> bool:
        return self.cvat or self.labelstudio

    def add(self, r) -> None:
        h, w = r.shape
        self.samples.append(Sample(FileImage(r.source), w, h, r.boxes, r.labels))
        self.scores.append(r.scores)

    def _relative(self, s: Sample) -> str:
        rel = os.path.relpath(os.path.abspath(s.path), self.root)
        return (s.name if rel.startswith("..") else rel).replace(os.sep, "/")

    def close(self) -> list[Path]:
        if not self.samples:
            return []

        ds = Dataset(self.classes, self.samples)
        refs = [self._relative(s) for s in self.samples]
        written = []
        if self.cvat:
            path = self.dir / CVAT_FILE
            atomic_write_text(path, cvat.to_xml(ds, refs, source="auto"))
            written.append(path)
        if self.labelstudio:
            tasks = [
                labelstudio.task(s, self.classes, f"/data/local-files/?d={ref}", k, sc, self.model)
                for k, (s, ref, sc) in enumerate(zip(self.samples, refs, self.scores))
            ]
            path = self.dir / LABELSTUDIO_FILE
            atomic_write_text(path, json.dumps(tasks, indent=1))
            written.append(path)
        return written
