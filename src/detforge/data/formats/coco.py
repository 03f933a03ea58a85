"""COCO instances JSON: xywh pixel boxes, any category ids, ``iscrowd``, image-only negatives,
and the per-annotation ``attributes`` object CVAT's COCO export writes (``occluded``,
``track_id``, its own attributes), kept per box and written back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from detforge.boxes import to_xyxy
from detforge.data import image as imageio
from detforge.data.dataset import Dataset, Issue, Sample
from detforge.data.formats._common import OUTSIDE, Within, image_size, start_write
from detforge.errors import FormatError
from detforge.fileio import atomic_write_json

NAME = "coco"
ANNOTATION_FILE = "annotations.json"


def is_coco(obj) -> bool:
    return (
        isinstance(obj, dict) and "images" in obj and ("annotations" in obj or "categories" in obj)
    )


def find_json(folder: Path) -> Path | None:
    """The COCO JSON inside ``folder`` (``annotations.json``, ``_annotations.coco.json``, ...)."""
    cands = sorted(folder.glob("*.json")) + sorted(folder.glob("annotations/*.json"))
    for c in cands:
        try:
            with c.open("rb") as f:
                head = f.read(4096).decode("utf-8", "ignore")
        except OSError:
            continue
        if '"images"' in head or '"categories"' in head or '"info"' in head or '"licenses"' in head:
            return c
    return None


def _image_dirs(jpath: Path, images: Path | None) -> list[Path]:
    d = jpath.parent
    out = [images] if images else []
    out += [d, d / "images", d.parent, d.parent / "images"]
    stem = jpath.stem  # instances_val2017 -> val2017
    if "_" in stem:
        out += [d.parent / stem.split("_", 1)[1], d.parent / "images" / stem.split("_", 1)[1]]
    return out


def _ids(items, what: str, jpath: Path) -> dict:
    """``{id: item}`` of COCO ``images`` or ``categories``: each an object with a unique
    integer (or string) id."""
    if not isinstance(items, list):
        raise FormatError(jpath, f"'{what}' must be a list, got {type(items).__name__}")
    out: dict = {}
    for k, it in enumerate(items):
        if not isinstance(it, dict) or "id" not in it:
            raise FormatError(
                jpath, f"{what}[{k}] has no 'id'", f"give every entry of {what} an id"
            )
        key = it["id"]
        if not isinstance(key, (int, str)) or isinstance(key, bool):
            raise FormatError(jpath, f"{what}[{k}] has id {key!r}; ids are integers")
        if key in out:
            raise FormatError(
                jpath,
                f"{what}[{k}] repeats id {key!r}",
                "ids must be unique; boxes of one image would land on another",
            )
        out[key] = it
    return out


def _bbox(a, k: int, jpath: Path) -> list[float]:
    bbox = a.get("bbox")
    try:
        values = [float(v) for v in bbox] if isinstance(bbox, list) else None
    except (TypeError, ValueError):
        values = None
    if values is None or len(values) != 4 or isinstance(bbox[0], bool):
        raise FormatError(
            jpath,
            f"annotation {k} (id {a.get('id')}): bbox must be 4 numbers [x, y, w, h], "
            f"got {bbox!r:.60}",
        )
    return values


def _annotations(obj: dict, images: dict, jpath: Path, issues: list) -> dict:
    """Annotations grouped by image id; one whose image id is unknown is reported."""
    anns = obj.get("annotations") or []
    if not isinstance(anns, list):
        raise FormatError(jpath, f"'annotations' must be a list, got {type(anns).__name__}")
    per_image: dict = {}
    orphans = []
    for k, a in enumerate(anns):
        if not isinstance(a, dict):
            raise FormatError(jpath, f"annotation {k} is not an object")
        img_id = a.get("image_id")
        if not isinstance(img_id, (int, str)) or img_id not in images:
            orphans.append(k)
            continue
        per_image.setdefault(img_id, []).append((k, a))
    if orphans:
        issues.append(
            Issue(
                str(jpath),
                "orphan_annotation",
                f"{len(orphans)} annotations name an image id that is not in 'images' "
                f"(first: annotation {orphans[0]}, image_id "
                f"{anns[orphans[0]].get('image_id')!r}); they are not used",
                "error",
            )
        )
    return per_image


def read(path, *, images=None, names=None, outside_paths: str = "error", **_) -> Dataset:
    """Read a COCO JSON (or the folder holding it). Images are looked up in ``images`` first,
    then beside the JSON, in ``images/``, and in the folder named after ``instances_<split>``."""
    path = Path(path)
    jpath = path if path.is_file() else find_json(path)
    if jpath is None:
        raise FormatError(path, "no COCO JSON found in this folder")
    try:
        obj = json.loads(jpath.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, RecursionError) as e:
        raise FormatError(jpath, f"not valid JSON: {e}") from None
    if not is_coco(obj):
        raise FormatError(jpath, "not a COCO file (needs 'images' and 'annotations'/'categories')")
    cats = _ids(obj.get("categories") or [], "categories", jpath)
    order = sorted(cats, key=lambda i: (isinstance(i, str), i))
    classes = [str(cats[i].get("name", i)) for i in order]
    cat_index = {c: i for i, c in enumerate(order)}
    image_items = _ids(obj["images"], "images", jpath)
    issues: list[Issue] = []
    per_image = _annotations(obj, image_items, jpath, issues)
    dirs = _image_dirs(jpath, Path(images) if images else None)
    within = Within(path, outside_paths, images)
    samples = []
    for im_id, im in image_items.items():
        fname = str(im.get("file_name", "")).replace("\\", "/")
        found = within.pick([d / fname for d in dirs] if fname else [], jpath, fname, issues)
        if found == OUTSIDE:
            continue
        if found is None:
            issues.append(
                Issue(
                    str(jpath),
                    "missing_image",
                    f"image {fname!r} not found; pass images=DIR (--images)",
                    "error",
                )
            )
            continue
        boxes, labels, crowd, attrs = [], [], [], []
        for k, a in per_image.get(im_id, []):
            if a.get("category_id") not in cat_index:
                raise FormatError(
                    jpath,
                    f"annotation {k} (id {a.get('id')}): unknown category_id "
                    f"{a.get('category_id')!r}",
                    "add the category or drop the box",
                )
            boxes.append(_bbox(a, k, jpath))
            labels.append(cat_index[a["category_id"]])
            crowd.append(bool(a.get("iscrowd", 0)))
            attrs.append(a["attributes"] if isinstance(a.get("attributes"), dict) else None)
        w, h = _size(im, "width"), _size(im, "height")
        if not w or not h:
            if not (size := image_size(found, issues)):
                continue
            w, h = size
        xyxy = to_xyxy(np.array(boxes, np.float64).reshape(-1, 4), "xywh")
        image = imageio.FileImage(os.path.abspath(found))
        samples.append(Sample(image, w, h, xyxy, labels, iscrowd=crowd, attributes=attrs))
    ds = Dataset(classes, samples, jpath.parent, issues=issues, format=NAME)
    return ds.with_classes(names) if names else ds


def _size(im: dict, key: str) -> int | None:
    """An image's width or height from the JSON, None when absent or not a positive number
    (then the image header is read)."""
    try:
        v = float(im.get(key))
    except (TypeError, ValueError):
        return None
    return int(v) if np.isfinite(v) and v > 0 else None


DECIMALS = 4  # box coordinates and areas in every COCO file detforge writes: 1e-4 px


def coco_bbox(box_xyxy) -> list[float]:
    """One box, x0 y0 x1 y1 -> COCO's ``[x, y, width, height]``, rounded as every COCO file
    detforge writes rounds it."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    return [round(v, DECIMALS) for v in (x0, y0, x1 - x0, y1 - y0)]


