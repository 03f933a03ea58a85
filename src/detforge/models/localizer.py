"""Single-object localizer: a backbone, global pooling, a class-score head and a box head.

The "face tracker" our users built by hand (VGG16 + two heads): one object per image at most.
Called ``tracker`` until 0.1.0 (the name still builds it, with a note), renamed because
``predict --track`` tracks objects across frames, which this model does not. Scores are
trained with BCE (a negative image has all-zero targets), the box with L1 + GIoU on positives
only. In eval mode it returns the best class and its box.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou_loss

from detforge.errors import DetforgeError
from detforge.models.base import Detector, Normalize, to_float
from detforge.models.registry import register_model
from detforge.models.weights import check_pretrained, ensure_downloaded

BACKBONES = ("vgg16", "mobilenet_v3_large", "resnet18")


def _backbone(name: str, pretrained: str) -> tuple[nn.Module, int]:
    """Feature extractor and its output channels; ``pretrained='imagenet'`` loads weights."""
    M = torchvision.models
    if name == "vgg16":
        w = M.VGG16_Weights.IMAGENET1K_V1 if pretrained != "none" else None
        ensure_downloaded(w)
        return M.vgg16(weights=w).features, 512
    if name == "mobilenet_v3_large":
        w = M.MobileNet_V3_Large_Weights.IMAGENET1K_V1 if pretrained != "none" else None
        ensure_downloaded(w)
        return M.mobilenet_v3_large(weights=w).features, 960
    if name == "resnet18":
        w = M.ResNet18_Weights.IMAGENET1K_V1 if pretrained != "none" else None
        ensure_downloaded(w)
        net = M.resnet18(weights=w)
        return nn.Sequential(*list(net.children())[:-2]), 512
    raise DetforgeError(
        f"unknown localizer backbone {name!r}", f"use one of {', '.join(BACKBONES)}"
    )


class Localizer(Detector):
    name = "localizer"

    def __init__(
        self,
        classes: list[str],
        *,
        backbone: str = "resnet18",
        imgsz: int = 224,
        largest: bool = False,
        pretrained: str = "none",
    ):
        super().__init__(classes, {"backbone": backbone, "imgsz": int(imgsz), "largest": largest})
        check_pretrained(pretrained)
        if pretrained == "coco":
            raise DetforgeError("the localizer has no COCO weights", "use --pretrained imagenet")
        self.features, ch = _backbone(backbone, pretrained)
        self.score_head = nn.Sequential(nn.Linear(ch, 256), nn.ReLU(), nn.Linear(256, len(classes)))
        self.box_head = nn.Sequential(nn.Linear(ch, 256), nn.ReLU(), nn.Linear(256, 4))
        self.normalize = Normalize()

    def _prepare(self, images) -> torch.Tensor:
        size = self.options["imgsz"]
        x = torch.stack(
            [
                im
                if tuple(im.shape[-2:]) == (size, size)  # already at size (predictor, export)
                else F.interpolate(
                    im[None], (size, size), mode="bilinear", antialias=True, align_corners=False
                )[0]
                for im in to_float(images)
            ]
        )
        return self.normalize(x)

    dynamic_batch = True

    def infer(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Vectorized eval on a uint8 batch (B, 3, S, S) at the model's size: one box each."""
        logits, box = self._heads_of(self.normalize(x.float() / 255.0))
        scores, labels = torch.sigmoid(logits).max(1)
        size = float(self.options["imgsz"])
        boxes = box_convert(box, "cxcywh", "xyxy").clamp(0, 1) * size
        index = torch.arange(x.shape[0], device=x.device)
        return boxes, scores, labels, index

    def _heads(self, images):
        return self._heads_of(self._prepare(images))

    def _heads_of(self, x: torch.Tensor):
        f = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.score_head(f), torch.sigmoid(self.box_head(f))  # box: normalized cx cy w h

    def _target(self, t, w: int, h: int):
        boxes, labels = t["boxes"], t["labels"]
        if len(boxes) > 1:
            if not self.options["largest"]:
                raise DetforgeError(
                    f"the localizer finds one object per image, got an image with {len(boxes)}",
                    "use a multi-object model (ssdlite, fasterrcnn, ...) or train with "
                    "--largest to keep the largest box",
                )
            k = int(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).argmax())
            boxes, labels = boxes[k : k + 1], labels[k : k + 1]
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=boxes.device)
        return boxes.float() / scale, labels

    def forward(self, images, targets=None):
        logits, box = self._heads(images)
        if not self.training:
            out = []
            for im, lg, b in zip(images, logits, box):
                h, w = im.shape[-2:]
                probs = torch.sigmoid(lg)
                k = int(probs.argmax())
                xyxy = box_convert(b[None], "cxcywh", "xyxy").clamp(0, 1)
                xyxy = xyxy * torch.tensor([w, h, w, h], dtype=xyxy.dtype, device=xyxy.device)
                out.append(
                    {
                        "boxes": xyxy,
                        "scores": probs[k : k + 1],
                        "labels": torch.tensor([k], device=lg.device),
                    }
                )
            return out
        if targets is None:
            raise DetforgeError("train mode needs targets", "call model.eval() to predict")
        score_t = torch.zeros_like(logits)
        pos, tgt_boxes = [], []
        for i, (im, t) in enumerate(zip(images, targets)):
            h, w = im.shape[-2:]
            b, lab = self._target(t, w, h)
            if len(b):
                score_t[i, lab[0]] = 1.0
                pos.append(i)
                tgt_boxes.append(b[0])
        losses = {"score": F.binary_cross_entropy_with_logits(logits, score_t)}
        if pos:
            pred = box_convert(box[pos], "cxcywh", "xyxy")
            tgt = torch.stack(tgt_boxes)
            losses["box_l1"] = F.l1_loss(pred, tgt) * 5.0
            losses["box_giou"] = generalized_box_iou_loss(pred, tgt, reduction="mean")
        else:  # keep the graph: every parameter gets a (zero) gradient
            losses["box_l1"] = box.sum() * 0.0
            losses["box_giou"] = box.sum() * 0.0
        return losses


@register_model(
    "localizer", task="detect", summary="one object per image: backbone + score and box heads"
)
def localizer(
    classes,
    *,
    imgsz: int = 224,
    backbone: str = "resnet18",
    largest: bool = False,
    pretrained: str = "none",
) -> Localizer:
    """backbone: vgg16, mobilenet_v3_large or resnet18; largest: keep each image's largest
    box (else an image with two boxes is an error)."""
    return Localizer(
        classes, backbone=backbone, imgsz=imgsz, largest=largest, pretrained=pretrained
    )
