"""The det-n/s/m network: a depthwise-separable backbone, a light PAN neck and a GFL-style
head on strides 8, 16 and 32. Built for onnxruntime on x86 CPUs: every convolution is
followed by BatchNorm and ReLU (which onnxruntime folds and fuses into the convolution), and
every channel count is a multiple of 16 (the blocked NCHWc kernels' width)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

STRIDES = (8, 16, 32)
PRIOR = 0.01  # initial foreground probability of every classification output


@dataclass(frozen=True)
class Size:
    """Widths of the stem and the four backbone stages, blocks per stage, neck width."""

    widths: tuple[int, int, int, int, int]
    depths: tuple[int, int, int, int]
    neck: int
    head_depth: int = 2


SIZES = {
    "n": Size((16, 32, 64, 128, 256), (1, 2, 3, 2), 64),
    "s": Size((16, 48, 96, 192, 384), (1, 2, 4, 2), 96),
    "m": Size((32, 64, 128, 256, 512), (1, 3, 6, 3), 128),
}


class ConvBN(nn.Module):
    """Convolution + BatchNorm (+ ReLU): one fused convolution in the exported graph."""

    def __init__(
        self, c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True
    ):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SepBlock(nn.Module):
    """Depthwise k x k then pointwise 1 x 1; a residual when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, k: int = 3):
        super().__init__()
        self.dw = ConvBN(c_in, c_in, k, stride, groups=c_in)
        self.pw = ConvBN(c_in, c_out, 1, act=stride != 1 or c_in != c_out)
        self.residual = stride == 1 and c_in == c_out
        self.act = nn.ReLU(inplace=True) if self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return self.act(x + y) if self.residual else y


class Backbone(nn.Module):
    """Stem (3x3 stride 2) and four stages that halve the resolution; returns the features at
    strides 8, 16 and 32. Later stages use 5x5 depthwise kernels (a wider view for little
    compute)."""

    def __init__(self, size: Size):
        super().__init__()
        w, d = size.widths, size.depths
        self.stem = ConvBN(3, w[0], 3, 2)
        self.stages = nn.ModuleList()
        for i in range(4):
            k = 3 if i < 2 else 5
            blocks = [SepBlock(w[i], w[i + 1], 2, k)]
            blocks += [SepBlock(w[i + 1], w[i + 1], 1, k) for _ in range(d[i] - 1)]
            self.stages.append(nn.Sequential(*blocks))
        self.channels = w[2:]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats[1:]


class PAN(nn.Module):
    """Path aggregation: 1x1 laterals to one width, a top-down pass (nearest upsampling +
    add + separable conv) and a bottom-up pass (stride-2 separable conv + add + separable
    conv)."""

    def __init__(self, channels, width: int):
        super().__init__()
        self.lateral = nn.ModuleList(ConvBN(c, width, 1) for c in channels)
        self.top_down = nn.ModuleList(SepBlock(width, width, 1, 5) for _ in channels[:-1])
        self.down = nn.ModuleList(SepBlock(width, width, 2, 5) for _ in channels[:-1])
        self.bottom_up = nn.ModuleList(SepBlock(width, width, 1, 5) for _ in channels[:-1])

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        lat = [f(x) for f, x in zip(self.lateral, feats)]
        td = [lat[-1]]
        for i in range(len(lat) - 2, -1, -1):
            up = F.interpolate(td[0], size=lat[i].shape[-2:], mode="nearest")
            td.insert(0, self.top_down[i](lat[i] + up))
        out = [td[0]]
        for i in range(1, len(td)):
            out.append(self.bottom_up[i - 1](td[i] + self.down[i - 1](out[-1])))
        return out


class Head(nn.Module):
    """Per level: a tower of separable convs, then 1x1 outputs for the class scores (logits,
    bias set to the prior) and the box side distributions (4 x (reg_max + 1) bins)."""

    def __init__(self, width: int, num_classes: int, reg_max: int, depth: int, levels: int):
        super().__init__()
        self.towers = nn.ModuleList(
            nn.Sequential(*(SepBlock(width, width, 1, 5) for _ in range(depth)))
            for _ in range(levels)
        )
        self.cls = nn.ModuleList(nn.Conv2d(width, num_classes, 1) for _ in range(levels))
        self.reg = nn.ModuleList(nn.Conv2d(width, 4 * (reg_max + 1), 1) for _ in range(levels))
        for c in self.cls:
            nn.init.constant_(c.bias, -math.log((1 - PRIOR) / PRIOR))
            nn.init.normal_(c.weight, std=0.01)
        for r in self.reg:
            nn.init.constant_(r.bias, 0.0)
            nn.init.normal_(r.weight, std=0.01)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> class logits (B, A, K) and side logits (B, A, 4 * (reg_max + 1)), the anchors of
        all levels concatenated row-major, finest first."""
        cls, reg = [], []
        for x, tower, c, r in zip(feats, self.towers, self.cls, self.reg):
            t = tower(x)
            cls.append(c(t).flatten(2).transpose(1, 2))
            reg.append(r(t).flatten(2).transpose(1, 2))
        return torch.cat(cls, 1), torch.cat(reg, 1)


def anchor_points(imgsz: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres (A, 2) in input pixels and their strides (A,), in the head's order."""
    points, strides = [], []
    for s in STRIDES:
        n = math.ceil(imgsz / s)
        c = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) * s
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        points.append(torch.stack([xx.flatten(), yy.flatten()], 1))
        strides.append(torch.full((n * n,), float(s), device=device))
    return torch.cat(points), torch.cat(strides)


def decode(reg: torch.Tensor, points: torch.Tensor, strides: torch.Tensor, reg_max: int):
    """Side logits (..., A, 4 * (R + 1)) -> expected sides (..., A, 4) in strides and boxes
    (..., A, 4) xyxy in pixels."""
    bins = torch.arange(reg_max + 1, dtype=reg.dtype, device=reg.device)
    p = reg.unflatten(-1, (4, reg_max + 1)).softmax(-1)
    sides = (p * bins).sum(-1)
    d = sides * strides[:, None]
    boxes = torch.cat([points - d[..., :2], points + d[..., 2:]], -1)
    return sides, boxes


# torchvision backbones: (builder, ImageNet weights enum, stage ends at strides 8/16/32)
TORCHVISION = {
    "mobilenet_v3_large": ("mobilenet_v3_large", "MobileNet_V3_Large_Weights", (7, 13, 17)),
    "resnet18": ("resnet18", "ResNet18_Weights", None),
}
BACKBONES = ("own", *TORCHVISION)


class TorchvisionBackbone(nn.Module):
    """A torchvision classification network cut into its stride 8, 16 and 32 stages."""

    def __init__(self, name: str, weights=None):
        super().__init__()
        import torchvision

        fn, _, cuts = TORCHVISION[name]
        net = getattr(torchvision.models, fn)(weights=weights)
        if cuts is None:  # ResNet: stem + layer1-2, layer3, layer4
            self.stages = nn.ModuleList(
                [
                    nn.Sequential(
                        net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2
                    ),
                    net.layer3,
                    net.layer4,
                ]
            )
        else:
            f, (a, b, c) = net.features, cuts
            self.stages = nn.ModuleList([f[:a], f[a:b], f[b:c]])
        with torch.no_grad():
            feats = self.forward(torch.zeros(1, 3, 64, 64))
        self.channels = tuple(x.shape[1] for x in feats)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats
