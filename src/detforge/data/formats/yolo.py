"""YOLO txt: ``images/`` + ``labels/`` with one ``cls cx cy w h`` line per box (normalized).

``data.yaml`` gives ``names`` (a list or an ``{id: name}`` mapping) and the split folders. An
empty or missing txt means a negative image. Polygon lines (``cls x1 y1 x2 y2 ...``) become
their enclosing box.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from detforge.boxes import from_xyxy, to_xyxy
from detforge.data import image as imageio
from detforge.data.dataset import Dataset, Issue, Sample, read_classes_file
from detforge.data.datayaml import load_data_yaml, write_data_yaml
from detforge.data.formats._common import Within, image_size, start_write
from detforge.errors import DetforgeError, FormatError
from detforge.fileio import atomic_write_text, read_text

NAME = "yolo"
MAX_CLASSES = 100_000  # a class id beyond this is a corrupt line, not a class


def parse_names(names, where) -> list[str]:
    """``names`` from a data.yaml as a list: a list, or a mapping of contiguous ids from 0."""
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError) as e:
            raise FormatError(where, f"names keys must be integers, got {list(names)}") from e
        if ids != list(range(len(ids))):
            raise FormatError(where, f"names ids must be 0..{len(ids) - 1}, got {ids}")
        return [str(names[k] if k in names else names[str(k)]) for k in ids]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise FormatError(where, "names must be a list or an {id: name} mapping")


def label_path(img: str | Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder in the path becomes ``labels``."""
    img = Path(img)
    parts = list(img.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return img.with_suffix(".txt")


def _read_labels(txt: Path, w: int, h: int, nc: int | None):
    boxes, labels = [], []
    if not txt.is_file():
        return boxes, labels
    for ln, line in enumerate(read_text(txt).splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls, vals = int(float(parts[0])), [float(v) for v in parts[1:]]
        except (ValueError, OverflowError) as e:
            raise FormatError(
                txt, f"not numbers: {line!r}", "each line is: class cx cy w h", line=ln
            ) from e
        if len(vals) == 4:
            box = to_xyxy([vals], "cxcywh", normalized=True, size=(w, h))[0]
        elif len(vals) >= 6 and len(vals) % 2 == 0:
            pts = np.array(vals).reshape(-1, 2) * (w, h)
            box = [*pts.min(0), *pts.max(0)]
        else:
            raise FormatError(txt, f"expected 'class cx cy w h', got {len(parts)} values", line=ln)
        if cls < 0 or cls >= (nc if nc is not None else MAX_CLASSES) or cls != float(parts[0]):
            where = f"names (0..{nc - 1})" if nc is not None else f"0..{MAX_CLASSES - 1}"
            raise FormatError(
                txt,
                f"class id {parts[0]} is not a whole number in {where}",
                "fix the label or the names in data.yaml",
                line=ln,
            )
        boxes.append(box)
        labels.append(cls)
    return boxes, labels


def _image_list(entry: Path, outside_paths: str = "error") -> list[str]:
    if entry.is_file() and entry.suffix == ".txt":  # a list of image paths
        within = Within(entry.parent, outside_paths)
        out = []
        for ln, line in enumerate(read_text(entry).splitlines(), 1):
            if line.strip():
                p = os.path.abspath(entry.parent / line.strip())
                if within.allows(p):
                    out.append(p)
                else:
                    within.refuse(f"{entry}:{ln}", line.strip(), p, [])
        return out
    if (entry / "images").is_dir():
        entry = entry / "images"
    return imageio.find_images(entry)


def read_images(images: list[str], classes: list[str] | None, root: Path) -> Dataset:
    samples, issues = [], []
    nc = len(classes) if classes is not None else None
    for img in images:
        if not (size := image_size(img, issues)):
            continue
        w, h = size
        boxes, labels = _read_labels(label_path(img), w, h, nc)
        samples.append(
            Sample(imageio.FileImage(img), w, h, np.array(boxes, np.float32).reshape(-1, 4), labels)
        )
    if classes is None:
        top = max((int(s.labels.max()) for s in samples if len(s.labels)), default=-1)
        classes = [str(i) for i in range(top + 1)]
        issues.append(
            Issue(str(root), "no_names", "no data.yaml or classes.txt: classes named by id", "info")
        )
    return Dataset(classes, samples, root, issues=issues, format=NAME)


def resolve_entry(base: Path, entry) -> Path:
    """A split entry of a data.yaml, relative to ``base``. Roboflow exports write
    ``../train/images`` for a folder beside the YAML; like Ultralytics, fall back to that."""
    p = base / str(entry)
    if not p.exists() and str(entry).startswith("../") and (base / str(entry)[3:]).exists():
        return base / str(entry)[3:]
    return p


def find_yaml(folder: Path) -> Path | None:
    for n in ("data.yaml", "data.yml", "dataset.yaml"):
        if (folder / n).is_file():
            return folder / n
    return None


def read(
    path, *, split: str | None = None, names=None, outside_paths: str = "error", **_
) -> Dataset:
    """Read a YOLO folder (with ``images/``), an images folder, or a ``data.yaml``
    (all its splits, or only ``split``)."""
    path = Path(path)
    yml = path if path.suffix in (".yaml", ".yml") else (find_yaml(path) if path.is_dir() else None)
    if yml is not None:
        cfg, base = load_data_yaml(yml)
        classes = names or (parse_names(cfg["names"], yml) if "names" in cfg else None)
        keys = [split] if split else [k for k in ("train", "val", "test") if cfg.get(k)]
        images: list[str] = []
        listed = set()  # a split may repeat another (val: images)
        for k in keys:
            entries = cfg.get(k)
            for e in entries if isinstance(entries, list) else [entries]:
                if e and os.path.abspath(resolve_entry(base, e)) not in listed:
                    listed.add(os.path.abspath(resolve_entry(base, e)))
                    images += _image_list(resolve_entry(base, e), outside_paths)
        if len(listed) > 1:
            images = list(dict.fromkeys(images))
        return read_images(images, classes, yml.parent)
    parent = path.parent if path.name == "images" else path
    classes = names or read_classes_file(parent) or read_classes_file(path)
    return read_images(_image_list(path, outside_paths), classes, parent)


def write(ds: Dataset, dst, *, images: str = "copy", overwrite: bool = False) -> Path:
    """Write ``images/``, ``labels/`` and ``data.yaml`` (names as a list) into ``dst``."""
    if images == "none":
        raise DetforgeError(
            "YOLO finds labels next to images/, so it cannot be written without images",
            "use --link to hard-link the images instead of copying them",
        )
    dst, names, _ = start_write(ds, dst, images, overwrite)
    for s, n in zip(ds.samples, names):
        rows = from_xyxy(s.boxes, "cxcywh", normalized=True, size=(s.width, s.height))
        text = "".join(
            f"{int(c)} " + " ".join(f"{v:.7f}" for v in r) + "\n" for c, r in zip(s.labels, rows)
        )
        atomic_write_text(dst / "labels" / (Path(n).stem + ".txt"), text)
    write_data_yaml(dst, {"train": "images", "val": "images"}, ds.classes)
    return dst
