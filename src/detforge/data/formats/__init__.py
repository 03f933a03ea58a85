"""One module per annotation format, each with ``read(path, **opts)`` and ``write(ds, dst, ...)``.

``detect(path)`` tells the format of a path for ``--format auto``.
"""

from __future__ import annotations

import json
from pathlib import Path

from detforge.data.formats import (
    coco,
    csv,
    cvat,
    folders,
    labelme,
    labelstudio,
    tfrecord,
    voc,
    yolo,
)
from detforge.data.image import IMAGE_EXTS
from detforge.errors import UnknownFormatError

FORMATS = {m.NAME: m for m in (labelme, voc, coco, yolo, csv, tfrecord, folders, cvat, labelstudio)}
FORMAT_HINT = (
    "data commands take --format NAME; in a data YAML write the split as "
    "{path: ..., format: NAME} (NAME: " + ", ".join(FORMATS) + ")"
)


def get(name: str):
    """The format module called ``name``; an unknown name lists the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(FORMATS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"one of {', '.join(FORMATS)}"
        raise UnknownFormatError(f"unknown format {name!r}", hint) from None


def _json_kind(p: Path) -> str | None:
    try:
        obj = json.loads(p.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, RecursionError):
        return None
    if labelme.is_labelme(obj):
        return "labelme"
    if coco.is_coco(obj):
        return "coco"
    if labelstudio.is_labelstudio(obj):
        return "labelstudio"
    return None


def detect(path) -> str:
    """The format name of ``path`` (a folder, an annotation file or a record file)."""
    p = Path(path)
    if (
        not p.exists()
        and not any(c in str(p) for c in "*?[")
        and not list(p.parent.glob(p.name + "-*-of-*"))
    ):
        raise UnknownFormatError(f"{p} does not exist", "check the path")
    if not p.is_dir():
        suffix = p.suffix.lower()
        if suffix == ".json":
            if p.name == "index.json":
                return "tfrecord"
            kind = _json_kind(p)
            if kind:
                return kind
        elif suffix == ".xml":
            return "cvat" if cvat.sniff(p) else "voc"
        elif suffix == ".csv":
            if csv.csv_kind(p):
                return "csv"
            message, hint = csv.explain_header(p)
            raise UnknownFormatError(f"{p}: {message}", hint)
        elif suffix in (".yaml", ".yml"):
            return "yolo"
        elif suffix in (".record", ".tfrecord", ".pbtxt") or "-of-" in p.name or not p.exists():
            return "tfrecord"
        raise UnknownFormatError(f"cannot tell the annotation format of {p}", FORMAT_HINT)
    return _detect_dir(p)


def _yolo_images_dir(p: Path) -> bool:
    """``.../images/<split>``: a matching ``labels`` folder, or images and no annotation files
    (a split whose label files are all absent is all negatives)."""
    p = p.resolve()
    if "images" not in p.parts:
        return False
    if yolo.label_path(p / "x.jpg").parent.is_dir():
        return True
    files = [f for f in p.iterdir() if f.is_file()]
    return any(f.suffix.lower() in IMAGE_EXTS for f in files) and not any(
        f.suffix.lower() in (".json", ".xml", ".csv") for f in files
    )


def _labelimg_yolo_dir(p: Path) -> bool:
    """LabelImg's YOLO mode: ``classes.txt`` and a ``.txt`` beside each labeled image."""
    files = [f for f in p.iterdir() if f.is_file()]
    stems = {f.stem for f in files if f.suffix.lower() in IMAGE_EXTS}
    txts = {f.stem for f in files if f.suffix == ".txt" and f.name != "classes.txt"}
    return bool(stems) and (bool(stems & txts) or (p / "classes.txt").is_file())


def _detect_dir(p: Path) -> str:
    names = {c.name for c in p.iterdir()}
    if "index.json" in names:
        return "tfrecord"
    if "Annotations" in names:
        return "voc"
    if yolo.find_yaml(p) or ("images" in names and "labels" in names) or _yolo_images_dir(p):
        return "yolo"
    files = list(p.iterdir())
    if any(f.suffix in (".record", ".tfrecord") or "-of-" in f.name for f in files if f.is_file()):
        return "tfrecord"
    if coco.find_json(p) and _json_kind(coco.find_json(p)) == "coco":
        return "coco"
    if cvat.find_xml(p):
        return "cvat"
    if labelstudio.find_json(p):
        return "labelstudio"
    for j in sorted(p.rglob("*.json"))[:20]:
        if _json_kind(j) == "labelme":
            return "labelme"
    if next(p.rglob("*.xml"), None) is not None:
        return "voc"
    if _labelimg_yolo_dir(p):  # after labelme, whose folders may hold a classes.txt too
        return "yolo"
    if csv.find_csv(p):
        return "csv"
    subdirs = folders.class_dirs(p)
    if subdirs and not any(f.suffix.lower() in IMAGE_EXTS for f in files if f.is_file()):
        return "folders"
    stray_csv = next(iter(sorted(p.glob("*.csv"))), None)
    if stray_csv is not None:
        message, hint = csv.explain_header(stray_csv)
        raise UnknownFormatError(f"{stray_csv}: {message}", hint)
    raise UnknownFormatError(f"cannot tell the annotation format of {p}", FORMAT_HINT)
