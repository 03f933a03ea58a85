"""Which images of a dataset decode: checked once, in parallel, cached by size and mtime.

Training, evaluation, pack and convert call :func:`verify_images` first and leave out what does
not decode (each named once), so one bad file never costs a run. The check reads the header and
the file's end (a JPEG's EOI marker, a PNG's IEND chunk); only where those do not settle it, or
for other formats, is the image fully decoded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from detforge.data import image as imageio
from detforge.data.dataset import Dataset
from detforge.errors import DetforgeError, ImageError
from detforge.fileio import atomic_write_json, cache_dir

CACHE_VERSION = 1


@dataclass(frozen=True)
class BadImage:
    path: str
    reason: str


def image_stamp(ref) -> tuple[str, str] | None:
    """``(key, stamp)``: what identifies the image and what changes when its file does; None
    for an image with no file of its own (a generated scene: checked each time)."""
    if isinstance(ref, imageio.RecordImage):
        file, key = ref.path, f"{ref.path}#{ref.offset}"
    elif isinstance(ref, imageio.EmbeddedImage):
        file, key = ref.json_path, f"{ref.json_path}#imageData"
    elif isinstance(ref, imageio.FileImage):
        file = key = ref.file
    else:
        return None
    try:
        st = os.stat(file)
    except OSError:
        return None
    return str(key), f"{st.st_size}:{st.st_mtime_ns}"


def _complete(data: bytes) -> bool:
    """A JPEG ending in EOI or a PNG ending in IEND: the file was written to the end."""
    if data[:3] == b"\xff\xd8\xff":
        return data.rstrip(b"\x00\r\n ")[-2:] == b"\xff\xd9"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data[-8:-4] == b"IEND"
    return False


def check_image(ref) -> str | None:
    """None when the image behind ``ref`` decodes, else why not (one line)."""
    try:
        data = ref.read()
        imageio.info(data, ref.path)  # header, size and the pixel limit
        if not _complete(data):
            imageio.decode(data, ref.path)
    except ImageError as e:
        return e.reason
    except DetforgeError as e:  # a record that changed under us, an unreadable JSON
        return e.message
    return None


def _cache_file(ds: Dataset):
    root = os.path.abspath(ds.root) if ds.root else "-"
    return cache_dir("verified", hashlib.sha1(root.encode()).hexdigest()[:16] + ".json")


def _load_cache(path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return obj.get("images", {}) if obj.get("version") == CACHE_VERSION else {}


def verify_images(
    ds: Dataset, *, workers: int | None = None, cache: bool = True
) -> tuple[Dataset, list[BadImage]]:
    """``(the dataset without images that do not decode, those images)``. Results are cached
    per dataset root (``fileio.cache_dir('verified')``) keyed by size and mtime, so a second run
    over unchanged files decodes nothing."""
    path = _cache_file(ds)
    known = _load_cache(path) if cache else {}
    keys = [image_stamp(s.image) for s in ds.samples]
    todo = [i for i, k in enumerate(keys) if k is None or known.get(k[0], [None])[0] != k[1]]
    results: dict[int, str | None] = {}
    if todo:
        workers = workers or min(8, (os.cpu_count() or 1) + 2)
        with ThreadPoolExecutor(workers) as pool:
            found = pool.map(lambda i: check_image(ds.samples[i].image), todo)
            results = dict(zip(todo, found))
    fresh, keep, bad = {}, [], []
    for i, (s, k) in enumerate(zip(ds.samples, keys)):
        reason = results[i] if i in results else known[k[0]][1]
        if k is not None:
            fresh[k[0]] = [k[1], reason]
        if reason is None:
            keep.append(s)
        else:
            bad.append(BadImage(str(s.path), reason))
    if cache and todo:
        # a read-only home: the check still ran, it just is not remembered
        with contextlib.suppress(OSError, DetforgeError):
            # kept beside what is there: a run checks its train and val parts (one root) in turn
            merged = {**known, **fresh}
            atomic_write_json(path, {"version": CACHE_VERSION, "images": merged}, indent=None)
    return (replace(ds, samples=keep) if bad else ds), bad


def describe(bad: list[BadImage], limit: int = 20) -> list[str]:
    """One line per bad image (at most ``limit``, then a count), for warnings."""
    lines = [f"skipping {b.path}: {b.reason}" for b in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"... and {len(bad) - limit} more images that do not decode (data check)")
    return lines


def usable(ds: Dataset, *, strict: bool = False) -> tuple[Dataset, list[BadImage]]:
    """The dataset without the images that do not decode, each named in a one-line warning;
    with ``strict`` the first one is an error instead. A dataset none of whose images decode
    is an error."""
    import warnings

    good, bad = verify_images(ds)
    if bad and strict:
        raise ImageError(
            bad[0].path,
            f"{bad[0].reason} ({len(bad)} of {len(ds)} images do not decode)",
            "fix or remove them (data check lists them all), or drop --strict to skip them",
        )
    if bad and not len(good):
        raise DetforgeError(
            f"none of the {len(ds)} images of {ds.root or 'the dataset'} decode "
            f"(first: {bad[0].path}: {bad[0].reason})",
            "check the images with `detforge data check`",
        )
    for line in describe(bad):
        warnings.warn(line, stacklevel=2)
    return good, bad
