"""``detforge data report``: one page about a dataset, for looking at it before training.

Counts per split and class, box size and aspect histograms, negatives, every ``data check``
finding with its image and the box in question, and a paged grid of every image with its
boxes, filterable by class. One pass over the images (check, then a thumbnail each, in
threads); what the page holds per image is a short list, so memory and page size grow by a
few hundred bytes per image, and a 20k-image set opens at once (the browser loads only the
thumbnails of the page it shows).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from detforge._version import __version__
from detforge.data.check import Finding, check
from detforge.data.dataset import Dataset
from detforge.data.reading import is_data_yaml, read, read_splits
from detforge.data.report.page import (
    THUMBS,
    Thumbnails,
    box_rows,
    figure,
    histogram,
    svg,
    write_page,
)
from detforge.data.stats import stats
from detforge.runs import new_run_dir

PAGE_SIZE = 60
IMAGE_SORTS = [
    {"key": "boxes", "label": "most boxes first"},
    {"key": "few", "label": "fewest boxes first"},
    {"key": "small", "label": "smallest box first"},
    {"key": "name", "label": "by name"},
]
FINDING_SORTS = [{"key": "sev", "label": "errors first"}, {"key": "name", "label": "by name"}]


def _splits(src, format: str, **opts) -> dict[str, Dataset]:
    if isinstance(src, Dataset):
        return {"all": src}
    path = Path(src)
    if path.is_file() and is_data_yaml(path):
        return read_splits(path, **opts)
    return {"all": read(path, format, **opts)}


def _rel(path, root) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except (ValueError, TypeError):
        return Path(str(path)).name


def _frame(s, thumbs: Thumbnails, thumb: str | None) -> dict:
    k = thumbs.scale(s)
    w, h = thumbs.size(s)
    return {"t": thumb, "w": w, "h": h, "k": (k, k)}


def _image_item(s, name: str, frame: dict) -> dict:
    item = {"n": name, "t": frame["t"], "w": frame["w"], "h": frame["h"]}
    if s.category is not None:
        item["y"] = s.category
        return item
    item["g"] = box_rows(s.boxes, s.labels, frame["k"])  # the sort keys come from these
    return item


def _finding_item(f: Finding, sample, name: str, frame: dict | None) -> dict:
    item = {
        "n": name,
        "kind": f.kind,
        "msg": f.message,
        "sev": 1 if f.severity == "error" else 0,
        "bad": f.severity == "error",
    }
    if frame is None:
        return {**item, "t": None, "w": 4, "h": 3, "note": "no image for this finding"}
    item.update(t=frame["t"], w=frame["w"], h=frame["h"])
    if sample.category is None:
        item["g"] = box_rows(sample.boxes, sample.labels, frame["k"])
        if f.box is not None and 0 <= f.box < len(sample.boxes):
            b = sample.boxes[f.box] * np.float32([*frame["k"], *frame["k"]])
            item["b"] = [round(float(v)) for v in b]
    return item


def _class_chart(classes: list[str], boxes: np.ndarray, images: np.ndarray, task: str) -> str:
    fig = figure(5.0, 1.6 + 0.28 * len(classes))
    ax = fig.subplots()
    y = np.arange(len(classes))
    if task == "classify":
        ax.barh(y, images, color="#3b82f6", label="images")
    else:
        ax.barh(y - 0.2, boxes, 0.4, color="#3b82f6", label="boxes")
        ax.barh(y + 0.2, images, 0.4, color="#f59e0b", label="images")
    ax.set_yticks(y, classes, fontsize=8)
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax.set(title="per class", xlabel="count")
    return svg(fig)


class _Collect:
    """What the page shows, gathered split by split."""

    def __init__(self, thumbs: Thumbnails, many: bool):
        self.thumbs, self.many = thumbs, many
        self.items: list[dict] = []
        self.findings: list[dict] = []
        self.splits: list[dict] = []
        self.wh: list[np.ndarray] = []
        self.rel: list[np.ndarray] = []

    def add(self, split: str, ds: Dataset, decode: bool, progress: bool) -> None:
        report = check(ds, decode=decode, progress=progress)
        thumbs = self.thumbs.make_all(ds.samples, progress=progress)
        by_path = {}
        for s, t in zip(ds.samples, thumbs):
            name = _rel(s.path, ds.root)
            name = f"{split}/{name}" if self.many else name
            frame = _frame(s, self.thumbs, t)
            by_path[str(s.path)] = (s, name, frame)
            self.items.append(_image_item(s, name, frame))
            if len(s.boxes):
                wh = (s.boxes[:, 2:] - s.boxes[:, :2]).clip(0)
                self.wh.append(wh)
                self.rel.append(np.sqrt(wh.prod(1) / max(s.width * s.height, 1)))
        for f in report.findings:
            s, name, frame = by_path.get(f.path, (None, _rel(f.path, ds.root), None))
            self.findings.append(_finding_item(f, s, name, frame))
        self.splits.append(
            {
                "name": split,
                **stats(ds),
                "errors": report.errors,
                "warnings": report.count("warning"),
            }
        )


def data_report(
    src,
    out=None,
    *,
    format: str = "auto",
    project="runs",
    name: str | None = None,
    decode: bool = True,
    progress: bool = True,
    **opts,
) -> Path:
    """Write the dataset's page to ``out/report.html`` (default: a new ``runs/report/NAME``
    folder) with its thumbnails in ``out/report_files``; returns the page's path. ``src``: a
    dataset folder or file, a ``data.yaml`` (every split), or a Dataset."""
    splits = _splits(src, format, **opts)
    label = str(src) if not isinstance(src, Dataset) else str(src.root)
    if out is None:
        stem = Path(label).stem if Path(label).suffix in (".yaml", ".yml") else Path(label).name
        out = new_run_dir("report", name or Path(stem).name or "data", project)
    out = Path(out)
    thumbs = Thumbnails(out)
    got = _Collect(thumbs, many=len(splits) > 1)
    for split, ds in splits.items():
        got.add(split, ds, decode, progress)
    first = next(iter(splits.values()))
    page = write_page(out / "report.html", "dataset.html.j2", **_context(label, first, got))
    thumbs.prune()
    return page


def _context(label: str, first: Dataset, got: _Collect) -> dict:
    classes = list(first.classes)
    wh = np.concatenate(got.wh) if got.wh else np.zeros((0, 2))
    rel = np.concatenate(got.rel) if got.rel else np.zeros(0)
    per_class = {
        c: {s["name"]: s["classes"].get(c, {"boxes": 0, "images": 0}) for s in got.splits}
        for c in classes
    }
    boxes = np.array([sum(v["boxes"] for v in per_class[c].values()) for c in classes])
    images = np.array([sum(v["images"] for v in per_class[c].values()) for c in classes])
    charts = [_class_chart(classes, boxes, images, first.task)] if classes else []
    if len(wh):
        charts += [
            histogram(wh[:, 0], "box width", "pixels"),
            histogram(wh[:, 1], "box height", "pixels"),
            histogram(
                wh[:, 0] / np.maximum(wh[:, 1], 1e-6), "box aspect", "width / height", log=True
            ),
            histogram(rel, "box size", "sqrt(box area / image area)"),
        ]
    totals = {
        k: sum(s[k] for s in got.splits)
        for k in ("images", "negatives", "boxes", "errors", "warnings")
    }
    return {
        "title": f"dataset report: {Path(label).name}",
        "subtitle": f"{label} · {first.format or 'in memory'} · {first.task}",
        "version": __version__,
        "written": datetime.datetime.now().isoformat(timespec="seconds"),
        "sections": [
            ("summary", "summary"),
            ("classes", "classes"),
            ("findings", f"findings ({len(got.findings)})"),
            ("images", "images"),
        ],
        "totals": totals,
        "task": first.task,
        "splits": got.splits,
        "classes": classes,
        "per_class": per_class,
        "charts": charts,
        "findings": {
            "items": got.findings,
            "classes": classes,
            "sorts": FINDING_SORTS,
            "page_size": 24,
            "thumbs": THUMBS,
        },
        "images": {
            "items": got.items,
            "classes": classes,
            "sorts": IMAGE_SORTS if first.task == "detect" else IMAGE_SORTS[-1:],
            "negatives": first.task == "detect",
            "page_size": PAGE_SIZE,
            "thumbs": THUMBS,
        },
    }
