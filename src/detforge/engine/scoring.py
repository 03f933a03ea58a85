"""What a model is scored on: a data YAML's split, a held-out part cut as the training run cut
it, or the formula scenes' val set; unreadable images and invalid boxes left out, and refused
when the task or the classes differ from the model's."""

from __future__ import annotations

from pathlib import Path

from detforge.data import read
from detforge.data.check import without_invalid_boxes
from detforge.data.dataset import Dataset
from detforge.data.formula import formula_splits, is_formula
from detforge.data.reading import is_data_yaml, read_splits
from detforge.data.split import split as cut
from detforge.data.verify import usable
from detforge.errors import DetforgeError
from detforge.models.checkpoint import read_checkpoint


def eval_split(data, split: str | None, weights=None, **opts) -> tuple[Dataset, str]:
    """The dataset to evaluate on: a data YAML's ``split`` (val by default); for a source
    without splits all of it, or with ``split`` train/val the part the run that wrote
    ``weights`` (a .pt) trained or validated on (its seed and ratio are in the checkpoint)."""

    if is_formula(data):  # pretraining scenes: their fixed val set, at the model's size
        return formula_splits(data, _trained_imgsz(weights))[1], "val"
    if is_data_yaml(Path(data)):
        parts = read_splits(data, **opts)
        split = split or ("val" if "val" in parts else "test" if "test" in parts else "train")
        if split not in parts:
            raise DetforgeError(
                f"{data}: has no {split!r} split", f"use --split {' or '.join(parts)}"
            )
        return parts[split], split
    ds = read(data, **opts)
    if split in (None, "all"):
        return ds, "all"
    return _held_out_part(ds, data, split, weights), split


def _trained_imgsz(weights, default: int = 320) -> int:

    if weights is None or Path(weights).suffix.lower() != ".pt":
        return default
    return int(read_checkpoint(weights)["model"].get("options", {}).get("imgsz", default))


def _held_out_part(ds: Dataset, data, split: str, weights) -> Dataset:
    """The train or val part of ``ds`` as the run of ``weights`` cut it; refused when that
    is not known (never the whole set reported as one split)."""

    fp = {}
    if weights is not None and Path(weights).suffix.lower() == ".pt":
        fp = read_checkpoint(weights).get("data") or {}
    held = fp.get("held_out")
    same = held and Path(fp.get("source", "")).resolve() == Path(data).resolve()
    if split not in ("train", "val") or not same:
        why = (
            f"{weights} was trained on {fp['source']}"
            if held and not same
            else f"{weights} does not say how its run split {data}"
        )
        raise DetforgeError(
            f"{data} has no splits, so --split {split} is not defined ({why})",
            "evaluate all of it (drop --split), pass the run's best.pt or last.pt with the "
            "data it trained on (--split val then means its held-out images), or a data.yaml",
        )
    parts = cut(ds, (1 - held["val_split"], held["val_split"]), seed=held["seed"])
    return parts[split]


def scorable(ds: Dataset) -> Dataset:
    """``ds`` without its unreadable images and invalid boxes, each kind named in a warning."""
    return without_invalid_boxes(usable(ds)[0], "scored")


def scoring_set(det, weights, data, split: str | None, **opts) -> tuple[Dataset, str]:
    """The images ``det`` (loaded from ``weights``) is scored on: the ``split`` of ``data``
    (see :func:`eval_split`), its unreadable images and invalid boxes left out, refused
    when its task or classes differ from the model's."""

    ds, split = eval_split(data, split, weights, **opts)
    if ds.task != det.task:
        what = {"detect": "boxes", "classify": "a class per image (class folders)"}
        raise DetforgeError(
            f"{weights} is a {det.task} model but {data} holds {what[ds.task]}",
            f"evaluate it on {what[det.task]}",
        )
    ds = scorable(ds)
    if list(ds.classes) != list(det.classes):
        raise DetforgeError(
            f"{weights}: the model's classes {det.classes} differ from the dataset's {ds.classes}",
            "evaluate on the data the model was trained for (same class list and order)",
        )
    return ds, split
