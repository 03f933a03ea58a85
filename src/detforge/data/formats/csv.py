"""CSV files of two kinds.

Detection, in the TensorFlow tutorial layout: ``filename,width,height,class,xmin,ymin,xmax,ymax``,
one row per box; a row with an empty class and empty coordinates is a negative image.

Classification: ``filename,label`` (``class`` is accepted for ``label``), one row per image.
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
LABELS_FILE = "labels.csv"  # classification
LABEL_COLUMNS = ("label", "class")


def _header(path: Path) -> set[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return {h.strip().lower() for h in next(_csv.reader(f), [])}
    except (OSError, UnicodeDecodeError):
        return set()


def csv_kind(path: Path) -> str | None:
    """``detect`` (box columns), ``classify`` (``filename,label``) or None, from the header."""
    head = _header(path)
    if {"filename", "xmin", "ymin", "xmax", "ymax"} <= head:
        return "detect"
    if "filename" in head and head & set(LABEL_COLUMNS) and "xmin" not in head:
        return "classify"
    return None


def find_csv(folder: Path) -> Path | None:
    """The folder's detection CSV, else its classification CSV."""
    kinds = {p: csv_kind(p) for p in sorted(folder.glob("*.csv"))}
    return next((p for p, k in kinds.items() if k == "detect"), None) or next(
        (p for p, k in kinds.items() if k == "classify"), None
    )


def _find_image(fname: str, dirs: list[Path]) -> Path | None:
    rel = fname.replace("\\", "/")
    return next((d / rel for d in dirs if (d / rel).is_file()), None)


def _missing(cpath: Path, fname: str, line: int | None = None) -> Issue:
    where = f" (line {line})" if line else ""
    return Issue(
        str(cpath),
        "missing_image",
        f"image {fname!r}{where} not found; pass images=DIR (--images)",
        "error",
    )


def read_classification(cpath: Path, dirs: list[Path], names=None) -> Dataset:
    """``filename,label`` rows: one image each, its label the class name."""
    index = ClassIndex(names or read_classes_file(cpath.parent))
    samples, issues, seen = [], [], {}
    with cpath.open(newline="", encoding="utf-8-sig") as f:
        reader = _csv.DictReader(f)
        fields = {h.strip().lower(): h for h in reader.fieldnames or []}
        col = fields[next(c for c in LABEL_COLUMNS if c in fields)]
        for ln, row in enumerate(reader, start=2):
            fname, label = (row.get(fields["filename"]) or "").strip(), (row.get(col) or "").strip()
            if not fname and not label:
                continue  # blank line
            if not fname or not label:
                raise FormatError(
                    cpath,
                    f"row without a {'label' if fname else 'filename'}: {row}",
                    "each row is filename,label",
                    line=ln,
                )
            if fname in seen:
                first, first_label = seen[fname]
                if first_label != label:
                    raise FormatError(
                        cpath,
                        f"{fname!r} is labeled {first_label!r} on line {first} and {label!r} here",
                        "keep one label per image",
                        line=ln,
                    )
                issues.append(Issue(str(cpath), "duplicate_row", f"line {ln} repeats line {first}"))
                continue
            seen[fname] = (ln, label)
            if names and label not in names:
                raise FormatError(
                    cpath, f"label {label!r} is not among the given class names", line=ln
                )
            img = _find_image(fname, dirs)
            if img is None:
                issues.append(_missing(cpath, fname, ln))
            elif size := image_size(img, issues):
                img = imageio.FileImage(img.resolve())
                samples.append(Sample(img, *size, category=index(label)))
    classes, samples = index.finish(samples)
    return Dataset(classes, samples, cpath.parent, task="classify", issues=issues, format=NAME)


def read(path, *, images=None, names=None, **_) -> Dataset:
    """Read a detection or classification CSV (or the folder holding it). Images are looked up
    in ``images``, beside the CSV, then in ``images/`` beside it."""
    path = Path(path)
    cpath = path if path.is_file() else find_csv(path)
    if cpath is None:
        raise FormatError(
            path, "no CSV with columns " + ",".join(COLUMNS) + " (detection) or filename,label"
        )
    dirs = ([Path(images)] if images else []) + [cpath.parent, cpath.parent / "images"]
    if csv_kind(cpath) == "classify":
        return read_classification(cpath, dirs, names)
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
        img = _find_image(fname, dirs)
        if img is None:
            issues.append(_missing(cpath, fname))
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
    """Write ``annotations.csv`` (a classification dataset: ``labels.csv``), ``classes.txt``
    and ``images/`` into ``dst``."""
    dst, _, names = start_write(ds, dst, images, overwrite)
    buf = io.StringIO()
    w = _csv.writer(buf, lineterminator="\n")
    if ds.task == "classify":
        w.writerow(["filename", "label"])
        for s, n in zip(ds.samples, names):
            if s.category is not None:
                w.writerow([n, ds.classes[s.category]])
        atomic_write_text(dst / LABELS_FILE, buf.getvalue())
        write_classes(dst, ds.classes)
        return dst
    w.writerow(COLUMNS)
    for s, n in zip(ds.samples, names):
        if not len(s.boxes):
            w.writerow([n, s.width, s.height, "", "", "", "", ""])
        for b, lab in zip(s.boxes, s.labels):
            w.writerow([n, s.width, s.height, ds.classes[int(lab)], *(fmt_num(v) for v in b)])
    atomic_write_text(dst / ANNOTATION_FILE, buf.getvalue())
    write_classes(dst, ds.classes)
    return dst
