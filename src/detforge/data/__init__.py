"""The data layer: read any format into one canonical Dataset, check, split, convert, pack."""

from __future__ import annotations

from pathlib import Path

from detforge.data import formats
from detforge.data.dataset import Dataset, Issue, Sample, concat
from detforge.data.reading import read, read_splits
from detforge.errors import UnknownFormatError

CLASSIFY_FORMATS = ("folders", "csv", "tfrecord")  # formats that hold a label per image


def write(
    ds: Dataset, dst, format: str, *, images: str = "copy", overwrite: bool = False, **opts
) -> Path:
    """Write ``ds`` to the folder ``dst`` in ``format``. ``images``: copy, link or none."""
    module = formats.get(format)
    if ds.task == "classify" and format not in CLASSIFY_FORMATS:
        raise UnknownFormatError(
            f"{format} holds boxes; a classification dataset ({ds.root or 'in memory'}) has a "
            "label per image and would be written as images without any label",
            "write it as " + ", ".join(CLASSIFY_FORMATS),
        )
    return module.write(ds, dst, images=images, overwrite=overwrite, **opts)


def convert(
    src,
    dst,
    to: str,
    *,
    format: str = "auto",
    images: str = "copy",
    overwrite: bool = False,
    **read_opts,
) -> Path:
    """Read ``src`` and write it to ``dst`` in the format ``to``."""
    formats.get(to)  # fail on a typo before reading anything
    return write(read(src, format, **read_opts), dst, to, images=images, overwrite=overwrite)


__all__ = ["Dataset", "Issue", "Sample", "concat", "convert", "read", "read_splits", "write"]
