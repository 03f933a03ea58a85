"""CSV files of two kinds.

Detection, in the TensorFlow tutorial layout: ``filename,width,height,class,xmin,ymin,xmax,ymax``,
one row per box; a row with an empty class and empty coordinates is a negative image.

Classification: ``filename,label`` (``class`` is accepted for ``label``), one row per image.
"""

from __future__ import annotations

import csv as _csv
import io
import os
from pathlib import Path

import numpy as np

from detforge.data import image as imageio
from detforge.data.dataset import ClassIndex, Dataset, Issue, Sample, read_classes_file
from detforge.data.formats._common import (
    OUTSIDE,
    Within,
    fmt_num,
    image_size,
    start_write,
    write_classes,
)
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
    except (OSError, UnicodeDecodeError, _csv.Error):
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


def _find_image(fname: str, dirs: list[Path], within: Within, cpath, issues, line=None):
    rel = fname.replace("\\", "/")
    where = f"{cpath}:{line}" if line else cpath
    found = within.pick([d / rel for d in dirs], where, fname, issues)
    return found if found in (None, OUTSIDE) else Path(os.path.abspath(found))


def _rows(cpath: Path):
    """``(line, {column: value})`` per data row, header names lower-cased and stripped; a row
    with fewer or more fields than the header is an error naming its line."""
    try:
        f = cpath.open(newline="", encoding="utf-8-sig")
    except OSError as e:
        raise FormatError(cpath, f"cannot read: {e.strerror}") from None
    with f:
        reader = _csv.reader(f)
        try:
            header = [h.strip().lower() for h in next(reader, [])]
            for row in reader:
                ln = reader.line_num
                if not any(v.strip() for v in row):
                    continue  # blank line
                if len(row) != len(header):
                    raise FormatError(
                        cpath,
                        f"{len(row)} fields, the header has {len(header)}: {row!r:.80}",
                        "each row needs every column (empty values are fine)",
                        line=ln,
                    )
                yield ln, {k: v.strip() for k, v in zip(header, row)}
        except (UnicodeDecodeError, _csv.Error) as e:
            raise FormatError(cpath, f"not a readable CSV: {e}", line=reader.line_num) from None


def _missing(cpath: Path, fname: str, line: int | None = None) -> Issue:
    where = f" (line {line})" if line else ""
    return Issue(
        str(cpath),
        "missing_image",
        f"image {fname!r}{where} not found; pass images=DIR (--images)",
        "error",
    )


def read_classification(cpath: Path, dirs: list[Path], names=None, within=None) -> Dataset:
    """``filename,label`` rows: one image each, its label the class name."""
    index = ClassIndex(names or read_classes_file(cpath.parent))
    within = within or Within(cpath.parent)
    samples, issues, seen = [], [], {}
    head = _header(cpath)
    col = next(c for c in LABEL_COLUMNS if c in head)
    for ln, row in _rows(cpath):
        fname, label = row.get("filename", ""), row.get(col, "")
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
            raise FormatError(cpath, f"label {label!r} is not among the given class names", line=ln)
        img = _find_image(fname, dirs, within, cpath, issues, ln)
        if img is None:
            issues.append(_missing(cpath, fname, ln))
        elif img != OUTSIDE and (size := image_size(img, issues)):
            samples.append(Sample(imageio.FileImage(img), *size, category=index(label)))
    classes, samples = index.finish(samples)
    return Dataset(classes, samples, cpath.parent, task="classify", issues=issues, format=NAME)


def read(path, *, images=None, names=None, outside_paths: str = "error", **_) -> Dataset:
    """Read a detection or classification CSV (or the folder holding it). Images are looked up
    in ``images``, beside the CSV, then in ``images/`` beside it or beside its folder."""
    path = Path(path)
    cpath = path if path.is_file() else find_csv(path)
    if cpath is None:
        raise FormatError(
            path, "no CSV with columns " + ",".join(COLUMNS) + " (detection) or filename,label"
        )
    dirs = [Path(images)] if images else []
    dirs += [cpath.parent, cpath.parent / "images", cpath.parent.parent / "images"]
    within = Within(path, outside_paths, images)
    kind = csv_kind(cpath)
    if kind is None:
        raise FormatError(cpath, *explain_header(cpath), line=1)
    if kind == "classify":
        return read_classification(cpath, dirs, names, within)
    if "class" not in _header(cpath):
        raise FormatError(cpath, "missing column 'class'", "header: " + ",".join(COLUMNS), line=1)
    index = ClassIndex(names or read_classes_file(cpath.parent))
    rows: dict[str, dict] = {}
    for ln, r in _rows(cpath):
        entry = rows.setdefault(
            r["filename"], {"w": r.get("width"), "h": r.get("height"), "b": [], "l": [], "ln": ln}
        )
        if not r.get("class") and not r["xmin"]:
            continue  # negative row
        try:
            box = [float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            raise FormatError(cpath, f"coordinates are not numbers: {r}", line=ln) from None
        if not r.get("class"):
            raise FormatError(cpath, "box without a class", line=ln)
        entry["b"].append(box)
        entry["l"].append(index(r["class"]))
    samples, issues = [], []
    for fname, e in rows.items():
        img = _find_image(fname, dirs, within, cpath, issues, e["ln"])
        if img is None:
            issues.append(_missing(cpath, fname, e["ln"]))
        if img in (None, OUTSIDE):
            continue
        try:
            w, h = int(float(e["w"])), int(float(e["h"]))
        except (TypeError, ValueError, OverflowError):
            w = h = 0
        if w <= 0 or h <= 0:
            if not (size := image_size(img, issues)):
                continue
            w, h = size
        boxes = np.array(e["b"], np.float32).reshape(-1, 4)
        samples.append(Sample(imageio.FileImage(img), w, h, boxes, e["l"]))
    classes, samples = index.finish(samples)
    return Dataset(classes, samples, cpath.parent, issues=issues, format=NAME)


def explain_header(cpath: Path) -> tuple[str, str]:
    """``(message, hint)`` for a CSV whose header is neither kind."""
    try:
        with cpath.open(encoding="utf-8-sig", errors="replace") as f:
            first = f.readline().strip()
    except OSError as e:
        return f"cannot read: {e.strerror}", "check the file"
    if not first:
        return "the file is empty", "write a header: " + ",".join(COLUMNS)
    for sep in (";", "\t", "|"):
        if sep in first and "," not in first:
            return (
                f"columns are separated by {sep!r}, not commas",
                "save it as comma-separated (in a spreadsheet: CSV UTF-8, comma)",
            )
    head = {h.strip().lower() for h in first.split(",")}
    missing = [c for c in ("filename", "xmin", "ymin", "xmax", "ymax") if c not in head]
    return (
        f"header {first[:80]!r} lacks {', '.join(missing)}",
        "detection: " + ",".join(COLUMNS) + "; classification: filename,label",
    )


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
