"""Label Studio: its JSON export (a list of tasks) and JSON-MIN, read and written.

JSON: each task's ``data.image`` names the image; its first annotation that was not cancelled
holds ``result[]`` items of type ``rectanglelabels`` (``x``, ``y``, ``width``, ``height`` in
percent of ``original_width`` / ``original_height``, ``rotation`` in degrees clockwise about
the top-left corner: read as the enclosing box) and ``polygonlabels`` (``points`` in percent:
their enclosing box); other result types (choices, keypoints, brushes) are skipped with a note.
A task whose annotation has no box is a negative; a task nobody annotated (only
``predictions``, or none) is left out with a note. JSON-MIN: one object per task, the image under
``image`` and the boxes in a list of the same value objects.

``data.image`` may be a local-files URL (``/data/local-files/?d=photos/a.jpg``), an upload path
(``/data/upload/3/8f2c1a7e-a.jpg``, whose hash prefix Label Studio added), an http(s) or s3 URL,
or a plain path (Windows separators work). It is looked up relative to the JSON's folder and to
the folder given as ``images=``, then by its file name there (and under ``images/``); paths
leaving the dataset follow the same rules as every reader. Percentages a hair over 100 (as
Label Studio writes them) are clipped to the image.

The writer writes ``tasks.json`` (JSON, importable into a project whose labeling config has
``RectangleLabels``; ``predictions`` instead of ``annotations`` for pre-annotations) with
``data.image`` as ``/data/local-files/?d=images/NAME``: serve the output folder as Label
Studio's local-files document root.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from detforge.data import image as imageio
from detforge.data.dataset import ClassIndex, Dataset, Issue, Sample, read_classes_file
from detforge.data.formats._common import OUTSIDE, Within, start_write, write_classes
from detforge.errors import FormatError
from detforge.fileio import atomic_write_text

NAME = "labelstudio"
BOX_TYPES = ("rectanglelabels", "polygonlabels")
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


def is_labelstudio(obj) -> bool:
    """A list of tasks (``data`` with ``annotations`` or ``predictions``) or of JSON-MIN rows
    (an ``image`` key and ``id``); an empty list is not enough to tell."""
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], dict):
        return False
    first = obj[0]
    if isinstance(first.get("data"), dict):
        return any(k in first for k in ("annotations", "predictions", "id"))
    return "image" in first and ("id" in first or "annotation_id" in first)


def _image_ref(value: str) -> str:
    """The path part of a ``data.image`` value (see the module docstring)."""
    value = str(value).strip()
    url = urlparse(value)
    path = unquote(value)
    if "local-files" in url.path and parse_qs(url.query).get("d"):
        path = parse_qs(url.query)["d"][0]  # parse_qs has decoded it
    elif url.scheme in ("http", "https", "s3", "gs", "azure-blob"):
        path = unquote(url.path).lstrip("/")
    return path.replace("\\", "/")  # Windows separators, wherever they came from


def _find_image(jpath: Path, value: str, images: Path | None, within: Within, issues: list):
    rel = _image_ref(value)
    name = Path(rel).name
    names = [name]
    if "/data/upload/" in value and UPLOAD_PREFIX.match(name):
        names.append(UPLOAD_PREFIX.sub("", name, count=1))
    if name and not Path(name).suffix:  # "/image1": the file's extension left out
        names += [name + e for e in imageio.IMAGE_EXTS]
    roots = ([images] if images else []) + [jpath.parent, jpath.parent / "images"]
    cands = []
    if rel and not rel.startswith("data/upload"):
        cands += [r / rel for r in roots]
    cands += [r / n for r in roots for n in names if n]
    found = within.pick(cands, jpath, value, issues)
    return found if found in (None, OUTSIDE) else Path(os.path.abspath(found))


def _value_box(v: dict, kind: str, w: float, h: float) -> np.ndarray:
    if kind == "polygonlabels":
        pts = np.asarray(v["points"], np.float64).reshape(-1, 2) * [w / 100, h / 100]
        return np.concatenate([pts.min(0), pts.max(0)])
    x, y = float(v["x"]) * w / 100, float(v["y"]) * h / 100
    bw, bh = float(v["width"]) * w / 100, float(v["height"]) * h / 100
    angle = float(v.get("rotation") or 0.0)
    if not angle:
        return np.array([x, y, x + bw, y + bh])
    t = np.deg2rad(angle)  # clockwise on screen (y down) about the top-left corner
    corners = np.array([[0, 0], [bw, 0], [bw, bh], [0, bh]])
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    pts = corners @ rot.T + [x, y]
    return np.concatenate([pts.min(0), pts.max(0)])


def _results(task: dict, predictions: bool = False) -> list | None:
    """The result list of a task's first annotation that was not cancelled (``completions``
    in exports of Label Studio before 1.0; ``predictions``: its first prediction); None when
    there is none."""
    for key in ("predictions",) if predictions else ("annotations", "completions"):
        for ann in task.get(key) or []:
            if isinstance(ann, dict) and not ann.get("was_cancelled"):
                return list(ann.get("result") or [])
    return None


def _min_results(row: dict) -> list:
    """JSON-MIN: every list of value objects in the row, as result items."""
    out = []
    for v in row.values():
        if isinstance(v, list):
            for item in v:
                if isinstance(item, dict):
                    kind = next((k for k in BOX_TYPES if k in item), "")
                    out.append({"type": kind, "value": item,
                                "original_width": item.get("original_width"),
                                "original_height": item.get("original_height")})  # fmt: skip
    return out


def _task_sample(jpath, k, task, minimal, index, images, within, issues, predictions=False):
    value = task.get("image") if minimal else (task.get("data") or {}).get("image")
    where = f"task {task.get('id', k)}"
    if not isinstance(value, str) or not value:
        raise FormatError(jpath, f"{where}: no image in {'image' if minimal else 'data.image'}",
                          "export the project again (JSON or JSON-MIN)")  # fmt: skip
    results = _min_results(task) if minimal else _results(task, predictions)
    if results is None:
        return "unlabeled"
    ref = _find_image(jpath, value, images, within, issues)
    if ref == OUTSIDE:
        return None
    if ref is None:
        issues.append(Issue(str(jpath), "missing_image",
                            f"{where}: image {value!r} not found beside the JSON or in "
                            "images/; pass images=DIR (--images)", "error"))  # fmt: skip
        return None
    try:
        w, h, _ = imageio.file_info(ref)
    except Exception as e:  # noqa: BLE001 - reported; the sizes in the results still count
        issues.append(Issue(str(ref), "unreadable_image", str(e), "error"))
        w = h = 0
    boxes, labels, skipped = [], [], []
    for r in results:
        kind = r.get("type") if isinstance(r, dict) else None
        v = r.get("value") if isinstance(r, dict) else None
        if kind not in BOX_TYPES or not isinstance(v, dict) or not v.get(kind):
            skipped.append(str(kind))
            continue
        ow = float(r.get("original_width") or w)
        oh = float(r.get("original_height") or h)
        try:
            box = _value_box(v, kind, ow, oh)
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(jpath, f"{where}: a {kind} value is incomplete ({e})",
                              "export the project again") from None  # fmt: skip
        if ow and oh and w and h and (ow, oh) != (w, h):  # annotated at another size
            box = box * [w / ow, h / oh, w / ow, h / oh]
        boxes.append(box)
        labels.append(index(str(v[kind][0])))
    if skipped:
        issues.append(Issue(str(jpath), "skipped_shape",
                            f"{where}: {len(skipped)} results that are no box skipped "
                            f"({', '.join(skipped[:3])})", "info"))  # fmt: skip
    b = np.array(boxes, np.float32).reshape(-1, 4)
    if w and h:
        b[:, 0::2], b[:, 1::2] = b[:, 0::2].clip(0, w), b[:, 1::2].clip(0, h)
    return Sample(imageio.FileImage(ref), w, h, b, labels)


def load(jpath: Path):
    try:
        return json.loads(jpath.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FormatError(jpath, f"not valid JSON: {e}", "export the project again") from None


def read(path, *, images=None, names=None, outside_paths: str = "error", predictions=False,
         **_) -> Dataset:  # fmt: skip
    """Read a Label Studio JSON or JSON-MIN export (the file, or a folder holding one);
    ``predictions``: each task's first prediction instead of its annotation (pre-annotations,
    e.g. from ``predict --save-labelstudio``)."""
    path = Path(path)
    jpath = path if path.is_file() else find_json(path)
    if jpath is None:
        raise FormatError(path, "no Label Studio JSON export here", "pass the exported JSON")
    tasks = load(jpath)
    if not is_labelstudio(tasks) and tasks != []:
        raise FormatError(jpath, "not a Label Studio export (a list of tasks)",
                          "export the project as JSON or JSON-MIN")  # fmt: skip
    images = Path(images) if images else None
    index = ClassIndex(names or read_classes_file(jpath.parent))
    within = Within(jpath.parent, outside_paths, images)
    minimal = bool(tasks) and not isinstance(tasks[0].get("data"), dict)
    samples, issues, unlabeled = [], [], 0
    for k, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise FormatError(jpath, f"task {k} is not an object", "export the project again")
        s = _task_sample(jpath, k, task, minimal, index, images, within, issues, predictions)
        unlabeled += s == "unlabeled"
        if isinstance(s, Sample):
            samples.append(s)
    if unlabeled:  # not negatives: nobody has looked at them yet
        issues.append(
            Issue(
                str(jpath),
                "unlabeled_task",
                f"{unlabeled} tasks without an annotation left out",
                "info",
            )
        )
    classes, samples = index.finish(samples)
    return Dataset(classes, samples, jpath.parent, issues=issues, format=NAME)


def find_json(folder: Path) -> Path | None:
    """The one Label Studio export in ``folder`` (``tasks.json`` first)."""
    cands = [folder / "tasks.json"] + sorted(folder.glob("*.json"))
    for c in cands:
        if c.is_file() and c.stat().st_size < 512 << 20 and is_labelstudio(_quiet_load(c)):
            return c
    return None


def _quiet_load(p: Path):
    try:
        return json.loads(p.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None


def result_items(s: Sample, classes: list[str], scores=None) -> list[dict]:
    """A sample's boxes as ``rectanglelabels`` results (percent of the image; ``scores``
    adds each box's ``score``, as predictions carry it)."""
    out = []
    w, h = max(s.width, 1), max(s.height, 1)
    for k, (b, lab) in enumerate(zip(s.boxes.astype(np.float64), s.labels)):
        item = {
            "id": f"b{k}",
            "type": "rectanglelabels",
            "from_name": "label",
            "to_name": "image",
            "original_width": s.width,
            "original_height": s.height,
            "image_rotation": 0,
            "value": {
                "x": b[0] * 100 / w,
                "y": b[1] * 100 / h,
                "width": (b[2] - b[0]) * 100 / w,
                "height": (b[3] - b[1]) * 100 / h,
                "rotation": 0,
                "rectanglelabels": [classes[int(lab)]],
            },
        }
        if scores is not None:
            item["score"] = round(float(scores[k]), 4)
        out.append(item)
    return out


def task(s: Sample, classes: list[str], image: str, k: int, scores=None, model: str = "") -> dict:
    """One task: the image and its boxes as an annotation, or with ``scores`` as a
    prediction of ``model``."""
    items = result_items(s, classes, scores)
    t = {"id": k + 1, "data": {"image": image}}
    if scores is None:
        t["annotations"] = [{"result": items}]
    else:
        score = float(np.mean(scores)) if len(scores) else 0.0
        t["predictions"] = [{"model_version": model, "score": round(score, 4), "result": items}]
    return t


def write(ds: Dataset, dst, *, images: str = "copy", overwrite: bool = False) -> Path:
    """Write ``tasks.json`` (Label Studio JSON) and ``images/``."""
    dst, names, refs = start_write(ds, dst, images, overwrite)
    urls = [f"/data/local-files/?d=images/{n}" for n in names] if images != "none" else refs
    tasks = [task(s, ds.classes, u, k) for k, (s, u) in enumerate(zip(ds.samples, urls))]
    atomic_write_text(dst / "tasks.json", json.dumps(tasks, indent=1))
    write_classes(dst, ds.classes)
    return dst
