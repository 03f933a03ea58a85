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
from detforge.data.formats._common import (
    OUTSIDE,
    Within,
    start_write,
    unlabeled_negatives,
    write_classes,
)
from detforge.errors import FormatError, ImageError
from detforge.fileio import atomic_write_json

NAME = "labelme"
RECT_SHAPES = ("rectangle", "circle")
NO_AREA = ("point", "points")  # skipped with a note: no box to learn (as are flat lines)
LINES = ("line", "linestrip")
LABELME_VERSION = "5.5.0"


def is_labelme(obj) -> bool:
    """labelme's keys: ``imagePath`` or ``imageData``, with ``shapes`` (or, in a file saved
    without any, ``version``/``flags``); never COCO's ``images``."""
    return (
        isinstance(obj, dict)
        and ("imagePath" in obj or "imageData" in obj)
        and ("shapes" in obj or "version" in obj or "flags" in obj)
        and "images" not in obj
    )


def _shape_box(shape) -> tuple[np.ndarray, str]:
    if not isinstance(shape, dict):
        raise ValueError(f"a shape must be an object, got {type(shape).__name__}")
    try:
        pts = np.asarray(shape.get("points") or [], dtype=np.float64).reshape(-1, 2)
    except (ValueError, TypeError):
        raise ValueError(f"points must be [[x, y], ...], got {shape.get('points')!r:.60}") from None
    kind = shape.get("shape_type") or "polygon"
    if len(pts) == 0:
        raise ValueError("shape has no points")
    if not np.isfinite(pts).all():
        raise ValueError("points hold NaN or infinity")
    if kind == "circle":
        if len(pts) < 2:
            raise ValueError("circle needs a center and a rim point")
        (cx, cy), rim = pts[0], pts[1]
        r = float(np.hypot(*(rim - pts[0])))
        return np.array([cx - r, cy - r, cx + r, cy + r]), kind
    lo, hi = pts.min(0), pts.max(0)
    return np.array([lo[0], lo[1], hi[0], hi[1]]), kind


def _find_image(jpath: Path, obj: dict, within: Within, issues: list):
    """The image a labelme JSON names (an image file, inside the dataset), else its embedded
    ``imageData``; None when there is neither, OUTSIDE when refused."""
    rel = str(obj.get("imagePath") or "").replace("\\", "/")
    candidates = []
    if rel:
        candidates += [jpath.parent / rel, jpath.parent / Path(rel).name]
    candidates += [jpath.with_suffix(e) for e in imageio.IMAGE_EXTS]
    images = [c for c in candidates if c.suffix.lower() in imageio.IMAGE_EXTS]  # never the JSON
    embedded = obj.get("imageData")
    found = within.pick(images, jpath, rel, [] if embedded else issues)
    if found is not None and found != OUTSIDE:
        return imageio.FileImage(os.path.abspath(found))
    if embedded:
        name = Path(rel).name if Path(rel).suffix.lower() in imageio.IMAGE_EXTS else ""
        return imageio.EmbeddedImage(jpath.resolve(), name or jpath.stem + ".jpg")
    return found


def _size_field(obj: dict, key: str, jpath: Path) -> int | None:
    v = obj.get(key)
    if v is None or v == "":
        return None
    try:
        n = float(v)
    except (TypeError, ValueError):
        raise FormatError(jpath, f"{key} is not a number: {v!r:.40}", "fix it in labelme") from None
    if not np.isfinite(n) or n < 0:
        raise FormatError(jpath, f"{key} is {v!r}", "fix it in labelme")
    return int(n)


