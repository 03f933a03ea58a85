"""Image classifiers (torchvision resnet18, mobilenet_v3_large, efficientnet_b0) behind the same
contract as the detectors: uint8 (or [0, 1] float) CHW images in, resize and normalization
inside. Train mode takes targets with ``category`` and returns ``{"ce": loss}`` (label
smoothing, class weights, mixup/cutmix by option); eval mode returns ``{"probs"}`` per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from detforge.errors import DetforgeError
from detforge.models.base import Classifier, Normalize, to_float
from detforge.models.registry import register_model
from detforge.models.weights import check_pretrained, ensure_downloaded

ARCHS = {
    "resnet18": ("resnet18", "ResNet18_Weights", "fc"),
    "mobilenet_v3_large": ("mobilenet_v3_large", "MobileNet_V3_Large_Weights", "classifier"),
    "efficientnet_b0": ("efficientnet_b0", "EfficientNet_B0_Weights", "classifier"),
}


def _replace_last(net: nn.Module, attr: str, k: int) -> None:
    head = getattr(net, attr)
    if isinstance(head, nn.Linear):
        setattr(net, attr, nn.Linear(head.in_features, k))
    else:  # Sequential ending in a Linear
        head[-1] = nn.Linear(head[-1].in_features, k)


class TorchvisionClassifier(Classifier):
    """A torchvision classification network with a new last layer for ``classes``."""

    def __init__(
        self,
        name: str,
        classes: list[str],
        *,
        imgsz: int = 224,
        pretrained: str = "none",
        label_smoothing: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        class_weights=None,
    ):
        opts = {
            "imgsz": int(imgsz),
            "label_smoothing": float(label_smoothing),
            "mixup": float(mixup),
            "cutmix": float(cutmix),
            "class_weights": list(class_weights) if class_weights is not None else None,
        }
        super().__init__(classes, opts)
        self.name = name
        check_pretrained(pretrained)
        if pretrained == "coco":
            raise DetforgeError(f"{name} has no COCO weights", "use --pretrained imagenet")
        if len(classes) < 2:
            raise DetforgeError(
                f"a classifier needs at least 2 classes, the data has {len(classes)}",
                "add a folder per class (e.g. a 'background' or 'other' class)",
            )
        fn, wname, head = ARCHS[name]
        weights = None
        if pretrained == "imagenet":
            weights = getattr(torchvision.models, wname).IMAGENET1K_V1
            ensure_downloaded(weights)
        self.net = getattr(torchvision.models, fn)(weights=weights)
        _replace_last(self.net, head, len(classes))
        self.normalize = Normalize()
        cw = _class_weights(class_weights, len(classes))
        self.register_buffer("class_weights", cw, persistent=False)

    def _batch(self, images) -> torch.Tensor:
        size = self.options["imgsz"]
        ims = [
            im
            if tuple(im.shape[-2:]) == (size, size)
            else F.interpolate(im[None], (size, size), mode="bilinear", antialias=True)[0]
            for im in to_float(images)
        ]
        return self.normalize(torch.stack(ims))

    def forward(self, images, targets=None):
        x = self._batch(images)
        if not self.training:
            return [{"probs": p} for p in self.net(x).softmax(1)]
        if targets is None:
            raise DetforgeError("train mode needs targets", "call model.eval() to predict")
        y = torch.tensor([int(t["category"]) for t in targets], device=x.device)
        k = self.num_classes
        soft = F.one_hot(y, k).float()
        x, soft = self._mix(x, soft)
        eps = self.options["label_smoothing"]
        soft = soft * (1 - eps) + eps / k
        logp = F.log_softmax(self.net(x), 1)
        w = self.class_weights if self.class_weights is not None else torch.ones(k, device=x.device)
        return {"ce": -(soft * logp * w).sum() / (soft * w).sum()}  # weighted mean over images

    def _mix(self, x, soft):
        from torchvision.transforms import v2

        mixes = []
        if self.options["mixup"] > 0:
            mixes.append(v2.MixUp(alpha=self.options["mixup"], num_classes=self.num_classes))
        if self.options["cutmix"] > 0:
            mixes.append(v2.CutMix(alpha=self.options["cutmix"], num_classes=self.num_classes))
        if not mixes or len(x) < 2:
            return x, soft
        mix = mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)
        labels = soft.argmax(1)
        return mix(x, labels)

    def infer(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """Eval on a uint8 batch (B, 3, S, S) -> class probabilities (B, K)."""
        return (self.net(self.normalize(x.float() / 255.0)).softmax(1),)


def _class_weights(value, k: int) -> torch.Tensor | None:
    """``class_weights`` as a (K,) tensor: K positive numbers, in class order."""
    if value is None:
        return None
    if isinstance(value, str):
        raise DetforgeError(
            f"class_weights {value!r}: give one number per class here",
            "class_weights: balanced is worked out from the data by `detforge train`",
        )
    try:
        w = torch.tensor([float(v) for v in value], dtype=torch.float32)
    except (TypeError, ValueError):
        raise DetforgeError(f"class_weights {value!r} must be a list of numbers") from None
    if len(w) != k or not bool((w > 0).all()):
        raise DetforgeError(
            f"class_weights needs {k} positive numbers (one per class, in class order), "
            f"got {value!r}",
            "or set class_weights: balanced in the training config",
        )
    return w


def _builder(arch: str):
    def build(
        classes,
        *,
        imgsz: int = 224,
        label_smoothing: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        class_weights: list | str | None = None,
        pretrained: str = "none",
    ) -> TorchvisionClassifier:
        return TorchvisionClassifier(
            arch,
            classes,
            imgsz=imgsz,
            label_smoothing=label_smoothing,
            mixup=mixup,
            cutmix=cutmix,
            class_weights=class_weights,
            pretrained=pretrained,
        )

    build.__name__ = arch
    return build


# The classifiers' recipe: the whole image at the scale eval sees it (flips and colour only).
# A random-resized crop (50-100% of the area, stretched back) changes the scale and blur of
# every pattern; on small sets trained from scratch it made training chaotic (textures: held-out
# top-1 0.33 against 0.78 without it on one seed; benchmarks/bench_recipes.py --part classify).
# For photos with --pretrained imagenet, --set augment.crop_scale=[0.5,1] brings it back.
CLASSIFY_RECIPE = {"augment": {"crop_scale": (1.0, 1.0)}}

for _arch in ARCHS:
    register_model(
        _arch,
        task="classify",
        summary=f"image classifier (torchvision {_arch})",
        recipe=CLASSIFY_RECIPE,
    )(_builder(_arch))
