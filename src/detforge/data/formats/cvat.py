"""CVAT for images 1.1 and CVAT for video 1.1: the XML CVAT exports and imports.

For images: ``<image name width height>`` holding ``<box>`` (``rotation`` read as the
enclosing axis-aligned box), ``<polygon>``, ``<ellipse>`` and ``<mask>`` (their enclosing
boxes); ``<polyline>``, ``<points>``, ``<skeleton>`` and ``<tag>`` enclose no box and are
skipped with a note. For video: ``<track>`` of ``<box>`` keyframes; frames between two
keyframes are interpolated linearly as CVAT does, a box with ``outside="1"`` ends the track
until its next keyframe inside, and every frame in ``start_frame..stop_frame`` (with the task's
``frame_filter`` step) becomes a sample of the frame images ``frame_000010.jpg`` CVAT writes in
``images/`` (export with images), each box with its track's id as the attribute ``track_id``.
Class order comes from ``<meta>``'s labels (skeleton parts left out). ``occluded`` and the
attributes ``difficult`` and ``truncated`` map to detforge's flags (occluded as truncated);
other attributes are kept per box (``Sample.attributes``, as text) and written back, declared
in ``<meta>`` as text attributes of their labels.

Images are looked up by their ``name`` under ``images/`` beside the XML, beside it, or in the
folder given as ``images=``; names from Windows (``a\\b.jpg``) work. The writer writes CVAT
for images 1.1 (``annotations.xml`` and ``images/``), which CVAT imports into a task.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import defusedxml.ElementTree as SafeET
import numpy as np
from defusedxml import DefusedXmlException

from detforge.data import image as imageio
from detforge.data.dataset import ClassIndex, Dataset, Issue
from detforge.data.formats._common import OUTSIDE, Within, fmt_num, start_write, write_classes
from detforge.data.formats.cvat_shapes import FLAGS, SHAPES, Objects, shape_box
from detforge.data.formats.cvat_video import read_tracks
from detforge.errors import FormatError
from detforge.fileio import atomic_write_text

NAME = "cvat"


def is_cvat(root) -> bool:
    """CVAT's XML: ``<annotations>`` with ``<image>`` or ``<track>`` elements (or an empty
    task with its ``<meta>``)."""
    return root.tag == "annotations" and any(
        root.find(t) is not None for t in ("image", "track", "meta", "version")
    )


def _parse(xml: Path):
    try:
        root = SafeET.parse(xml).getroot()
    except (ET.ParseError, DefusedXmlException, OSError) as e:
        raise FormatError(xml, f"not valid XML: {e}", "export it from CVAT again") from e
    if not is_cvat(root):
        raise FormatError(xml, f"root tag is <{root.tag}>, expected CVAT's <annotations>")
    return root


def meta_labels(root) -> list[str]:
    """Label names in ``<meta>`` order (a task's or a project's), skeleton parts left out."""
    out = []
    for lab in [
        *root.iterfind("./meta/*/labels/label"),
        *root.iterfind("./meta/*/tasks/task/labels/label"),
    ]:
        name = (lab.findtext("name") or "").strip()
        kind = (lab.findtext("type") or "").strip()
        if name and lab.find("parent") is None and kind != "skeleton" and name not in out:
            out.append(name)
    return out


def _image_objects(image, xml: Path, index: ClassIndex) -> Objects:
    got = Objects()
    name = image.get("name")
    for k, el in enumerate(image):
        if el.tag in ("tag", "attribute"):
            continue
        label = (el.get("label") or "").strip()
        where = f"image {name!r}, {el.tag} {k}"
        if el.tag not in SHAPES:
            got.skipped.append(el.tag)
            continue
        box = shape_box(el, xml, where)
        if box is None or not label:
            got.skipped.append(f"{el.tag} {label!r}" if label else f"unlabeled {el.tag}")
            continue
        got.add(el, box, index)
    return got


def _find(xml: Path, name: str, images: Path | None, within: Within, issues: list, subset=""):
    rel = name.replace("\\", "/")
    folders = ([images] if images else []) + [xml.parent / "images", xml.parent]
    if subset:  # a project's export: images/<subset>/<name>
        folders = [f / subset for f in folders] + folders
    cands = [f / rel for f in folders] + [f / Path(rel).name for f in folders]
    found = within.pick(cands, xml, name, issues)
    return found if found in (None, OUTSIDE) else Path(os.path.abspath(found))


def _size(image, ref: Path, xml: Path, issues: list) -> tuple[int, int]:
    w, h = int(float(image.get("width") or 0)), int(float(image.get("height") or 0))
    try:
        rw, rh, _ = imageio.file_info(ref)
    except Exception as e:  # noqa: BLE001 - an unreadable image is reported, not fatal
        issues.append(Issue(str(ref), "unreadable_image", str(e), "error"))
        return w, h
    if w and h and (w, h) != (rw, rh):
        issues.append(
            Issue(
                str(xml),
                "size_mismatch",
                f"{image.get('name')!r}: XML says {w}x{h}, image is {rw}x{rh}",
            )
        )
    return rw, rh


def _read_images(root, xml: Path, index, images, within) -> tuple[list, list]:
    samples, issues = [], []
    for image in root.iterfind("image"):
        name = image.get("name") or ""
        got = _image_objects(image, xml, index)
        if got.skipped:
            issues.append(Issue(str(xml), "skipped_shape",
                                f"{name!r}: {len(got.skipped)} shapes that enclose no box "
                                f"skipped ({', '.join(got.skipped[:3])})", "info"))  # fmt: skip
        ref = _find(xml, name, images, within, issues, image.get("subset") or "")
        if ref == OUTSIDE:
            continue
        if ref is None:
            issues.append(Issue(str(xml), "missing_image",
                                f"image {name!r} not found in images/ beside the XML or beside "
                                "it; pass images=DIR (--images)", "error"))  # fmt: skip
            continue
        w, h = _size(image, ref, xml, issues)
        samples.append(got.sample(imageio.FileImage(ref), w, h))
    return samples, issues


def read(path, *, images=None, names=None, outside_paths: str = "error", **_) -> Dataset:
    """Read a CVAT XML export (``annotations.xml``, or a folder holding it): CVAT for images
    1.1, or CVAT for video 1.1 (see :mod:`detforge.data.formats.cvat_video`)."""
    path = Path(path)
    xml = path if path.is_file() else find_xml(path)
    if xml is None:
        raise FormatError(path, "no CVAT annotations.xml here", "pass the XML CVAT exported")
    root = _parse(xml)
    images = Path(images) if images else None
    index = ClassIndex(names or meta_labels(root) or None)
    within = Within(xml.parent, outside_paths, images)
    if root.find("track") is not None and root.find("image") is None:
        samples, issues = read_tracks(root, xml, index, images, within)
    else:
        samples, issues = _read_images(root, xml, index, images, within)
    classes, samples = index.finish(samples)
    return Dataset(classes, samples, xml.parent, issues=issues, format=NAME)


def find_xml(folder: Path) -> Path | None:
    """``annotations.xml`` in ``folder`` (CVAT's export), or its only CVAT XML."""
    if (folder / "annotations.xml").is_file():
        return folder / "annotations.xml"
    found = [p for p in sorted(folder.glob("*.xml")) if sniff(p)]
    return found[0] if len(found) == 1 else None


def sniff(p: Path) -> bool:
    """Whether ``p`` looks like CVAT's XML (read only its first 4 KB)."""
    try:
        with open(p, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    return "<annotations" in head and ("<version>1.1" in head or "<meta>" in head)


def _attribute_names(ds: Dataset) -> list[list[str]]:
    """Per class, the names of the attributes its boxes carry (but the flags), in first-seen
    order."""
    names: list[dict] = [{} for _ in ds.classes]
    for s in ds.samples:
        for lab, attrs in zip(s.labels, s.attributes or ()):
            names[int(lab)].update(dict.fromkeys(k for k in attrs if k.lower() not in FLAGS))
    return [list(n) for n in names]


def to_xml(ds: Dataset, refs: list[str], source: str = "manual") -> str:
    """CVAT for images 1.1 as CVAT imports it; ``source`` ``auto`` marks pre-annotations."""
    a = ET.Element("annotations")
    ET.SubElement(a, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(a, "meta"), "task")
    ET.SubElement(task, "size").text = str(len(ds))
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for c, names in zip(ds.classes, _attribute_names(ds)):
        lab = ET.SubElement(labels, "label")
        ET.SubElement(lab, "name").text = c
        ET.SubElement(lab, "type").text = "rectangle"
        spec = ET.SubElement(lab, "attributes")
        for name in ("difficult", *names):  # every attribute a box may carry, declared
            at = ET.SubElement(spec, "attribute")
            ET.SubElement(at, "name").text = name
            ET.SubElement(at, "mutable").text = "True"
            checkbox = name == "difficult"
            ET.SubElement(at, "input_type").text = "checkbox" if checkbox else "text"
            ET.SubElement(at, "default_value").text = "false" if checkbox else ""
            ET.SubElement(at, "values").text = "false" if checkbox else ""
    for i, (s, ref) in enumerate(zip(ds.samples, refs)):
        im = ET.SubElement(a, "image", id=str(i), name=ref, width=str(s.width),
                           height=str(s.height))  # fmt: skip
        for k, (b, lab) in enumerate(zip(s.boxes.astype(np.float64), s.labels)):
            attrs = {"label": ds.classes[int(lab)], "source": source,
                     "occluded": str(int(s.truncated[k])), "xtl": fmt_num(b[0]),
                     "ytl": fmt_num(b[1]), "xbr": fmt_num(b[2]), "ybr": fmt_num(b[3]),
                     "z_order": "0"}  # fmt: skip
            box = ET.SubElement(im, "box", attrs)
            if s.difficult[k]:
                ET.SubElement(box, "attribute", name="difficult").text = "true"
            for name, value in (s.attributes[k] if s.attributes else {}).items():
                text = str(value).lower() if isinstance(value, bool) else str(value)
                ET.SubElement(box, "attribute", name=str(name)).text = text
    ET.indent(a, "  ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(a, encoding="unicode") + "\n"


def write(ds: Dataset, dst, *, images: str = "copy", overwrite: bool = False) -> Path:
    """Write CVAT for images 1.1: ``annotations.xml`` and ``images/`` (a task's export)."""
    dst, names, refs = start_write(ds, dst, images, overwrite)
    atomic_write_text(dst / "annotations.xml", to_xml(ds, refs))
    write_classes(dst, ds.classes)
    return dst