def _load(jpath: Path):
    try:
        return json.loads(jpath.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FormatError(
            jpath, f"not valid JSON: {e}", "open it in labelme and save again"
        ) from None


def _objects(raw_shapes: list, jpath: Path, shapes: str, index: ClassIndex, issues: list):
    """``(boxes, labels, difficult)`` of a file's shapes: shapes sharing a label and a
    ``group_id`` become one box; shapes that enclose no area are skipped with a note."""
    groups: dict[tuple, list] = {}
    order: list[tuple] = []
    skipped: list[str] = []
    for k, shape in enumerate(raw_shapes):
        label = str(shape.get("label", "")).strip() if isinstance(shape, dict) else "?"
        if label == "__ignore__" or not label:
            continue
        kind = shape.get("shape_type") if isinstance(shape, dict) else None
        if kind in NO_AREA:
            skipped.append(f"{kind} {label!r}")
            continue
        try:
            box, kind = _shape_box(shape)
        except (ValueError, TypeError) as e:
            raise FormatError(
                jpath, f"shape {k} ({label!r}): {e}", "fix or delete it in labelme"
            ) from e
        if kind in LINES and (box[2] <= box[0] or box[3] <= box[1]):
            skipped.append(f"flat {kind} {label!r}")
            continue
        if kind not in RECT_SHAPES and shapes == "skip":
            continue
        gid = shape.get("group_id")
        key = (label, gid) if isinstance(gid, (int, str)) else (label, None, k)
        if key not in groups:
            groups[key] = []
            order.append(key)
        flags = shape.get("flags")
        groups[key].append((box, isinstance(flags, dict) and bool(flags.get("difficult"))))
    if skipped:
        issues.append(
            Issue(
                str(jpath),
                "skipped_shape",
                f"{len(skipped)} shapes that enclose no area skipped ({', '.join(skipped[:3])})",
            )
        )
    boxes, labels, difficult = [], [], []
    for key in order:
        b = np.array([g[0] for g in groups[key]])
        boxes.append([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()])
        labels.append(index(key[0]))
        difficult.append(any(g[1] for g in groups[key]))
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return boxes, labels, difficult


def read_file(
    jpath: Path, index: ClassIndex, shapes: str = "box", within: Within | None = None, obj=None
) -> tuple[Sample | None, list]:
    """Read one labelme JSON; returns the sample (None if its image is missing) and issues."""
    issues: list[Issue] = []
    obj = _load(jpath) if obj is None else obj
    if not is_labelme(obj):
        raise FormatError(jpath, "not a labelme file (no 'shapes'/'imagePath')")
    raw_shapes = obj.get("shapes")
    if raw_shapes is None:
        issues.append(Issue(str(jpath), "no_shapes", "no 'shapes': read as a negative", "info"))
    elif not isinstance(raw_shapes, list):
        raise FormatError(
            jpath, f"'shapes' must be a list, got {type(raw_shapes).__name__}", "save it in labelme"
        )
    jw, jh = _size_field(obj, "imageWidth", jpath), _size_field(obj, "imageHeight", jpath)
    ref = _find_image(jpath, obj, within or Within(jpath.parent), issues)
    if ref == OUTSIDE:
        return None, issues
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
        issues.append(Issue(str(ref.path), "unreadable_image", e.reason, "error"))
        w, h = jw or 0, jh or 0
    if jw and jh and (jw, jh) != (w, h) and w and h:
        issues.append(
            Issue(
                str(jpath),
                "size_mismatch",
                f"JSON says {jw}x{jh}, image is {w}x{h} (EXIF orientation?)",
            )
        )
    boxes, labels, difficult = _objects(raw_shapes or [], jpath, shapes, index, issues)
    return Sample(ref, w, h, boxes, labels, difficult=difficult), issues


def read(
    path,
    *,
    shapes: str = "box",
    negatives: bool = False,
    names=None,
    outside_paths: str = "error",
    **_,
) -> Dataset:
    """Read a folder of labelme JSON files (recursively) or one JSON file.

    ``shapes='skip'`` drops non-rectangular shapes instead of boxing them; ``negatives=True``
    adds images that have no JSON as negatives; ``outside_paths`` see :class:`Within`.
    """
    path = Path(path)
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*.json") if not p.name.startswith("."))
    )
    root = path.parent if path.is_file() else path
    index = ClassIndex(names or read_classes_file(root))
    within = Within(path, outside_paths)
    samples, issues, flags = [], [], []
    for jp in files:
        try:
            head = _load(jp)
        except FormatError as e:
            if path.is_file():
                raise
            issues.append(Issue(str(jp), "bad_json", e.message + "; skipped", "error"))
            continue
        if path.is_dir() and not is_labelme(head):
            continue
        s, found = read_file(jp, index, shapes, within, head)
        issues += found
        if s is not None:
            samples.append(s)
            flags.append((jp, head.get("flags")))
    if samples and _flags_only(samples, flags):
        return _classification(samples, flags, names, root, issues)
    if negatives and path.is_dir():
        samples += unlabeled_negatives(path, samples, issues)
    classes, samples = index.finish(samples)
    return Dataset(classes, samples, root, issues=issues, format=NAME)


def _set_flags(flags) -> list[str]:
    return [str(k) for k, v in flags.items() if v is True] if isinstance(flags, dict) else []


def _flags_only(samples: list[Sample], flags: list) -> bool:
    """labelme's image classification: no shapes anywhere, image-level flags set."""
    return all(not len(s.boxes) for s in samples) and any(_set_flags(f) for _, f in flags)


def _classification(samples, flags, names, root, issues) -> Dataset:
    """Each image's one set flag is its class (labelme's ``--flags`` classification)."""
    index = ClassIndex(names)
    out = []
    for s, (jp, f) in zip(samples, flags):
        on = _set_flags(f)
        if len(on) != 1:
            raise FormatError(
                jp,
                f"image-level flags set: {on or 'none'}; a classifier takes exactly one class "
                "per image",
                "set one flag per image in labelme (or draw boxes for detection)",
            )
        out.append(s.replace(category=index(on[0])))
    classes, out = index.finish(out)
    return Dataset(classes, out, root, task="classify", issues=issues, format=NAME)


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
