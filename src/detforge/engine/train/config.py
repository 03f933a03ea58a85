"""The training configuration: typed, every field with a one-line meaning, loadable from YAML,
overridable from the CLI, validated with messages that name the field."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields

import yaml

from detforge.data.augmentation import AugmentConfig
from detforge.errors import DetforgeError
from detforge.fileio import atomic_write_text, read_text

DEFAULT_EPOCHS = 30
UNLIMITED = 10**9  # epochs when only a time budget ends the run


class ConfigError(DetforgeError):
    """A configuration value is missing, unknown or out of range."""


@dataclass
class TrainConfig:
    data: str = ""  # dataset: folder, annotation file, data.yaml, shards
    model: str = "ssdlite"  # model name (see `detforge models`)
    task: str = "auto"  # detect, classify, or auto (from the data)
    epochs: int = 0  # passes over the training set; 0 = 30, or as many as --time allows
    imgsz: int = 320  # input size (longest side); detectors not told pick it from their boxes
    auto_imgsz: bool = True  # detectors, imgsz not given: raise it (<= 2x) until small boxes fit
    batch: int = 8  # images per step; -1 (CLI: --batch auto) = largest that fits on the GPU
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    workers: int = -1  # DataLoader worker processes; -1 = auto (0 on a CPU with cached images)
    cache: bool = True  # hold decoded training images in memory when they fit in 384 MiB
    pretrained: str = "none"  # none, imagenet, coco or synthetic (det-n: shipped)
    name: str = "exp"  # run name under project/train/
    project: str = "runs"  # root folder of runs
    optimizer: str = "adamw"  # adamw or sgd
    lr: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # SGD momentum (AdamW beta1)
    weight_decay: float = 1e-4  # decoupled weight decay (not on norms and biases)
    warmup_epochs: float = 1.0  # linear warmup, in epochs
    final_lr: float = 0.05  # cosine decays to lr * final_lr
    grad_clip: float = 10.0  # max gradient norm (0 = off)
    accumulate: int = 1  # steps to accumulate before an optimizer update
    amp: bool = True  # mixed precision on CUDA
    ema: float = 0.999  # EMA decay of weights for validation and best.pt (0 = off)
    ema_tau: float = 2000.0  # optimizer steps over which the EMA decay ramps up from 0
    precise_bn: int = 256  # training images to re-estimate BatchNorm stats before val (0 = off)
    seed: int = 0  # seeds Python, NumPy and torch
    deterministic: bool = False  # deterministic algorithms (slower)
    patience: int = 0  # stop after this many epochs without mAP gain (0 = off)
    time: float = 0.0  # wall-clock budget in minutes, validation included (0 = off); ends mid-epoch

    val_split: float = 0.2  # fraction held out when the data has no val split
    allow_outside_paths: bool = False  # follow annotation image paths that leave the dataset
    balanced: bool = False  # sample rare classes as often as common ones (with replacement)
    model_options: dict = field(default_factory=dict)  # e.g. {backbone: vgg16, rois: 128}
    # classifiers: label_smoothing, mixup, cutmix, class_weights (a list, or balanced)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> TrainConfig:
        checks = [
            ("epochs", self.epochs >= 0, "at least 1, or 0 for the default"),
            ("imgsz", 32 <= self.imgsz <= 4096, "between 32 and 4096"),
            ("batch", self.batch >= 1 or self.batch == -1, "at least 1, or auto"),
            ("workers", self.workers >= -1, "0 or more, or -1 for auto"),
            ("optimizer", self.optimizer in ("adamw", "sgd"), "adamw or sgd"),
            ("task", self.task in ("auto", "detect", "classify"), "auto, detect or classify"),
            ("lr", self.lr > 0, "positive"),
            (
                "pretrained",
                self.pretrained in ("none", "imagenet", "coco", "synthetic"),
                "none, imagenet, coco or synthetic",
            ),
            ("accumulate", self.accumulate >= 1, "at least 1"),
            ("ema", 0 <= self.ema < 1, "in [0, 1)"),
            ("ema_tau", self.ema_tau > 0, "positive"),
            ("val_split", 0 < self.val_split < 1, "in (0, 1)"),
            ("data", bool(self.data), "a dataset path"),
            (
                "augment.crop_scale",
                len(self.augment.crop_scale) == 2
                and 0 < self.augment.crop_scale[0] <= self.augment.crop_scale[1] <= 1,
                "two shares of the area, 0 < low <= high <= 1 (1, 1 = no crop)",
            ),
        ]
        for name, ok, want in checks:
            if not ok:
                value = (
                    getattr(self.augment, name[8:])
                    if name.startswith("augment.")
                    else getattr(self, name)
                )
                raise ConfigError(f"config field {name!r} = {value!r} must be {want}")
        return self

    @property
    def planned_epochs(self) -> int:
        """``epochs``, or when 0: 30, or with a time budget as many as it allows."""
        if self.epochs:
            return self.epochs
        return UNLIMITED if self.time else DEFAULT_EPOCHS

    def to_dict(self) -> dict:
        """Plain values only (tuples as lists), as saved in the run's config.yaml."""
        import json

        return json.loads(json.dumps(dataclasses.asdict(self)))


def _coerce(name: str, value, default):
    kind = type(default)
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(default, AugmentConfig):
            return (
                value
                if isinstance(value, AugmentConfig)
                else _build(AugmentConfig, value, "augment.")
            )
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
        if isinstance(default, tuple):
            return tuple(float(v) for v in value)
        if name == "batch" and str(value).lower() == "auto":
            return -1
        return kind(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config field {name!r}: expected {kind.__name__}, got {value!r}") from e


def _build(cls, values: dict, prefix: str = ""):
    known = {f.name: f for f in fields(cls)}
    base = cls()
    out = {}
    for k, v in (values or {}).items():
        if k not in known:
            close = difflib.get_close_matches(k, list(known), n=1)
            raise ConfigError(
                f"unknown config field {prefix}{k!r}",
                f"did you mean {prefix}{close[0]!r}?" if close else None,
            )
        out[k] = _coerce(prefix + k, v, getattr(base, k))
    return cls(**out)


def load_config(path=None, **overrides) -> TrainConfig:
    """A TrainConfig: the model's recipe (:func:`recipe`), then a YAML file (optional), then
    ``overrides`` (e.g. from the CLI) on top; ``None`` overrides are ignored."""
    values: dict = {}
    if path:
        try:
            values = yaml.safe_load(read_text(path)) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: cannot read the config: {e}") from e
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of config fields")
    values = _merged(values, {k: v for k, v in overrides.items() if v is not None})
    if "imgsz" in values:  # the user's size is used as given
        values.setdefault("auto_imgsz", False)
    model = values.get("model", TrainConfig.model)
    if isinstance(model, str):
        from detforge.models import canonical

        values["model"] = model = canonical(model)  # a renamed model: its new name
    base = recipe(model) if isinstance(model, str) else {}
    return _build(TrainConfig, _merged(base, values))


def recipe(model: str) -> dict:
    """The model's training recipe: the TrainConfig defaults it trains well with (empty for
    a name no model has; building it says so)."""
    from detforge.models import REGISTRY

    e = REGISTRY.get(model)
    return dict(e.recipe) if e else {}


def _merged(base: dict, top: dict) -> dict:
    """``top`` over ``base``; mappings (augment, model_options) merge key by key."""
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            v = _merged(out[k], v)
        out[k] = v
    return out


def save_config(cfg: TrainConfig, path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
