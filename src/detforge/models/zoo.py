"""torchvision detectors behind the Detector contract (labels 0-based, uint8 input).

torchvision keeps resizing and normalization inside the model (GeneralizedRCNNTransform), so
what is trained is what is exported. Our labels are 0-based; torchvision reserves 0 for the
background, so the wrapper shifts by one at its edge.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial

import torch
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights
from torchvision.models import detection as D
from torchvision.models.detection.anchor_utils import AnchorGenerator

from detforge.errors import DetforgeError
from detforge.models.base import Detector, to_float
from detforge.models.registry import register_model
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
    """A torchvision detection model with our contract. Built through the family builders
    below, which say which options each family takes."""

    def __init__(self, name: str, classes: list[str], *, pretrained: str = "none", **options):
        fam = FAMILIES[name]
        options["imgsz"] = imgsz = int(options.get("imgsz") or fam.default_size)
        super().__init__(classes, options)
        self.name = name
        self.resize_mode = "stretch" if fam.kind == "ssd" else "letterbox"
        check_pretrained(pretrained)
        rois, anchor_sizes = options.get("rois"), options.get("anchor_sizes")
        kw = _kwargs(fam, imgsz, rois, anchor_sizes, options["max_det"])
        if options.get("trainable_layers") is not None:
            kw["trainable_backbone_layers"] = options["trainable_layers"]
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

    @contextlib.contextmanager
    def nms_left_out(self):
        """The final NMS keeps every box (IoU threshold 1) and 10x more candidates survive;
        set on this instance only, and restored on the way out."""
        holder = getattr(self.net, "roi_heads", self.net)
        iou, k = holder.nms_thresh, holder.detections_per_img
        holder.nms_thresh, holder.detections_per_img = 1.0, k * 10
        try:
            yield
        finally:
            holder.nms_thresh, holder.detections_per_img = iou, k

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


# One builder per family: the options each family really takes, typed, with defaults.


# the plain torchvision recipe's augmentation: IoU crops teach SSD's fixed anchors scale
@register_model(
    "ssdlite",
    task="detect",
    summary="SSDLite + MobileNetV3-Large (torchvision)",
    recipe={"augment": {"iou_crop": 0.5, "color": 0.3, "hue": 0.03}},
)
def ssdlite(
    classes, *, imgsz: int = 320, max_det: int = 100, pretrained: str = "none"
) -> TorchvisionDetector:
    return TorchvisionDetector(
        "ssdlite", classes, imgsz=imgsz, max_det=max_det, pretrained=pretrained
    )


def _rcnn(name: str):
    def build(
        classes,
        *,
        imgsz: int = FAMILIES[name].default_size,
        max_det: int = 100,
        rois: int | None = None,
        anchor_sizes: list | None = None,
        trainable_layers: int | None = None,
        pretrained: str = "none",
    ) -> TorchvisionDetector:
        return TorchvisionDetector(
            name,
            classes,
            imgsz=imgsz,
            max_det=max_det,
            rois=rois,
            anchor_sizes=anchor_sizes,
            trainable_layers=trainable_layers,
            pretrained=pretrained,
        )

    return build


register_model(
    "fasterrcnn-mobilenet", task="detect", summary="Faster R-CNN + MobileNetV3-Large FPN"
)(_rcnn("fasterrcnn-mobilenet"))
register_model(
    "fasterrcnn-mobilenet-320",
    task="detect",
    summary="Faster R-CNN + MobileNetV3-Large FPN, 320 px",
)(_rcnn("fasterrcnn-mobilenet-320"))
register_model("fasterrcnn", task="detect", summary="Faster R-CNN v2 + ResNet-50 FPN")(
    _rcnn("fasterrcnn")
)


@register_model("retinanet", task="detect", summary="RetinaNet v2 + ResNet-50 FPN")
def retinanet(
    classes,
    *,
    imgsz: int = 800,
    max_det: int = 100,
    anchor_sizes: list | None = None,
    trainable_layers: int | None = None,
    pretrained: str = "none",
) -> TorchvisionDetector:
    return TorchvisionDetector(
        "retinanet",
        classes,
        imgsz=imgsz,
        max_det=max_det,
        anchor_sizes=anchor_sizes,
        trainable_layers=trainable_layers,
        pretrained=pretrained,
    )


@register_model("fcos", task="detect", summary="FCOS + ResNet-50 FPN (anchor-free)")
def fcos(
    classes,
    *,
    imgsz: int = 800,
    max_det: int = 100,
    trainable_layers: int | None = None,
    pretrained: str = "none",
) -> TorchvisionDetector:
    return TorchvisionDetector(
        "fcos",
        classes,
        imgsz=imgsz,
        max_det=max_det,
        trainable_layers=trainable_layers,
        pretrained=pretrained,
    )
