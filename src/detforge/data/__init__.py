"""The data layer: read any format into one canonical Dataset, check, split, convert, pack."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from detforge.data import check as _check
from detforge.data import formats
from detforge.data import split as _split
from detforge.data.check import without_invalid_boxes
from detforge.data.dataset import Dataset, Issue, Sample, concat
from detforge.data.datayaml import write_data_yaml
from detforge.data.reading import SPLITS, read, read_splits
from detforge.data.verify import usable
from detforge.errors import DetforgeError, UnknownFormatError
from detforge.fileio import destination, refuse_overlap

CLASSIFY_FORMATS = ("folders", "csv", "tfrecord")  # formats that hold a label per image


def sources(ds: Dataset) -> list[str]:
    """The folders a dataset reads from: its root and every folder holding its images (an
    output may not be, hold or lie inside any of them)."""
    found = {os.path.dirname(os.path.abspath(s.image.path)) for s in ds.samples}
    return [str(ds.root)] * (ds.root is not None) + sorted(found)


def write(
    ds: Dataset,
    dst,
    format: str,
    *,
    images: str = "copy",
    overwrite: bool = False,
    strict: bool = False,
    **opts,
) -> Path:
    """Write ``ds`` to the folder ``dst`` in ``format``. ``images``: copy, link or none.

    ``dst`` may not be, hold or lie inside a folder the data comes from; ``overwrite`` replaces
    only files detforge wrote there. Images that do not decode are left out, each named in a
    warning (``strict``: refused). On an error nothing of this write is left behind."""
    module = _writer(ds, format)
    with destination(dst, overwrite, sources(ds)):
        ds = writable(ds, format, images, strict)
        return _write_as_is(module, ds, dst, format, images, overwrite, strict, **opts)


def _writer(ds: Dataset, format: str):
    """The format's module, refused for a classification dataset it cannot hold."""
    module = formats.get(format)
    if ds.task == "classify" and format not in CLASSIFY_FORMATS:
        raise UnknownFormatError(
            f"{format} holds boxes; a classification dataset ({ds.root or 'in memory'}) has a "
            "label per image and would be written as images without any label",
            "write it as " + ", ".join(CLASSIFY_FORMATS),
        )
    return module


def _write_as_is(module, ds, dst, format, images, overwrite, strict, **opts) -> Path:
    """Write ``ds`` (already :func:`writable`) to ``dst``, inside the caller's destination."""
    if format == "tfrecord":  # pack checks its images itself and counts them in its index
        opts["strict"] = strict
    return module.write(ds, dst, images=images, overwrite=overwrite, **opts)


def writable(ds: Dataset, format: str, images: str = "copy", strict: bool = False) -> Dataset:
    """What :func:`write` writes of ``ds``: no invalid boxes and (images written, not a
    TFRecord, whose packer checks its own) no image that does not decode, each named in a
    warning."""
    ds = without_invalid_boxes(ds, "written")
    if format != "tfrecord" and images != "none":
        ds, _ = usable(ds, strict=strict)
    return ds


def convert(
    src,
    dst,
    to: str,
    *,
    format: str = "auto",
    images: str = "copy",
    overwrite: bool = False,
    strict: bool = False,
    images_dir=None,
    **read_opts,
) -> Path:
    """Read ``src`` and write it to ``dst`` in the format ``to`` (see :func:`write`);
    ``images`` is how the images are written (copy, link, none), ``images_dir`` where the
    reader finds them (a reader's ``images=``)."""
    formats.get(to)  # fail on a typo before reading anything
    refuse_overlap(dst, [src])
    if images_dir is not None:
        read_opts["images"] = images_dir
    ds = read(src, format, **read_opts)
    return write(ds, dst, to, images=images, overwrite=overwrite, strict=strict)


def fixed_copy(
    ds: Dataset,
    out,
    policy: str = "clip",
    *,
    to: str | None = None,
    images: str = "copy",
    overwrite: bool = False,
):
    """Write a fixed copy of ``ds`` to ``out`` (see :func:`detforge.data.check.fix`; the source
    is never edited) and check what was written. Returns ``(path, result)``: the
    :class:`~detforge.data.check.CheckResult` of the copy, whose ``changes`` list each image
    and box the fix dropped or clipped."""
    fixed, changes = _check.fix(ds, _check.check(ds, progress=False), policy)
    dst = write(fixed, out, to or ds.format, images=images, overwrite=overwrite)
    after = _check.check(read(dst, to or ds.format), progress=False)
    after.changes = changes
    return dst, after


def split_dataset(
    ds: Dataset,
    ratios=(0.7, 0.15, 0.15),
    seed: int = 0,
    *,
    out=None,
    to: str | None = None,
    images: str = "copy",
    overwrite: bool = False,
    strict: bool = False,
) -> dict[str, Dataset]:
    """Split ``ds`` (see :func:`detforge.data.split.split`); with ``out``, write each split to
    ``out/<split>`` in ``to`` (default: its own format, else YOLO or class folders; each part
    as written: images that do not decode are left out, see :func:`writable`) and
    ``out/data.yaml`` naming them. An empty split is left out with a warning; an empty train
    split is refused."""
    parts = _split.split(ds, ratios, seed)
    empty = [k for k, part in parts.items() if not len(part)]
    if "train" in empty:
        raise DetforgeError(
            f"{len(ds)} images give an empty train split at ratios {ratios}",
            "add images, or give train a larger share",
        )
    if empty:
        warnings.warn(
            f"the {' and '.join(empty)} split of {len(ds)} images is empty at ratios {ratios}: "
            "not written, and not named in data.yaml",
            stacklevel=3,
        )
        parts = {k: v for k, v in parts.items() if len(v)}
    if out is None:
        return parts
    fmt = to or ds.format
    if fmt in (None, "synth"):
        fmt = "folders" if ds.task == "classify" else "yolo"
    module = _writer(ds, fmt)
    with destination(out, overwrite, sources(ds)):
        for name, part in parts.items():
            with destination(Path(out) / name, overwrite, sources(part)):
                parts[name] = writable(part, fmt, images, strict)  # counts: what was written
                _write_as_is(module, parts[name], Path(out) / name, fmt, images, overwrite, strict)
        write_data_yaml(out, {k: k for k in parts if k in SPLITS}, ds.classes)
    return parts


__all__ = [
    "Dataset",
    "Issue",
    "Sample",
    "concat",
    "convert",
    "fixed_copy",
    "read",
    "read_splits",
    "sources",
    "split_dataset",
    "writable",
    "write",
    "write_data_yaml",
]
