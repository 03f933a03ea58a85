"""What every format writer shares: unique image names, image placement, class files."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

from rich.progress import track

from detforge.data import image as imageio
from detforge.data.dataset import Dataset, Issue, Sample
from detforge.data.image import FileImage
from detforge.errors import FormatError, ImageError
from detforge.fileio import atomic_write_text, place_image, prepare_destination

IMAGE_MODES = ("copy", "link", "none")


def unique_names(samples: Iterable[Sample]) -> list[str]:
    """A distinct flat file name per sample: the image's name, prefixed with its parent
    folders' names where two images share a name."""
    samples = list(samples)
    names = [s.name for s in samples]
    seen: dict[str, int] = {}
    for n in names:
        seen[n.lower()] = seen.get(n.lower(), 0) + 1
    out, used = [], set()
    for s, n in zip(samples, names):
        cand = n
        if seen[n.lower()] > 1:
            parent = s.path.parent.name or "img"
            cand = f"{parent}_{n}"
        base, k = cand, 1
        while cand.lower() in used:
            stem, dot, ext = base.rpartition(".")
            cand = f"{stem}_{k}.{ext}" if dot else f"{base}_{k}"
            k += 1
        used.add(cand.lower())
        out.append(cand)
    return out


def put_images(ds: Dataset, folder: Path, names: list[str], mode: str = "copy") -> None:
    """Copy (or hard-link) each sample's image to ``folder/names[i]``; ``none`` writes nothing."""
    if mode not in IMAGE_MODES:
        raise ValueError(f"images must be one of {IMAGE_MODES}, got {mode!r}")
    if mode == "none":
        return
    folder.mkdir(parents=True, exist_ok=True)
    copied = 0
    for s, n in track(
        list(zip(ds.samples, names)), description="images", transient=True, disable=len(ds) < 200
    ):
        src = s.image.path if isinstance(s.image, FileImage) else s.read_bytes()
        copied += not place_image(src, folder / n, mode)
    if copied:
        warnings.warn(
            f"--link: {copied} of {len(names)} images in {folder} were copied, not linked "
            "(images embedded in annotations or records, or on another file system)",
            stacklevel=2,
        )


def write_classes(folder: Path, classes: list[str]) -> None:
    atomic_write_text(folder / "classes.txt", "".join(c + "\n" for c in classes))


def fmt_num(v: float) -> str:
    """A coordinate as text: integers without a decimal point, others with 4 decimals."""
    r = round(float(v), 4)
    return str(int(r)) if r == int(r) else f"{r:.4f}".rstrip("0")


def start_write(
    ds: Dataset, dst, images: str, overwrite: bool, folder: str = "images"
) -> tuple[Path, list[str], list[str]]:
    """Prepare ``dst`` and place the images in ``dst/folder``. Returns ``(dst, names, refs)``:
    ``names`` the flat file names given to the images, ``refs`` what annotations point at (the
    names, or with ``images='none'`` the original absolute paths)."""
    dst = prepare_destination(dst, overwrite)
    names = unique_names(ds.samples)
    put_images(ds, dst / folder if folder else dst, names, images)
    refs = [str(s.path) for s in ds.samples] if images == "none" else names
    return dst, names, refs


def image_size(img, issues: list[Issue]) -> tuple[int, int] | None:
    """An image's displayed size from its header, or None with an ``unreadable_image`` issue."""
    try:
        w, h, _ = imageio.file_info(img)
    except ImageError as e:
        issues.append(Issue(str(img), "unreadable_image", e.reason, "error"))
        return None
    return w, h


OUTSIDE_MODES = ("error", "allow", "skip")
OUTSIDE = "outside"  # what Within.pick returns for an image it refused (in skip mode)


class Within:
    """Where a dataset's annotations may point: inside the folder the user named (for a file,
    its folder) or, for images kept in a sibling folder (LabelImg's ``../images``), inside that
    folder's parent. Checked on the path as written (``..`` and absolute paths), not through
    symlinks the user made. ``mode``: ``error`` raises, ``skip`` records an ``outside_path``
    issue and skips the image (``report`` before 0.1.0), ``allow``
    (``--allow-outside-paths``) follows any path."""

    def __init__(self, named, mode: str = "error", images=None):
        if mode == "report":  # its name until 0.1.0
            warnings.warn("outside_paths='report' is now 'skip'", FutureWarning, stacklevel=3)
            mode = "skip"
        if mode not in OUTSIDE_MODES:
            raise ValueError(f"outside_paths must be one of {OUTSIDE_MODES}, got {mode!r}")
        named = Path(named)
        self.root = os.path.abspath(named if named.is_dir() or not named.suffix else named.parent)
        self.trusted = [self.root] + ([os.path.abspath(images)] if images else [])  # --images
        self.mode = mode

    def allows(self, image) -> bool:
        if self.mode == "allow":
            return True
        p = os.path.normpath(os.path.abspath(image))
        if any(p == r or p.startswith(r.rstrip(os.sep) + os.sep) for r in self.trusted):
            return True
        rel = os.path.relpath(p, os.path.dirname(self.root))
        return not rel.startswith("..") and os.sep in rel  # in a sibling folder

    def pick(self, candidates, where, written: str, issues: list[Issue]):
        """The first existing candidate inside; None when none exists. When only candidates
        outside exist: an error naming ``where`` (the annotation) and ``written`` (its text),
        or in ``skip`` mode an ``outside_path`` issue and :data:`OUTSIDE`."""
        outside = None
        for c in candidates:
            if os.path.isfile(c):
                if self.allows(c):
                    return Path(c)
                outside = outside or c
        if outside is not None:
            self.refuse(where, written, outside, issues)
            return OUTSIDE
        return None

    def refuse(self, where, written: str, resolved, issues: list[Issue]) -> None:
        msg = (
            f"image path {written!r} points outside the dataset folder {self.root} "
            f"(to {os.path.normpath(os.path.abspath(resolved))})"
        )
        if self.mode == "skip":
            issues.append(Issue(str(where), "outside_path", msg, "error"))
            return

        raise FormatError(
            where,
            msg,
            "move the image into the dataset folder, or pass --allow-outside-paths if you "
            "trust this annotation",
        )


def unlabeled_negatives(folder, samples: list[Sample], issues: list[Issue]) -> list[Sample]:
    """Images under ``folder`` that no sample points at, as negatives."""
    seen = {os.path.realpath(s.path) for s in samples}
    out = []
    for img in imageio.find_images(folder):
        if os.path.realpath(img) not in seen and (size := image_size(img, issues)):
            out.append(Sample(imageio.FileImage(img), *size))
    return out
