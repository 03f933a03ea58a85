"""COCO instances JSON: xywh pixel boxes, any category ids, ``iscrowd``, image-only negatives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from detforge.boxes import from_xyxy, to_xyxy
from detforge.data import image as imageio
from detforge.data.dataset import Dataset, Issue, Sample
from detforge.data.formats._common import image_size, start_write
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


def read(path, *, images=None, names=None, **_) -> Dataset:
    """Read a COCO JSON (or the folder holding it). Images are looked up in ``images`` first,
    then beside the JSON, in ``images/``, and in the folder named after ``instances_<split>``."""
    path = Path(path)
    jpath = path if path.is_file() else find_json(path)
    if jpath is None:
        raise FormatError(path, "no COCO JSON found in this folder")
    try:
        obj = json.loads(jpath.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        raise FormatError(jpath, f"not valid JSON: {e}") from e
    if not is_coco(obj):
        raise FormatError(jpath, "not a COCO file (needs 'images' and 'annotations'/'categories')")
    cats = sorted(obj.get("categories") or [], key=lambda c: c["id"])
    classes = [str(c["name"]) for c in cats]
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    per_image: dict = {}
    for k, a in enumerate(obj.get("annotations") or []):
        per_image.setdefault(a.get("image_id"), []).append((k, a))
    dirs = _image_dirs(jpath, Path(images) if images else None)
    samples, issues = [], []
    for im in obj["images"]:
        fname = str(im.get("file_name", "")).replace("\\", "/")
        found = next((d / fname for d in dirs if (d / fname).is_file()), None)
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
        boxes, labels, crowd = [], [], []
        for k, a in per_image.get(im["id"], []):
            if a.get("category_id") not in cat_index:
                raise FormatError(
                    jpath,
                    f"annotation {k} (id {a.get('id')}): unknown category_id "
                    f"{a.get('category_id')}",
                    "add the category or drop the box",
                )
            bbox = a.get("bbox")
            if not bbox or len(bbox) != 4:
                raise FormatError(jpath, f"annotation {k} (id {a.get('id')}): no bbox [x, y, w, h]")
            boxes.append(bbox)
            labels.append(cat_index[a["category_id"]])
            crowd.append(bool(a.get("iscrowd", 0)))
        w, h = im.get("width"), im.get("height")
        if not w or not h:
            if not (size := image_size(found, issues)):
                continue
            w, h = size
        xyxy = to_xyxy(np.array(boxes, np.float64).reshape(-1, 4), "xywh")
        samples.append(
            Sample(imageio.FileImage(found.resolve()), w, h, xyxy, labels, iscrowd=crowd)
        )
    ds = Dataset(classes, samples, jpath.parent, issues=issues, format=NAME)
    return ds.with_classes(names) if names else ds


def to_dict(ds: Dataset, names: list[str]) -> dict:
    images, anns = [], []
    for i, (s, n) in enumerate(zip(ds.samples, names), start=1):
        images.append({"id": i, "file_name": n, "width": s.width, "height": s.height})
        for b, lab, c, q in zip(from_xyxy(s.boxes, "xywh"), s.labels, s.iscrowd, s.boxes):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(lab) + 1,
                    "bbox": [round(float(v), 4) for v in b],
                    "area": round(float(b[2] * b[3]), 4),
                    "iscrowd": int(c),
                    "segmentation": [
                        [
                            float(q[0]),
                            float(q[1]),
                            float(q[2]),
                            float(q[1]),
                            float(q[2]),
                            float(q[3]),
                            float(q[0]),
                            float(q[3]),
                        ]
                    ],
                }
            )
    cats = [{"id": i + 1, "name": c, "supercategory": "none"} for i, c in enumerate(ds.classes)]
    return {
        "info": {"description": "written by detforge"},
        "images": images,
        "annotations": anns,
        "categories": cats,
    }


def write(ds: Dataset, dst, *, images: str = "copy", overwrite: bool = False) -> Path:
    """Write ``annotations.json`` and ``images/`` into ``dst``."""
    dst, _, names = start_write(ds, dst, images, overwrite)
    atomic_write_json(dst / ANNOTATION_FILE, to_dict(ds, names), indent=None)
    return dst
