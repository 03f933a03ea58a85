"""Class-per-folder image trees (``root/<class>/*.jpg``) for image classification."""

from __future__ import annotations

from pathlib import Path

from detforge.data import image as imageio
from detforge.data.dataset import Dataset, Issue, Sample
from detforge.data.formats._common import image_size, put_images, unique_names
from detforge.errors import FormatError
from detforge.fileio import prepare_destination

NAME = "folders"


def class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def read(path, *, names=None, **_) -> Dataset:
    """Read ``root/<class>/**/<image>``; class order is sorted folder names unless ``names``."""
    root = Path(path)
    dirs = class_dirs(root)
    if not dirs:
        raise FormatError(root, "no class folders found", "lay images out as root/<class>/*.jpg")
    classes = list(names) if names else [d.name for d in dirs]
    samples, issues = [], []
    for d in dirs:
        if d.name not in classes:
            raise FormatError(d, f"folder {d.name!r} is not among the given class names")
        imgs = imageio.find_images(d)
        if not imgs:
            issues.append(Issue(str(d), "empty_class", "class folder holds no images", "error"))
        for img in imgs:
            if size := image_size(img, issues):
                samples.append(
                    Sample(imageio.FileImage(img), *size, category=classes.index(d.name))
                )
    return Dataset(classes, samples, root, task="classify", issues=issues, format=NAME)


def write(ds: Dataset, dst, *, images: str = "copy", overwrite: bool = False) -> Path:
    """Write ``dst/<class>/<image>``; detection samples go under their first box's class."""
    dst = prepare_destination(dst, overwrite)
    if images == "none":
        raise FormatError(dst, "class folders hold the images; --no-images does not apply")
    by_class: dict[int, list[int]] = {}
    for i, s in enumerate(ds.samples):
        c = s.category if s.category is not None else (int(s.labels[0]) if len(s.labels) else None)
        if c is not None:
            by_class.setdefault(c, []).append(i)
    for c, idx in by_class.items():
        sub = ds.subset(idx)
        put_images(sub, dst / ds.classes[c], unique_names(sub.samples), images)
    return dst
