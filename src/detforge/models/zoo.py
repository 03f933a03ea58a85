"""torchvision detectors behind the Detector contract (labels 0-based, uint8 input).

torchvision keeps resizing and normalization inside the model (GeneralizedRCNNTransform), so
what is trained is what is exported. Our labels are 0-based; torchvision reserves 0 for the
background, so the wrapper shifts by one at its edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights
from torchvision.models import detection as D
from torchvision.models.detection.anchor_utils import AnchorGenerator

from detforge.errors import DetforgeError
from detforge.models.base import Detector, to_float
from detforge.models.weights import check_pretrained, ensure_downloaded

EVAL_SCORE_THRESH = 0.001  # keep low-score boxes: mAP needs the whole PR curve


@dataclass(frozen=True)
class Family:
    builder: callable
    coco_weights: object
    backbone_weights: object
    default_size: int
    kind: str  # rcnn | retinanet | fcos | ssd


FAMILIES = {
    "ssdlite": Family(
        D.ssdlite320_mobilenet_v3_large,
        D.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1,
        MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        320,
        "ssd",
    ),
    "fasterrcnn-mobilenet": Family(
        D.fasterrcnn_mobilenet_v3_large_fpn,
        D.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
        MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        800,
        "rcnn",
    ),
    "fasterrcnn-mobilenet-320": Family(
        D.fasterrcnn_mobilenet_v3_large_320_fpn,
        D.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
        MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        320,
        "rcnn",
    ),
    "fasterrcnn": Family(
        D.fasterrcnn_resnet50_fpn_v2,
        D.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
        ResNet50_Weights.IMAGENET1K_V2,
        800,
        "rcnn",
    ),
    "retinanet": Family(
        D.retinanet_resnet50_fpn_v2,
        D.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1,
        ResNet50_Weights.IMAGENET1K_V2,
        800,
        "retinanet",
    ),
    "fcos": Family(
        D.fcos_resnet50_fpn,
        D.FCOS_ResNet50_FPN_Weights.COCO_V1,
        ResNet50_Weights.IMAGENET1K_V1,
        800,
        "fcos",
    ),
}


def _kwargs(fam: Family, imgsz: int, rois: int | None, anchor_sizes, max_det: int) -> dict:
    kw: dict = {"detections_per_img": max_det} if fam.kind != "rcnn" else {}
    if fam.kind == "rcnn":
        kw.update(
            min_size=imgsz,
            max_size=imgsz,
            box_score_thresh=EVAL_SCORE_THRESH,
            box_detections_per_img=max_det,
        )
        if rois:
            kw["box_batch_size_per_image"] = rois
        if anchor_sizes:
            sizes = tuple((int(s),) for s in anchor_sizes)
            kw["rpn_anchor_generator"] = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    elif fam.kind in ("retinanet", "fcos"):
        kw.update(min_size=imgsz, max_size=imgsz, score_thresh=EVAL_SCORE_THRESH)
        if anchor_sizes and fam.kind == "retinanet":
            sizes = tuple(
                (int(s), int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in anchor_sizes
            )
            kw["anchor_generator"] = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    else:
        kw.update(score_thresh=EVAL_SCORE_THRESH)
    return kw


def _set_ssd_size(net, imgsz: int) -> None:
    t = net.transform
    t.min_size, t.max_size, t.fixed_size = (imgsz,), imgsz, (imgsz, imgsz)


def _replace_head(net, kind: str, num_classes: int) -> None:
    """Swap a COCO head for one with ``num_classes`` (background included)."""
    if kind == "rcnn":
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

        inp = net.roi_heads.box_predictor.cls_score.in_features
        net.roi_heads.box_predictor = FastRCNNPredictor(inp, num_classes)
    elif kind == "retinanet":
        from torchvision.models.detection.retinanet import RetinaNetClassificationHead

        head = net.head.classification_head
        anchors = head.num_anchors
        inp = head.conv[0][0].in_channels
        norm = partial(torch.nn.GroupNorm, 32)
        net.head.classification_head = RetinaNetClassificationHead(
            inp, anchors, num_classes, norm_layer=norm
        )
    elif kind == "fcos":
        from torchvision.models.detection.fcos import FCOSClassificationHead

        head = net.head.classification_head
        inp = head.conv[0].in_channels
        net.head.classification_head = FCOSClassificationHead(inp, head.num_anchors, num_classes)
    else:
        from torchvision.models.detection import _utils as det_utils
        from torchvision.models.detection.ssdlite import SSDLiteClassificationHead

        channels = det_utils.retrieve_out_channels(net.backbone, (320, 320))
        anchors = net.anchor_generator.num_anchors_per_location()
        norm = partial(torch.nn.BatchNorm2d, eps=0.001, momentum=0.03)
        net.head.classification_head = SSDLiteClassificationHead(
            channels, anchors, num_classes, norm
        )


def head_layers(net, kind: str) -> list[tuple[torch.nn.Module, str, int]]:
    """The layers whose output channels index classes, with their layout: ``("class", w)``
    puts class j at channels [j*w, (j+1)*w) (Faster R-CNN's scores and boxes), ``("anchor",
    a)`` puts class j of anchor i at channel i*K + j (RetinaNet, FCOS, SSDLite)."""
    if kind == "rcnn":
        p = net.roi_heads.box_predictor
        return [(p.cls_score, "class", 1), (p.bbox_pred, "class", 4)]
    head = net.head.classification_head
    if kind in ("retinanet", "fcos"):
        return [(head.cls_logits, "anchor", head.num_anchors)]
    anchors = net.anchor_generator.num_anchors_per_location()
    return [(m[-1], "anchor", a) for m, a in zip(head.module_list, anchors)]


@torch.no_grad()
def transfer_rows(old_layers, new_layers, keep: dict[int, int], k_old: int, k_new: int) -> None:
    """Copy the weights of COCO classes ``keep[new] = old`` from a COCO head into a new one, so
    classes the user shares with COCO start trained."""
    for (old, layout, w), (new, _, _) in zip(old_layers, new_layers):
        for nj, oj in keep.items():
            if layout == "class":
                src, dst = slice(oj * w, (oj + 1) * w), slice(nj * w, (nj + 1) * w)
                new.weight[dst] = old.weight[src]
                new.bias[dst] = old.bias[src]
            else:
                for a in range(w):
                    new.weight[a * k_new + nj] = old.weight[a * k_old + oj]
                    new.bias[a * k_new + nj] = old.bias[a * k_old + oj]


def coco_matches(classes: list[str], categories: list[str]) -> dict[int, int]:
    """``{our torchvision label: COCO index}`` for classes named like a COCO category, plus the
    background."""
    lower = [c.lower() for c in categories]
    keep = {0: 0}
    for c, name in enumerate(classes):
        if name.lower() in lower and name.lower() != "__background__":
            keep[c + 1] = lower.index(name.lower())
    return keep


class TorchvisionDetector(Detector):
    """A torchvision detection model with our contract."""

    def __init__(
        self,
        name: str,
        classes: list[str],
        *,
        imgsz: int | None = None,
        rois: int | None = None,
        anchor_sizes=None,
        trainable_layers: int | None = None,
        max_det: int = 100,
        pretrained: str = "none",
    ):
        fam = FAMILIES[name]
        imgsz = int(imgsz or fam.default_size)
        options = {
            "imgsz": imgsz,
            "rois": rois,
            "anchor_sizes": anchor_sizes,
            "trainable_layers": trainable_layers,
            "max_det": max_det,
        }
        super().__init__(classes, options)
        self.name = name
        self.resize_mode = "stretch" if fam.kind == "ssd" else "letterbox"
        check_pretrained(pretrained)
        kw = _kwargs(fam, imgsz, rois, anchor_sizes, max_det)
        if trainable_layers is not None:
            kw["trainable_backbone_layers"] = trainable_layers
        n = len(classes) + 1
        if pretrained == "coco":
            ensure_downloaded(fam.coco_weights)
            if anchor_sizes:
                raise DetforgeError(
                    "anchor_sizes cannot change COCO-pretrained anchors",
                    "use --pretrained imagenet or none with custom anchors",
                )
            self.net = fam.builder(weights=fam.coco_weights, **kw)
            categories = fam.coco_weights.meta["categories"]
            old = head_layers(self.net, fam.kind)
            _replace_head(self.net, fam.kind, n)
            keep = coco_matches(classes, categories)
            transfer_rows(old, head_layers(self.net, fam.kind), keep, len(categories), n)
        else:
            backbone = fam.backbone_weights if pretrained == "imagenet" else None
            ensure_downloaded(backbone)
            self.net = fam.builder(weights=None, weights_backbone=backbone, num_classes=n, **kw)
        if fam.kind == "ssd":
            _set_ssd_size(self.net, imgsz)

    def forward(self, images, targets=None):
        images = to_float(images)
        if self.training:
            if targets is None:
                raise DetforgeError("train mode needs targets", "call model.eval() to predict")
            shifted = [{"boxes": t["boxes"].float(), "labels": t["labels"] + 1} for t in targets]
            return self.net(images, shifted)
        out = []
        for o in self.net(images):
            keep = o["labels"] > 0  # sigmoid heads (RetinaNet, FCOS) may pick the unused slot 0
            out.append(
                {
                    "boxes": o["boxes"][keep],
                    "scores": o["scores"][keep],
                    "labels": o["labels"][keep] - 1,
                }
            )
        return out


def builder(name: str):
    def build(classes, **options) -> TorchvisionDetector:
        return TorchvisionDetector(name, classes, **options)

    build.__doc__ = f"{name}: {FAMILIES[name].builder.__name__} (torchvision)"
    return build
