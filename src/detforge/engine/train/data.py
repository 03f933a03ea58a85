"""What a run trains on: the splits, checked against the task and the model, and the loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from detforge.data import read
from detforge.data.check import without_invalid_boxes
from detforge.data.formula import formula_splits, is_formula
from detforge.data.reading import is_data_yaml, read_splits
from detforge.data.split import split, strata
from detforge.data.stats import input_size_for
from detforge.data.torch import cache as decoded_cache
from detforge.data.torch.augment import training_view
from detforge.data.torch.loader import BalancedSampler, collate, ignore_signals
from detforge.data.verify import usable
from detforge.engine.train.config import ConfigError, TrainConfig
from detforge.models import entry, names


def load_data(cfg: TrainConfig, say) -> tuple:
    """(train Dataset, val Dataset): a data YAML's train and val splits, or a seeded split
    of the data (or of a YAML's train split when it names no val), announced. Images that do
    not decode are left out up front, each named once (cached: a second run decodes nothing)."""

    if is_formula(cfg.data):
        try:
            train, val = formula_splits(cfg.data, cfg.imgsz)
        except ValueError as e:
            raise ConfigError(str(e), "e.g. --data formula:classes=256,seed=0") from None
        cfg.auto_imgsz = False  # scenes are drawn at the size asked for
        o = train.opts
        say(f"pretraining on formula scenes ({o['classes']} classes, seed {o['seed']}): "
            f"{len(train)} new ones each epoch, {len(val)} fixed for val")  # fmt: skip
        return train, val
    train, val = _splits(cfg, say)
    train = without_invalid_boxes(usable(train)[0], "trained on")
    return train, without_invalid_boxes(usable(val)[0], "scored")


def _splits(cfg: TrainConfig, say) -> tuple:

    src = Path(cfg.data)
    opts = {"outside_paths": "allow"} if cfg.allow_outside_paths else {}
    if is_data_yaml(src):
        parts = read_splits(src, **opts)
        if "train" not in parts:
            raise ConfigError(
                f"{src}: names no train split (it has {', '.join(parts)})",
                "add a train: entry, or pass the training data itself as --data",
            )
        ds = parts["train"]
        if not len(ds):
            raise ConfigError(f"{src}: the train split holds no images", "check its train: entry")
        if "val" in parts and len(parts["val"]):
            return ds, parts["val"]
    else:
        ds = read(src, **opts)
    if not len(ds):
        raise ConfigError(f"{src}: holds no images", "check the path (`detforge data stats`)")
    parts = split(ds, (1 - cfg.val_split, cfg.val_split), seed=cfg.seed)
    say(
        f"no val split in {src}: holding out {len(parts['val'])} of {len(ds)} images "
        f"(val_split={cfg.val_split}, seed={cfg.seed})"
    )
    return parts["train"], parts["val"]


def pick_imgsz(cfg: TrainConfig, train_ds, say) -> None:
    """A detector given no ``imgsz``: train at the smallest multiple of 32 from the recipe's
    size up to twice it at which the 10th-percentile training box keeps 12 px on its shorter
    side (:func:`detforge.data.stats.input_size_for`); said in one line, and recorded in
    the run's config (which then holds the size as chosen)."""

    if not cfg.auto_imgsz or train_ds.task != "detect":
        return
    cfg.auto_imgsz = False
    pick = input_size_for(train_ds, cfg.imgsz, 2 * cfg.imgsz)
    if pick["imgsz"] != cfg.imgsz:
        say(f"imgsz {pick['imgsz']} (not {cfg.imgsz}): {pick['reason']}; --imgsz sets it")
    cfg.imgsz = pick["imgsz"]


def fingerprint(cfg: TrainConfig, train_ds, val_ds) -> dict:
    """What the run trained on, saved in each checkpoint: the source, the split sizes and a
    hash of the image names and box counts (changes when the data does)."""
    import hashlib

    h = hashlib.sha1()
    for s in (*train_ds.samples, *val_ds.samples):
        h.update(f"{s.name}\t{len(s.boxes)}\t{s.category}\n".encode())
    held_out = None  # how val was cut from a source without splits: eval --split redoes it
    if not is_data_yaml(Path(cfg.data)):
        held_out = {"seed": cfg.seed, "val_split": cfg.val_split}
    return {
        "source": str(cfg.data),
        "train_images": len(train_ds),
        "val_images": len(val_ds),
        "sha1": h.hexdigest(),
        "held_out": held_out,
    }


def loader_workers(cfg: TrainConfig, data, device_type: str) -> int:
    """``--workers`` auto (-1): on a CPU, training's own threads already use every core, so
    worker processes only pay off while images are decoded from disk; once the decoded cache
    holds them, 0 is faster and lighter (det-n on raccoon, 2 cores: 1.25x the steps of 2
    workers in the same time, peak memory 0.98 vs 1.27 GiB). Elsewhere 2."""

    if cfg.workers >= 0:
        return cfg.workers
    cached = isinstance(getattr(data, "base", data), decoded_cache.DecodedSamples)
    return 0 if device_type == "cpu" and cached else 2


def train_loader(train_ds, cfg: TrainConfig, gen, rank: int, world: int, device_type="cpu"):
    """The shuffled (or balanced, or DDP-sliced) loader over the augmented training view."""

    data = training_view(train_ds, cfg.augment, cfg.imgsz, cache=cfg.cache)
    sampler = None
    if cfg.balanced:
        sampler = BalancedSampler(strata(train_ds), gen, rank, world)
    elif world > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(data, world, rank, shuffle=True, seed=cfg.seed, drop_last=True)
    workers = loader_workers(cfg, data, device_type)
    check_host_memory(cfg, workers, device_type)
    loader = DataLoader(
        data,
        cfg.batch,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        generator=gen,
        drop_last=len(train_ds) > cfg.batch * world,
        persistent_workers=False,
        worker_init_fn=ignore_signals,
    )
    return loader, sampler


PREFETCH = 2  # batches each loader worker prepares ahead (PyTorch's default)
STEP_BYTES_PER_PIXEL = 3 * 4 * 40  # a det-n training step on the CPU: ~40 float copies of a pixel


def check_host_memory(cfg: TrainConfig, workers: int, device_type: str = "cpu") -> None:
    """Refuse, in one line that says what to lower, a run whose batches in flight (``batch``
    images at ``imgsz`` x (``workers`` x prefetch + on a CPU the step's own activations))
    cannot fit in the host memory available now, instead of being killed by the kernel without
    a word. The
    decoded cache sizes itself to what is available (:func:`~detforge.data.torch.cache.fits`)."""

    free = decoded_cache.available_memory()
    if free is None:
        return
    pixels = cfg.batch * cfg.imgsz**2
    need = pixels * 3 * max(1, workers) * PREFETCH
    if device_type == "cpu":
        need += pixels * STEP_BYTES_PER_PIXEL
    if need > free:
        gib = 2**30
        raise ConfigError(
            f"training would need about {need / gib:.1f} GiB of host memory (batch {cfg.batch} "
            f"at imgsz {cfg.imgsz}, {workers} loader workers); {free / gib:.1f} GiB are free",
            f"lower --batch (e.g. {max(1, cfg.batch // 2)}), --imgsz or --workers, or free memory",
        )


def check_task(cfg: TrainConfig, ds) -> None:
    """The data, --task and --model must agree; a classification set needs every class."""

    task = ds.task if cfg.task == "auto" else cfg.task
    if task != ds.task:
        what = "class folders (or labels per image)" if task == "classify" else "boxes"
        raise ConfigError(
            f"--task {task} but {cfg.data} is a {ds.task} dataset",
            f"a {task} dataset has {what}; check --data or drop --task",
        )
    if entry(cfg.model).task != task:
        pick = ", ".join(names(task))
        raise ConfigError(
            f"model {cfg.model!r} does not fit a {task} dataset", f"use --model {pick}"
        )
    if task == "classify":
        counts = np.bincount([s.category for s in ds.samples], minlength=len(ds.classes))
        empty = [c for c, n in zip(ds.classes, counts) if n == 0]
        if len(ds.classes) < 2:
            raise ConfigError(
                f"{cfg.data}: only one class ({', '.join(ds.classes)}); a classifier needs two",
                "add a folder per class, e.g. one of images without the object ('other')",
            )
        if empty:
            raise ConfigError(
                f"{cfg.data}: no training images for class(es) {', '.join(empty)}",
                "add images to those class folders or remove the empty folders",
            )


def model_options(cfg: TrainConfig, ds) -> dict:
    """``model_options``, with ``class_weights: balanced`` turned into inverse class frequencies
    of the training split (mean 1)."""
    opts = dict(cfg.model_options)
    if opts.get("class_weights") == "balanced" and ds.task == "classify":
        counts = np.bincount([s.category for s in ds.samples], minlength=len(ds.classes))
        w = 1.0 / np.maximum(counts, 1)
        opts["class_weights"] = (w * len(w) / w.sum()).round(6).tolist()
    return opts


def check_dataset(model, ds) -> None:
    """What one model cannot learn from the data: the localizer and images with many boxes."""
    if model.name == "localizer" and not model.options.get("largest"):
        many = sum(1 for s in ds.samples if len(s.boxes) > 1)
        if many:
            raise ConfigError(
                f"the localizer finds one object per image; {many} training images hold more",
                "pick a multi-object model (ssdlite, fasterrcnn-mobilenet, ...) or set "
                "model_options: {largest: true} to keep the largest box",
            )
