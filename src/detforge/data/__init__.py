"""The data layer: read any format into one canonical Dataset, check, split, convert, pack."""

from __future__ import annotations

import os
from pathlib import Path

from detforge.data import formats
from detforge.data.check import without_invalid_boxes
from detforge.data.dataset import Dataset, Issue, Sample, concat
from detforge.data.reading import read, read_splits
from detforge.data.verify import usable
from detforge.errors import UnknownFormatError
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
    module = formats.get(format)
    if ds.task == "classify" and format not in CLASSIFY_FORMATS:
        raise UnknownFormatError(
            f"{format} holds boxes; a classification dataset ({ds.root or 'in memory'}) has a "
            "label per image and would be written as images without any label",
            "write it as " + ", ".join(CLASSIFY_FORMATS),
        )
    ds = without_invalid_boxes(ds, "written")
    with destination(dst, overwrite, sources(ds)):
        if format == "tfrecord":  # pack checks its images itself and counts them in its index
            opts["strict"] = strict
        elif images != "none":
            ds, _ = usable(ds, strict=strict)
        return module.write(ds, dst, images=images, overwrite=overwrite, **opts)


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


__all__ = [
    "Dataset",
    "Issue",
    "Sample",
    "concat",
    "convert",
    "read",
    "read_splits",
    "sources",
    "write",
]