def to_dict(ds: Dataset, names: list[str]) -> dict:
    """The COCO dict of ``ds`` with file names ``names``: what the writer saves and what eval
    scores against (image ids are sample index + 1, category ids label + 1)."""
    images, anns = [], []
    for i, (s, n) in enumerate(zip(ds.samples, names), start=1):
        images.append({"id": i, "file_name": n, "width": s.width, "height": s.height})
        extra = s.attributes or ({},) * len(s.boxes)
        for q, lab, c, attrs in zip(s.boxes, s.labels, s.iscrowd, extra):
            x0, y0, x1, y1 = (float(v) for v in q)
            bbox = coco_bbox(q)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(lab) + 1,
                    "bbox": bbox,
                    "area": round(bbox[2] * bbox[3], DECIMALS),
                    "iscrowd": int(c),
                    "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
                    **({"attributes": attrs} if attrs else {}),
                }
            )
    cats = [{"id": i + 1, "name": c, "supercategory": "none"} for i, c in enumerate(ds.classes)]
    return {
        "info": {"description": "written by detforge"},
        "images": images,
        "annotations": anns,
        "categories": cats,
    }


def coco_results(image_id: int, boxes, scores, labels, **extra) -> list[dict]:
    """One image's detections (x0 y0 x1 y1 boxes) as COCO result entries (``extra`` goes into
    each, e.g. ``file_name``): what eval scores and ``predict --save-format coco`` writes."""
    return [
        {
            "image_id": image_id,
            **extra,
            "category_id": int(lab) + 1,
            "bbox": coco_bbox(b),
            "score": round(float(sc), 5),
        }
        for b, sc, lab in zip(boxes, scores, labels)
    ]


def write(ds: Dataset, dst, *, images: str = "copy", overwrite: bool = False) -> Path:
    """Write ``annotations.json`` and ``images/`` into ``dst``."""
    dst, _, names = start_write(ds, dst, images, overwrite)
    atomic_write_json(dst / ANNOTATION_FILE, to_dict(ds, names), indent=None)
    return dst
