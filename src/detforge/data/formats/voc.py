"""Pascal VOC XML: a flat LabelImg folder or the VOCdevkit layout.

Coordinates are read as written (floats allowed; no 1-pixel shift, as LabelImg and labelme
write them). A stale absolute ``<path>`` falls back to ``<filename>`` beside the XML, in a
sibling ``images/`` or ``JPEGImages/`` folder, or in the ``images`` folder the user gives.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import defusedxml.ElementTree as SafeET
import numpy as np
from defusedxml import DefusedXmlException

from detforge.data import image as imageio
from detforge.data.dataset import ClassIndex, Dataset, Issue, Sample, read_classes_file
from detforge.data.formats._common import (
    OUTSIDE,
    Within,
    fmt_num,
    start_write,
    unlabeled_negatives,
    write_classes,
)
from detforge.errors import FormatError, ImageError
from detforge.fileio import atomic_write_text, read_text

NAME = "voc"


def _text(node, tag: str, default: str = "") -> str:
    el = node.find(tag)
    return default if el is None or el.text is None else el.text.strip()


def _num(node, tag: str, xml: Path, default: float | None = None) -> float:
    txt = _text(node, tag)
    if not txt:
        if default is not None:
            return default
        raise FormatError(xml, f"<{tag}> is missing or empty", "fix the XML in LabelImg")
    try:
        return float(txt)
    except ValueError as e:
        raise FormatError(xml, f"<{tag}> is not a number: {txt!r}") from e


def _flag(node, tag: str) -> bool:
    txt = _text(node, tag, "0")
    try:
        return bool(int(float(txt)))
    except ValueError:
        return txt.lower() in ("true", "yes")


def _find_image(xml: Path, path_txt: str, filename: str, images: Path | None, within, issues):
    """The image an XML names: ``<filename>`` (or ``<path>``'s name) beside it, in a sibling
    ``images/`` or ``JPEGImages/``, or in ``images``; ``<path>`` as written last (LabelImg
    stores the labeler's absolute path, valid only on that machine)."""
    path_txt = path_txt.replace("\\", "/")
    names = [filename] if filename else []
    if path_txt:
        names.append(path_txt.rsplit("/", 1)[-1])
    if not names or not Path(names[0]).suffix:  # VOC files sometimes omit the extension
        stem = names[0] if names else xml.stem
        names += [stem + e for e in (".jpg", ".jpeg", ".png", ".JPG", ".PNG")]
    folders = [images] if images else []
    folders += [
        xml.parent,
        xml.parent.parent / "images",
        xml.parent.parent / "JPEGImages",
        xml.parent / "images",
        xml.parent / "JPEGImages",
    ]
    cands = [f / n for f in folders for n in names if n and "/" not in n and n not in (".", "..")]
    if path_txt:
        p = Path(path_txt)
        cands.append(p if p.is_absolute() else xml.parent / p)
    found = within.pick(cands, xml, path_txt or filename, issues)
    return found if found in (None, OUTSIDE) else Path(os.path.abspath(found))


def read_file(xml: Path, index: ClassIndex, images: Path | None = None, within=None):
    """Read one VOC XML -> (Sample or None when its image is missing, issues)."""
    try:
        root = SafeET.parse(xml).getroot()
    except (ET.ParseError, DefusedXmlException) as e:
        raise FormatError(xml, f"not valid XML: {e}", "open it in LabelImg and save again") from e
    if root.tag != "annotation":
        raise FormatError(xml, f"root tag is <{root.tag}>, expected <annotation>")
    issues: list[Issue] = []
    within = within or Within(xml.parent)
    img = _find_image(xml, _text(root, "path"), _text(root, "filename"), images, within, issues)
    if img == OUTSIDE:
        return None, issues
    if img is None:
        issues.append(
            Issue(
                str(xml),
                "missing_image",
                f"image {_text(root, 'filename')!r} not found beside the XML, in "
                "images/ or JPEGImages/; pass images=DIR (--images)",
                "error",
            )
        )
        return None, issues
    size = root.find("size")
    w = int(_num(size, "width", xml, 0)) if size is not None else 0
    h = int(_num(size, "height", xml, 0)) if size is not None else 0
    try:
        rw, rh, _ = imageio.file_info(img)
        if w and h and (w, h) != (rw, rh):
            issues.append(
                Issue(
                    str(xml),
                    "size_mismatch",
                    f"XML says {w}x{h}, image is {rw}x{rh} (EXIF orientation?)",
                )
            )
        w, h = rw, rh
    except ImageError as e:
        issues.append(Issue(str(img), "unreadable_image", e.reason, "error"))
    boxes, labels, diff, trunc = [], [], [], []
    for k, obj in enumerate(root.iter("object")):
        name = _text(obj, "name")
        bb = obj.find("bndbox")
        if not name or bb is None:
            raise FormatError(xml, f"object {k} has no <name> or <bndbox>", "fix it in LabelImg")
        boxes.append([_num(bb, t, xml) for t in ("xmin", "ymin", "xmax", "ymax")])
        labels.append(index(name))
        diff.append(_flag(obj, "difficult"))
        trunc.append(_flag(obj, "truncated"))
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return Sample(imageio.FileImage(img), w, h, boxes, labels, diff, trunc), issues


def _split_ids(root: Path, split: str | None) -> list[str] | None:
    if split is None:
        return None
    f = root / "ImageSets" / "Main" / f"{split}.txt"
    if not f.is_file():
        raise FormatError(f, "split list not found", "name an existing ImageSets/Main/<split>.txt")
    ids = [line.split()[0] for line in read_text(f).splitlines() if line.strip()]
    for ln, i in enumerate(ids, 1):
        if "/" in i or "\\" in i or i in (".", ".."):
            raise FormatError(
                f, f"id {i!r} is a path", "ids are file names without folders", line=ln
            )
    return ids


def read(
    path,
    *,
    images=None,
    split: str | None = None,
    negatives: bool = False,
    names=None,
    outside_paths: str = "error",
    **_,
) -> Dataset:
    """Read VOC XML: one file, a folder of XMLs (recursive) or a VOCdevkit folder
    (``split`` picks ``ImageSets/Main/<split>.txt``). ``negatives=True`` adds images in the
    folder that have no XML."""
    path = Path(path)
    images = Path(images) if images else None
    if path.is_file():
        root, files = path.parent, [path]
    elif (path / "Annotations").is_dir():
        root = path
        ids = _split_ids(path, split)
        ann = path / "Annotations"
        files = [ann / f"{i}.xml" for i in ids] if ids is not None else sorted(ann.glob("*.xml"))
        images = images or path / "JPEGImages"
    else:
        root, files = path, sorted(p for p in path.rglob("*.xml") if not p.name.startswith("."))
    index = ClassIndex(names or read_classes_file(root))
    within = Within(path, outside_paths, images)
    samples, issues = [], []
    for xml in files:
        if not xml.is_file():
            issues.append(Issue(str(xml), "missing_annotation", "listed but not found", "error"))
            continue
        s, found = read_file(xml, index, images, within)
        issues += found
        if s is not None:
            samples.append(s)
    if negatives:
        samples += unlabeled_negatives(images or root, samples, issues)
    classes, samples = index.finish(samples)
    return Dataset(classes, samples, root, issues=issues, format=NAME)


def to_xml(
    s: Sample,
    classes: list[str],
    filename: str,
    path: str | None = None,
    folder: str = "JPEGImages",
) -> str:
    """A VOC annotation as LabelImg writes it."""
    a = ET.Element("annotation")
    ET.SubElement(a, "folder").text = folder
    ET.SubElement(a, "filename").text = filename
    ET.SubElement(a, "path").text = path or filename
    ET.SubElement(ET.SubElement(a, "source"), "database").text = "Unknown"
    size = ET.SubElement(a, "size")
    for tag, v in (("width", s.width), ("height", s.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    ET.SubElement(a, "segmented").text = "0"
    for b, lab, d, t in zip(s.boxes.astype(np.float64), s.labels, s.difficult, s.truncated):
        o = ET.SubElement(a, "object")
        ET.SubElement(o, "name").text = classes[int(lab)]
        ET.SubElement(o, "pose").text = "Unspecified"
        ET.SubElement(o, "truncated").text = str(int(t))
        ET.SubElement(o, "difficult").text = str(int(d))
        bb = ET.SubElement(o, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), b):
            ET.SubElement(bb, tag).text = fmt_num(v)
    ET.indent(a, "\t")
    return ET.tostring(a, encoding="unicode") + "\n"


def write(ds: Dataset, dst, *, images: str = "copy", overwrite: bool = False) -> Path:
    """Write a VOCdevkit layout: ``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/all.txt``."""
    dst, names, refs = start_write(ds, dst, images, overwrite, folder="JPEGImages")
    for s, n, ref in zip(ds.samples, names, refs):
        xml = to_xml(s, ds.classes, n, ref)
        atomic_write_text(dst / "Annotations" / (Path(n).stem + ".xml"), xml)
    ids = "".join(Path(n).stem + "\n" for n in names)
    atomic_write_text(dst / "ImageSets" / "Main" / "all.txt", ids)
    write_classes(dst, ds.classes)
    return dst
