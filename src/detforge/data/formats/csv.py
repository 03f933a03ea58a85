"""CSV in the TensorFlow tutorial layout: ``filename,width,height,class,xmin,ymin,xmax,ymax``.

One row per box; a row with an empty class and empty coordinates is a negative image.
"""

from __future__ import annotations

import csv as _csv
import io
from pathlib import Path

import numpy as np

from detforge.data import image as imageio
from detforge.data.dataset import ClassIndex, Dataset, Issue, Sample, read_classes_file
from detforge.data.formats._common import fmt_num, image_size, start_write, write_classes
from detforge.errors import FormatError
from detforge.fileio import atomic_write_text

NAME = "csv"
COLUMNS = ["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"]
ANNOTATION_FILE = "annotations.csv"


def is_detection_csv(path: Path) -> bool:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            head = next(_csv.reader(f), [])
    except (OSError, UnicodeDecodeError):
        return False
    return {"filename", "xmin", "ymin", "xmax", "ymax"} <= {h.strip().lower() for h in head}


def find_csv(folder: Path) -> Path | None:
    return next((p for p in sorted(folder.glob("*.csv")) if is_detection_csv(p)), None)


def read(path, *, images=None, names=None, **_) -> Dataset:
    """Read a detection CSV (or the folder holding it). Images are looked up in ``images``,
    beside the CSV, then in ``images/`` beside it."""
    path = Path(path)
    cpath = path if path.is_file() else find_csv(path)
    if cpath is None:
        raise FormatError(path, "no CSV with columns " + ",".join(COLUMNS))
    dirs = ([Path(images)] if images else []) + [cpath.parent, cpath.parent / "images"]
    index = ClassIndex(names or read_classes_file(cpath.parent))
    rows: dict[str, dict] = {}
    with cpath.open(newline="", encoding="utf-8-sig") as f:
        reader = _csv.DictReader(f)
        fields = {h.strip().lower(): h for h in reader.fieldnames or []}
        missing = [c for c in COLUMNS if c not in fields and c not in ("width", "height")]
        if missing:
            raise FormatError(
                cpath, f"missing columns {missing}", "header: " + ",".join(COLUMNS), line=1
            )
        for ln, row in enumerate(reader, start=2):
            r = {k: (row.get(v) or "").strip() for k, v in fields.items()}
            entry = rows.setdefault(
                r["filename"], {"w": r.get("width"), "h": r.get("height"), "b": [], "l": []}
            )
            if not r["class"] and not r["xmin"]:
                continue  # negative row
            try:
                entry["b"].append([float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")])
            except ValueError as e:
                raise FormatError(cpath, f"coordinates are not numbers: {row}", line=ln) from e
            if not r["class"]:
                raise FormatError(cpath, "box without a class", line=ln)
            entry["l"].append(index(r["class"]))
    samples, issues = [], []
    for fname, e in rows.items():
        rel = fname.replace("\\", "/")
        img = next((d / rel for d in dirs if (d / rel).is_file()), None)
        if img is None:
            issues.append(
                Issue(
                    str(cpath),
                    "missing_image",
                    f"image {fname!r} not found; pass images=DIR (--images)",
                    "error",
                )
            )
            continue
        try:
            w, h = int(float(e["w"])), int(float(e["h"]))
        except (TypeError, ValueError):
            if not (size := image_size(img, issues)):
                continue
            w, h = size
        boxes = np.array(e["b"], np.float32).reshape(-1, 4)
        samples.append(Sample(imageio.FileImage(img.resolve()), w, h, boxes, e["l"]))
    classes, samples = index.finish(samples)
    return Dataset(classes, samples, cpath.parent, issues=issues, format=NAME)


def write(ds: Dataset, dst, *, images: str = "copy", overwrite: bool = False) -> Path:
    """Write ``annotations.csv``, ``classes.txt`` and ``images/`` into ``dst``."""
    dst, _, names = start_write(ds, dst, images, overwrite)
    buf = io.StringIO()
    w = _csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for s, n in zip(ds.samples, names):
        if not len(s.boxes):
            w.writerow([n, s.width, s.height, "", "", "", "", ""])
        for b, lab in zip(s.boxes, s.labels):
            w.writerow([n, s.width, s.height, ds.classes[int(lab)], *(fmt_num(v) for v in b)])
    atomic_write_text(dst / ANNOTATION_FILE, buf.getvalue())
    write_classes(dst, ds.classes)
    return dst
