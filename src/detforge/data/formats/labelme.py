"""labelme JSON: one ``<image>.json`` per image (rectangle, polygon, circle, ... shapes).

Read without the labelme package. ``imagePath`` is relative to the JSON, with ``/`` or ``\\``
separators; when the file is absent the embedded base64 ``imageData`` is used. Shapes sharing a
``group_id`` and label become one object (their union box); the label ``__ignore__`` is skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from detforge.data import image as imageio
from detforge.data.dataset import ClassIndex, Dataset, Issue, Sample, read_classes_file
from detforge.data.formats._common import start_write, unlabeled_negatives, write_classes
from detforge.errors import FormatError, ImageError
from detforge.fileio import atomic_write_json

NAME = "labelme"
RECT_SHAPES = ("rectangle", "circle")
LABELME_VERSION = "5.5.0"


def is_labelme(obj) -> bool:
    return isinstance(obj, dict) and "shapes" in obj and ("imagePath" in obj or "imageData" in obj)


def _shape_box(shape: dict) -> tuple[np.ndarray, str]:
    pts = np.asarray(shape.get("points") or [], dtype=np.float64).reshape(-1, 2)
    kind = shape.get("shape_type") or "polygon"
    if len(pts) == 0:
        raise ValueError("shape has no points")
    if kind == "circle":
        if len(pts) < 2:
            raise ValueError("circle needs a center and a rim point")
        (cx, cy), rim = pts[0], pts[1]
        r = float(np.hypot(*(rim - pts[0])))
        return np.array([cx - r, cy - r, cx + r, cy + r]), kind
    lo, hi = pts.min(0), pts.max(0)
    return np.array([lo[0], lo[1], hi[0], hi[1]]), kind


def _find_image(jpath: Path, obj: dict) -> imageio.ImageRef | None:
    rel = (obj.get("imagePath") or "").replace("\\", "/")
    candidates = []
    if rel:
        candidates += [jpath.parent / rel, jpath.parent / Path(rel).name]
    candidates += [jpath.with_suffix(e) for e in imageio.IMAGE_EXTS]
    for c in candidates:
        if c.is_file():
            return imageio.FileImage(c.resolve())
    if obj.get("imageData"):
        name = Path(rel).name if rel else jpath.stem + ".jpg"
        return imageio.EmbeddedImage(jpath.resolve(), name)
    return None


def read_file(jpath: Path, index: ClassIndex, shapes: str = "box") -> tuple[Sample | None, list]:
    """Read one labelme JSON; returns the sample (None if its image is missing) and issues."""
    issues: list[Issue] = []
    try:
        obj = json.loads(jpath.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(jpath, f"not valid JSON: {e}", "open it in labelme and save again") from e
    if not is_labelme(obj):
        raise FormatError(jpath, "not a labelme file (no 'shapes'/'imagePath')")
    ref = _find_image(jpath, obj)
    if ref is None:
        issues.append(
            Issue(
                str(jpath),
                "missing_image",
                f"image {obj.get('imagePath')!r} not found and no imageData",
                "error",
            )
        )
        return None, issues
    try:
        w, h, _ = (
            imageio.file_info(ref.path)
            if isinstance(ref, imageio.FileImage)
            else imageio.info(ref.read(), jpath)
        )
    except ImageError as e:
        issues.append(Issue(str(ref.path), "unreadable_image", e.message, "error"))
        w, h = obj.get("imageWidth") or 0, obj.get("imageHeight") or 0
    jw, jh = obj.get("imageWidth"), obj.get("imageHeight")
    if jw and jh and (int(jw), int(jh)) != (w, h) and w and h:
        issues.append(
            Issue(
                str(jpath),
                "size_mismatch",
                f"JSON says {jw}x{jh}, image is {w}x{h} (EXIF orientation?)",
            )
        )
    groups: dict[tuple, list] = {}
    order: list[tuple] = []
    for k, shape in enumerate(obj.get("shapes") or []):
        label = str(shape.get("label", "")).strip()
        if label == "__ignore__" or not label:
            continue
        try:
            box, kind = _shape_box(shape)
        except (ValueError, TypeError) as e:
            raise FormatError(
                jpath, f"shape {k} ({label!r}): {e}", "fix or delete it in labelme"
            ) from e
        if kind not in RECT_SHAPES and shapes == "skip":
            continue
        gid = shape.get("group_id")
        key = (label, gid) if gid is not None else (label, None, k)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append((box, bool((shape.get("flags") or {}).get("difficult"))))
    boxes, labels, difficult = [], [], []
    for key in order:
        b = np.array([g[0] for g in groups[key]])
        boxes.append([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()])
        labels.append(index(key[0]))
        difficult.append(any(g[1] for g in groups[key]))
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return Sample(ref, w, h, boxes, labels, difficult=difficult), issues


def read(path, *, shapes: str = "box", negatives: bool = False, names=None, **_) -> Dataset:
    """Read a folder of labelme JSON files (recursively) or one JSON file.

    ``shapes='skip'`` drops non-rectangular shapes instead of boxing them; ``negatives=True``
    adds images that have no JSON as negatives.
    """
    path = Path(path)
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*.json") if not p.name.startswith("."))
    )
    root = path.parent if path.is_file() else path
    index = ClassIndex(names or read_classes_file(root))
    samples, issues = [], []
    for jp in files:
        if path.is_dir():
            try:
                head = json.loads(jp.read_text(encoding="utf-8-sig"))
            except (OSError, ValueError):
                issues.append(Issue(str(jp), "bad_json", "not valid JSON; skipped", "error"))
                continue
            if not is_labelme(head):
                continue
        s, found = read_file(jp, index, shapes)
        issues += found
        if s is not None:
            samples.append(s)
    if negatives and path.is_dir():
        samples += unlabeled_negatives(path, samples, issues)
    classes, samples = index.finish(samples)
    return Dataset(classes, samples, root, issues=issues, format=NAME)


def to_json(s: Sample, classes: list[str], image_path: str) -> dict:
    """The labelme JSON for a sample (rectangles), as labelme itself saves it."""
    shapes = [
        {
            "label": classes[int(lab)],
            "points": [[float(b[0]), float(b[1])], [float(b[2]), float(b[3])]],
            "group_id": None,
            "description": "",
            "shape_type": "rectangle",
            "flags": {"difficult": True} if d else {},
            "mask": None,
        }
        for b, lab, d in zip(s.boxes.astype(np.float64), s.labels, s.difficult)
    ]
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": int(s.height),
        "imageWidth": int(s.width),
    }


def write(ds: Dataset, dst, *, images: str = "copy", overwrite: bool = False) -> Path:
    """Write images and one labelme JSON beside each (rectangles) into ``dst``."""
    dst, names, refs = start_write(ds, dst, images, overwrite, folder="")
    for s, n, ref in zip(ds.samples, names, refs):
        rel = n
        if images == "none":  # point at the original image, relative when possible
            rel = Path(_relpath(ref, dst)).as_posix()
        atomic_write_json(dst / (Path(n).stem + ".json"), to_json(s, ds.classes, rel))
    write_classes(dst, ds.classes)
    return dst


def _relpath(p: Path, start: Path) -> str:
    try:
        return os.path.relpath(p, start)
    except ValueError:  # another drive on Windows
        return str(p)
