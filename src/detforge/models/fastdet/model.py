"""det-n, det-s and det-m: detforge's own single-stage, anchor-free detector family (see
:mod:`.network` for the layers and :mod:`.loss` for assignment and losses). Same contract as
every detector: uint8 images of any size in, resized (stretched to ``imgsz`` square) and
normalized inside; the final NMS runs in ``infer`` and so inside the ONNX graph, with its score
threshold and detection cap."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, nms

from detforge.errors import DetforgeError
from detforge.models.base import Detector, Normalize, to_float
from detforge.models.fastdet.loss import losses
from detforge.models.fastdet.network import (
    BACKBONES,
    PAN,
    SIZES,
    TORCHVISION,
    Backbone,
    Head,
    TorchvisionBackbone,
    anchor_points,
    decode,
)
from detforge.models.registry import register_model
from detforge.models.weights import check_pretrained, ensure_downloaded, load_shipped

PRE_NMS = 1000  # candidates (anchor, class) kept per image before NMS


class FastDet(Detector):
    resize_mode = "stretch"

    def __init__(self, name: str, classes: list[str], *, pretrained: str = "none", **options):
        options["imgsz"] = imgsz = _multiple_of_32(int(options["imgsz"]))
        super().__init__(classes, options)
        self.name = name
        size = SIZES[name.split("-")[1]]
        self.reg_max = int(options["reg_max"])
        self.normalize = Normalize()
        self.backbone = _backbone(name, size, options["backbone"], pretrained)
        self.neck = PAN(self.backbone.channels, size.neck)
        self.head = Head(size.neck, len(classes), self.reg_max, size.head_depth, 3)
        points, strides = anchor_points(imgsz)
        self.register_buffer("points", points, persistent=False)
        self.register_buffer("strides", strides, persistent=False)
        # optimizer steps taken (saved, so a resumed run switches assignment at the same step)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._keep_all = False
        if pretrained == "synthetic":  # formula-pretrained, shipped in the package
            load_shipped(self, name)

    def _logits(self, x: torch.Tensor):
        """Normalized float batch (B, 3, S, S) -> class logits, side logits, and the anchor
        points and strides they sit on."""
        cls, reg = self.head(self.neck(self.backbone(x)))
        points, strides = self.points, self.strides
        if x.shape[-1] != self.imgsz or x.shape[-2] != self.imgsz:
            points, strides = anchor_points(x.shape[-1], x.device)
        return cls, reg, points, strides

    def _raw(self, x: torch.Tensor):
        """Normalized float batch (B, 3, S, S) -> class logits, side logits, sides, boxes."""
        cls, reg, points, strides = self._logits(x)
        sides, boxes = decode(reg, points, strides, self.reg_max)
        return cls, reg, sides, boxes, points, strides

    def _resized(self, images: list[torch.Tensor], targets=None):
        s = self.imgsz
        out, scaled = [], []
        for k, im in enumerate(to_float(images)):
            h, w = im.shape[-2:]
            if (h, w) != (s, s):
                im = F.interpolate(im[None], (s, s), mode="bilinear", antialias=True)[0]
            out.append(im)
            if targets is not None:
                t = targets[k]
                gain = torch.tensor([s / w, s / h, s / w, s / h], device=im.device)
                scaled.append({"boxes": t["boxes"].float() * gain, "labels": t["labels"]})
        return self.normalize(torch.stack(out)), scaled

    def forward(self, images, targets=None):
        if self.training:
            if targets is None:
                raise DetforgeError("train mode needs targets", "call model.eval() to predict")
            x, scaled = self._resized(images, targets)
            cls, reg, sides, boxes, points, strides = self._raw(x)
            static = int(self.steps) < self.options["static_steps"]
            self.steps += 1
            return losses(cls, reg, sides, boxes, points, strides, scaled, self.reg_max, static)
        sizes = [im.shape[-2:] for im in images]
        boxes, scores, labels, index = self._detect(self._resized(images)[0])
        out = []
        for i, (h, w) in enumerate(sizes):
            keep = index == i
            gain = torch.tensor([w / self.imgsz, h / self.imgsz] * 2, device=boxes.device)
            out.append(
                {"boxes": boxes[keep] * gain, "scores": scores[keep], "labels": labels[keep]}
            )
        return out

    def statistics_pass(self, images, targets=None) -> None:
        """The train-mode forward without losses or a step count: what re-estimating the
        BatchNorm statistics needs."""
        self._raw(self._resized(images)[0])

    def infer(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """uint8 (B, 3, S, S) -> flat boxes, scores, labels, batch_index (NMS inside)."""
        return self._detect(self.normalize(x.float() / 255.0))

    def _detect(self, x: torch.Tensor):
        # boxes are decoded for the candidates only, not every anchor: the same boxes, and at
        # 640 a fraction of the softmax the exported graph ran on every side of every anchor
        cls, reg, points, strides = self._logits(x)
        scores = cls.sigmoid()
        k = scores.shape[-1]
        out_b, out_s, out_l, out_i = [], [], [], []
        for i in range(scores.shape[0]):
            flat = scores[i].flatten()
            top, idx = flat.topk(min(PRE_NMS, flat.numel()))
            keep = top > self.options["score_thresh"]
            top, idx = top[keep], idx[keep]
            anchor, label = idx // k, idx % k
            _, b = decode(reg[i][anchor], points[anchor], strides[anchor], self.reg_max)
            b = b.clamp(0, self.imgsz)
            if not self._keep_all:
                kept = batched_nms(b, top, label, self.options["iou_thresh"])
                b, top, label = b[kept], top[kept], label[kept]
                if self.options["agnostic_iou"] < 1:  # one object scored under two classes
                    kept = nms(b, top, self.options["agnostic_iou"])
                    b, top, label = b[kept], top[kept], label[kept]
                b, top, label = (t[: self.options["max_det"]] for t in (b, top, label))
            out_b.append(b)
            out_s.append(top)
            out_l.append(label)
            out_i.append(torch.full_like(label, i))
        return torch.cat(out_b), torch.cat(out_s), torch.cat(out_l), torch.cat(out_i)

    @contextlib.contextmanager
    def nms_left_out(self):
        self._keep_all = True
        try:
            yield
        finally:
            self._keep_all = False


def _backbone(name: str, size, backbone: str, pretrained: str):
    """Our own backbone (from scratch), or a torchvision one, ImageNet weights optional."""
    check_pretrained(pretrained)
    if backbone not in BACKBONES:
        raise DetforgeError(f"{name}: unknown backbone {backbone!r}", f"use {', '.join(BACKBONES)}")
    if pretrained == "coco":
        raise DetforgeError(f"{name} has no COCO weights", "use --pretrained imagenet or none")
    if pretrained == "synthetic" and backbone != "own":
        raise DetforgeError(
            f"the synthetic weights are for {name}'s own backbone, not {backbone}",
            "pass --pretrained imagenet (or none) with model_options.backbone, or drop it",
        )
    if backbone == "own":
        if pretrained == "imagenet":
            raise DetforgeError(
                f"{name}'s own backbone has no ImageNet weights (it trains from scratch)",
                "set model_options.backbone to mobilenet_v3_large or resnet18",
            )
        return Backbone(size)
    weights = None
    if pretrained == "imagenet":
        import torchvision

        weights = getattr(torchvision.models, TORCHVISION[backbone][1]).IMAGENET1K_V1
        ensure_downloaded(weights)
    return TorchvisionBackbone(backbone, weights)


def _multiple_of_32(n: int) -> int:
    return max(32, math.ceil(n / 32) * 32)


RECIPE = {
    "imgsz": 320,
    "batch": 8,  # more optimizer steps per CPU minute
    "lr": 0.004,
    "weight_decay": 0.05,
    "ema": 0.995,
    "ema_tau": 200.0,  # short runs take few steps: let the average start working early
    "precise_bn": 64,
    "augment": {"mosaic": 0.5, "scale_jitter": [0.5, 1.5], "color": 0.3, "hue": 0.015},
}
# Larger sizes overfit a few hundred images sooner and afford a larger input: stronger mosaic,
# scale and colour for s, and m at 416 px too (the published families scale them the same
# way). det-n's recipe is the one measured (benchmarks/vs_yolo.py); s and m follow its form.
RECIPES = {
    # det-n starts from its formula-pretrained weights shipped in the package (measured:
    # benchmarks/bench_pretrain.py); --pretrained none trains from scratch
    "n": {**RECIPE, "pretrained": "synthetic"},
    "s": {
        **RECIPE,
        "augment": {"mosaic": 0.6, "scale_jitter": [0.4, 1.6], "color": 0.35, "hue": 0.015},
    },
    "m": {
        **RECIPE,
        "imgsz": 416,
        "lr": 0.003,
        "augment": {"mosaic": 0.7, "scale_jitter": [0.35, 1.65], "color": 0.4, "hue": 0.02},
    },
}


def _register(size: str, summary: str) -> None:
    name = f"det-{size}"

    @register_model(name, task="detect", summary=summary, recipe=RECIPES[size])
    def build(
        classes,
        *,
        imgsz: int = 320,
        max_det: int = 100,
        score_thresh: float = 0.005,
        iou_thresh: float = 0.5,  # dense scenes: 0.6 kept offset copies (bench_dense.py)
        agnostic_iou: float = 1.0,  # < 1: also suppress one object scored under two classes
        reg_max: int = 15,
        static_steps: int = 150,
        backbone: str = "own",
        pretrained: str = "none",
    ) -> FastDet:
        return FastDet(
            name,
            classes,
            imgsz=imgsz,
            max_det=max_det,
            score_thresh=score_thresh,
            iou_thresh=iou_thresh,
            agnostic_iou=agnostic_iou,
            reg_max=reg_max,
            static_steps=static_steps,
            backbone=backbone,
            pretrained=pretrained,
        )


_register("n", "detforge's own CPU real-time detector, nano (anchor-free, from scratch)")
_register("s", "detforge's own CPU real-time detector, small")
_register("m", "detforge's own CPU real-time detector, medium")
