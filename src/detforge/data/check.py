"""Validate a dataset: images, sizes, boxes, classes, duplicates; and write fixed copies."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from detforge.boxes import clip, problems
from detforge.data import image as imageio
from detforge.data.dataset import Dataset, Sample
from detforge.errors import DetforgeError, ImageError

# kind -> severity. Errors make `data check` exit non-zero.
SEVERITY = {
    "missing_image": "error",
    "unreadable_image": "error",
    "missing_annotation": "error",
    "bad_json": "error",
    "empty_class": "error",
    "size_mismatch": "error",
    "nan": "error",
    "inverted": "error",
    "zero_area": "error",
    "unknown_class": "error",
    "out_of_bounds": "warning",
    "tiny_box": "warning",
    "duplicate_image": "warning",
    "conflicting_labels": "error",
    "duplicate_box": "warning",
    "exif_unrotated": "warning",
    "exif_orientation": "info",
    "no_names": "info",
    "no_images": "error",
    "outside_path": "error",
    "orphan_annotation": "error",
}
FIXABLE = {"nan", "inverted", "zero_area", "unknown_class", "out_of_bounds", "duplicate_box"}


@dataclass
class Finding:
    kind: str
    path: str
    message: str
    severity: str
    box: int | None = None


@dataclass
class CheckResult:
    """What ``check`` found in a dataset (``findings``), and what ``fix`` changed."""

    images: int
    boxes: int
    findings: list[Finding] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # what a fix dropped or clipped

    def count(self, severity: str) -> int:
        return sum(f.severity == severity for f in self.findings)

    @property
    def errors(self) -> int:
        return self.count("error")

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def by_kind(self) -> Counter:
        return Counter(f.kind for f in self.findings)

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "boxes": self.boxes,
            "errors": self.errors,
            "warnings": self.count("warning"),
            "counts": dict(self.by_kind()),
            "findings": [asdict(f) for f in self.findings],
            "changes": self.changes,
        }


def _finding(kind, path, message, box=None) -> Finding:
    return Finding(kind, str(path), message, SEVERITY.get(kind, "warning"), box)


def _check_image(s: Sample, decode: bool):
    """-> (findings, sha1 or None) for the image of one sample."""
    out = []
    try:
        data = s.read_bytes()
        w, h, orient = imageio.info(data, s.path)
        if decode:
            imageio.decode(data, s.path)
    except ImageError as e:
        return [
            _finding("unreadable_image" if s.image.exists() else "missing_image", s.path, e.reason)
        ], None
    if (w, h) != (s.width, s.height):
        if orient in (5, 6, 7, 8) and (h, w) == (s.width, s.height):
            out.append(
                _finding(
                    "exif_unrotated",
                    s.path,
                    f"annotation size {s.width}x{s.height} is the unrotated image; EXIF "
                    f"orientation {orient} shows it as {w}x{h}: were boxes drawn on the "
                    "unrotated image?",
                )
            )
        else:
            out.append(
                _finding(
                    "size_mismatch",
                    s.path,
                    f"annotation says {s.width}x{s.height}, image is {w}x{h}",
                )
            )
    elif orient != 1:
        out.append(
            _finding(
                "exif_orientation",
                s.path,
                f"EXIF orientation {orient}: boxes are "
                "taken in the displayed (rotated) orientation",
            )
        )
    return out, hashlib.sha1(data).hexdigest()


def _check_boxes(s: Sample, nc: int, min_size: float) -> list[Finding]:
    out = []
    masks = problems(s.boxes, s.width, s.height)
    for kind, mask in masks.items():
        for k in np.flatnonzero(mask):
            out.append(
                _finding(
                    kind,
                    s.path,
                    f"box {k} {s.boxes[k].round(2).tolist()} in a "
                    f"{s.width}x{s.height} image: {kind.replace('_', ' ')}",
                    int(k),
                )
            )
    bad = masks["nan"] | masks["inverted"] | masks["zero_area"]
    wh = s.boxes[:, 2:] - s.boxes[:, :2]
    for k in np.flatnonzero(~bad & (wh.min(1, initial=np.inf) < min_size)):
        out.append(_finding("tiny_box", s.path, f"box {k} is {wh[k].round(2).tolist()} px", int(k)))
    for k in np.flatnonzero((s.labels < 0) | (s.labels >= nc)):
        out.append(
            _finding(
                "unknown_class",
                s.path,
                f"box {k} has class index {s.labels[k]} outside 0..{nc - 1}",
                int(k),
            )
        )
    for k in _duplicate_boxes(s):
        out.append(_finding("duplicate_box", s.path, f"box {k} repeats an earlier box", int(k)))
    return out


def _duplicate(s: Sample, first: str, category, classes) -> Finding:
    """An image with the same bytes as ``first``: a warning, or an error when the two are
    labeled with different classes (a classifier would be taught both)."""
    if s.category is not None and category is not None and s.category != category:
        return _finding(
            "conflicting_labels",
            s.path,
            f"same bytes as {first}, but labeled {classes[s.category]!r} here and "
            f"{classes[category]!r} there; keep the one that is right",
        )
    return _finding("duplicate_image", s.path, f"same bytes as {first}")


def _pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each box in ``a`` with the box at the same row of ``b``."""
    lt, rb = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(1)  # noqa: E731
    union = area(a) + area(b) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def duplicate_boxes(boxes, labels, thr: float = 0.95, window: int = 64) -> list[int]:
    """Indices of boxes that repeat an earlier box of the same class (IoU >= ``thr``).

    Sorted by class and left edge: IoU >= t needs the left edges within (1 - t) of the first
    box's width, so each box is compared only with the next few in that order (at most
    ``window``), O(N log N) time and O(N) memory for any N; exact repeats are always found."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(b)
    if n < 2:
        return []
    labels = np.asarray(labels).reshape(-1)
    dup = np.zeros(n, bool)
    _, first = np.unique(np.column_stack([labels, b]), axis=0, return_index=True)
    dup[np.setdiff1d(np.arange(n), first)] = True  # exact repeats
    order = np.lexsort((b[:, 0], labels))
    sb, sl = b[order], labels[order]
    reach = sb[:, 0] + (1 - thr) * np.clip(sb[:, 2] - sb[:, 0], 0, None) + 1e-6
    active = np.arange(n)  # boxes whose window may still hold a candidate
    for k in range(1, min(n, window + 1)):
        active = active[active + k < n]
        # a box's candidates come first in the sorted order: once one is out of reach, so
        # are all after it, and the box leaves the active set
        active = active[(sl[active] == sl[active + k]) & (sb[active + k, 0] <= reach[active])]
        if not len(active):
            break
        hit = active[_pair_iou(sb[active], sb[active + k]) >= thr]
        dup[np.maximum(order[hit], order[hit + k])] = True
    return [int(k) for k in np.flatnonzero(dup)]


def _duplicate_boxes(s: Sample, thr: float = 0.95) -> list[int]:
    return duplicate_boxes(s.boxes, s.labels, thr)


def check(
    ds: Dataset,
    *,
    names=None,
    decode: bool = True,
    min_size: float = 2.0,
    workers: int | None = None,
    progress: bool = True,
) -> CheckResult:
    """Check every sample of ``ds``. ``names`` (expected class names) flags others as unknown;
    ``decode=False`` reads only image headers (faster; misses truncated files)."""
    from rich.progress import track

    result = CheckResult(len(ds), ds.num_boxes)
    result.findings += [
        Finding(i.kind, i.path, i.message, SEVERITY.get(i.kind, i.severity)) for i in ds.issues
    ]
    if not len(ds):
        result.findings.append(_finding("no_images", ds.root, "the dataset holds no usable image"))
    if names is not None:
        for c in ds.classes:
            if c not in names:
                k = ds.classes.index(c)
                n = sum(int((s.labels == k).sum()) + (s.category == k) for s in ds.samples)
                what = "images" if ds.task == "classify" else "boxes"
                result.findings.append(
                    _finding(
                        "unknown_class",
                        ds.root,
                        f"class {c!r} ({n} {what}) is not among the expected names {list(names)}",
                    )
                )
    reported = {(f.kind, f.path) for f in result.findings}
    hashes: dict[str, str] = {}
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda s: _check_image(s, decode), ds.samples)
        for s, (found, sha) in track(
            zip(ds.samples, results),
            total=len(ds),
            description="checking",
            disable=not progress,
            transient=True,
        ):
            # the reader may have found the same unreadable image already: report it once
            result.findings += [f for f in found if (f.kind, f.path) not in reported]
            if sha is not None:
                if sha in hashes:
                    result.findings.append(_duplicate(s, *hashes[sha], ds.classes))
                else:
                    hashes[sha] = (str(s.path), s.category)
            result.findings += _check_boxes(s, len(ds.classes), min_size)
    return result


def fix(ds: Dataset, result: CheckResult, policy: str = "clip") -> tuple[Dataset, list[str]]:
    """A fixed copy and a line per change: images that are missing or unreadable are dropped,
    boxes are clipped (``clip``) or dropped (``drop``) when out of bounds; NaN, inverted,
    zero-area, unknown-class and duplicate boxes are dropped either way. The source is never
    touched."""
    if policy not in ("clip", "drop"):
        raise DetforgeError(f"unknown fix policy {policy!r}", "use clip or drop")
    bad_images = {
        f.path: f.kind for f in result.findings if f.kind in ("missing_image", "unreadable_image")
    }
    samples, changes = [], []
    for s in ds.samples:
        if str(s.path) in bad_images:
            changes.append(f"dropped image {s.path} ({bad_images[str(s.path)]})")
            continue
        masks = problems(s.boxes, s.width, s.height)
        unknown = (s.labels < 0) | (s.labels >= len(ds.classes))
        reasons = {"nan": masks["nan"], "inverted": masks["inverted"], "unknown class": unknown}
        if policy == "drop":
            reasons.update(out_of_bounds=masks["out_of_bounds"], zero_area=masks["zero_area"])
        drop = np.logical_or.reduce(list(reasons.values()))
        for k in np.flatnonzero(drop):
            why = next(r for r, m in reasons.items() if m[k])
            changes.append(f"dropped box {k} {s.boxes[k].round(2).tolist()} of {s.path} ({why})")
        s = s.select(~drop)
        if policy == "clip":
            before = s.boxes.copy()
            s = s.replace(boxes=clip(s.boxes, s.width, s.height))
            moved = np.flatnonzero((before != s.boxes).any(1))
            changes += [f"clipped a box of {s.path} to the image" for _ in moved]
            wh = s.boxes[:, 2:] - s.boxes[:, :2]
            s = s.select((wh > 0).all(1))
        dups = _duplicate_boxes(s)
        if dups:
            changes += [f"dropped a duplicate box of {s.path}" for _ in dups]
            s = s.select(np.setdiff1d(np.arange(len(s.boxes)), dups))
        samples.append(s)
    return replace(ds, samples=samples, issues=[]), changes


def without_invalid_boxes(ds: Dataset, doing: str = "used") -> Dataset:
    """``ds`` without boxes no model or format can take (NaN, infinite, inverted, or a class
    index outside the classes), with one warning naming the first and the count."""
    import warnings

    samples, dropped, first = [], 0, None
    nc = len(ds.classes)
    for s in ds.samples:
        b = s.boxes
        bad = ~np.isfinite(b).all(1) | (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
        bad |= (s.labels < 0) | (s.labels >= nc)
        if bad.any():
            dropped += int(bad.sum())
            first = first or f"{s.path} box {int(np.flatnonzero(bad)[0])}"
            s = s.select(~bad)
        samples.append(s)
    if not dropped:
        return ds
    warnings.warn(
        f"{dropped} boxes that are NaN, infinite, inverted or of an unknown class are not "
        f"{doing} (first: {first}); `detforge data check` lists them",
        stacklevel=3,
    )
    return replace(ds, samples=samples)


def __getattr__(name: str):
    if name == "Report":  # its name until 0.1.0
        warnings.warn("detforge.data.check.Report is now CheckResult", FutureWarning, stacklevel=2)
        return CheckResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
