"""det-n's training targets and losses.

Assignment is task-aligned (TOOD): among the anchor points inside a ground-truth box, the
``topk`` with the highest ``score**alpha * IoU**beta`` of their prediction become its
positives. Early predictions are noise, so for the first ``static_steps`` optimizer steps a
fixed prior stands in for them (score 1, and the IoU of a square of 5 strides centred on the
point: ATSS's anchor), which makes the first assignments geometric and stable. Losses: quality
focal loss on the class scores (the target is the IoU the box reaches), distribution focal
loss on the side bins, and GIoU on the boxes, weighted by that quality.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, generalized_box_iou_loss

TOPK, ALPHA, BETA = 13, 1.0, 6.0
WEIGHTS = {"qfl": 1.0, "dfl": 0.25, "giou": 2.0}


@torch.no_grad()
def assign(scores, boxes, points, strides, gt_boxes, gt_labels, static: bool):
    """One image: ``scores`` (A, K) probabilities, ``boxes`` (A, 4) predicted, ``gt_*`` (M, ...)
    -> the gt index of each anchor (A,), -1 for background."""
    a, m = len(points), len(gt_boxes)
    owner = torch.full((a,), -1, dtype=torch.long, device=points.device)
    if m == 0:
        return owner
    x, y = points[:, 0], points[:, 1]
    inside = (
        (x[None] > gt_boxes[:, 0:1])
        & (x[None] < gt_boxes[:, 2:3])
        & (y[None] > gt_boxes[:, 1:2])
        & (y[None] < gt_boxes[:, 3:4])
    )  # (M, A)
    centre = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    near = (points[None] - centre[:, None]).abs().amax(-1) < 2.5 * strides[None]
    candidate = inside | (near & _small(gt_boxes, strides))  # tiny boxes may hold no point
    half = 2.5 * strides[:, None]
    prior = box_iou(gt_boxes, torch.cat([points - half, points + half], 1))
    if static:
        metric = prior**BETA
    else:  # the prior breaks ties where no prediction overlaps a box yet
        iou = box_iou(gt_boxes, boxes).clamp(min=0)
        metric = scores[:, gt_labels].T.clamp(min=1e-9) ** ALPHA * iou**BETA + 1e-9 * prior
    metric = torch.where(candidate, metric, torch.full_like(metric, -1.0))
    k = min(TOPK, a)
    top, idx = metric.topk(k, dim=1)
    chosen = torch.zeros_like(candidate)
    chosen.scatter_(1, idx, top >= 0)  # every box gets its k best candidates
    chosen &= candidate
    # an anchor chosen by several boxes goes to the one it fits best
    best = torch.where(chosen, metric, torch.full_like(metric, -2.0)).argmax(0)
    return torch.where(chosen.any(0), best, owner)


def _small(gt_boxes, strides) -> torch.Tensor:
    """(M, 1): boxes under two of the finest strides on a side, which may contain no centre."""
    side = (gt_boxes[:, 2:] - gt_boxes[:, :2]).amin(1, keepdim=True)
    return side < 2 * strides.min()


def quality_focal(logits, target, beta: float = 2.0) -> torch.Tensor:
    """Quality focal loss (GFL): BCE to a soft target, scaled by |p - target|^beta. Summed."""
    p = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * (p - target).abs().pow(beta)).sum()


def distribution_focal(side_logits, sides, reg_max: int) -> torch.Tensor:
    """DFL: cross-entropy to the two bins around each target side (in strides). (P, 4)."""
    t = sides.clamp(0, reg_max - 0.01)
    left = t.floor().long()
    wl = left + 1 - t
    logp = side_logits.log_softmax(-1)
    ll = logp.gather(-1, left[..., None])[..., 0]
    lr = logp.gather(-1, (left + 1)[..., None])[..., 0]
    return -(ll * wl + lr * (1 - wl)).mean(-1)


def losses(cls, reg, sides, boxes, points, strides, targets, reg_max: int, static: bool):
    """The batch's losses: ``cls`` (B, A, K) logits, ``reg`` (B, A, 4(R+1)) side logits,
    ``sides``/``boxes`` (B, A, 4) decoded, ``targets`` per image (boxes xyxy in input pixels,
    labels). Normalized by the number of positives in the batch."""
    scores = cls.detach().sigmoid()
    target = torch.zeros_like(cls)
    pos_box, pos_gt, pos_reg, pos_quality, pos_side_t = [], [], [], [], []
    for b, t in enumerate(targets):
        gt, lab = t["boxes"].to(boxes.dtype), t["labels"]
        owner = assign(scores[b], boxes[b].detach(), points, strides, gt, lab, static)
        pos = (owner >= 0).nonzero()[:, 0]
        if len(pos) == 0:
            continue
        g = gt[owner[pos]]
        iou = box_iou(boxes[b, pos].detach(), g).diagonal().clamp(min=0)
        target[b, pos, lab[owner[pos]]] = iou.to(target.dtype)
        pt, st = points[pos], strides[pos, None]
        pos_side_t.append(torch.cat([pt - g[:, :2], g[:, 2:] - pt], 1) / st)
        pos_box.append(boxes[b, pos])
        pos_gt.append(g)
        pos_reg.append(reg[b, pos])
        pos_quality.append(iou)
    n = max(sum(len(q) for q in pos_quality), 1)
    qfl = quality_focal(cls.float(), target.float()) / n
    if not pos_box:
        zero = (reg.sum() + sides.sum()) * 0.0
        return {"qfl": qfl * WEIGHTS["qfl"], "dfl": zero, "giou": zero}
    w = torch.cat(pos_quality).clamp(min=0.1)  # weight boxes by how well they already fit
    giou = generalized_box_iou_loss(
        torch.cat(pos_box).float(), torch.cat(pos_gt).float(), reduction="none"
    )
    r = torch.cat(pos_reg).float().unflatten(-1, (4, reg_max + 1))
    dfl = distribution_focal(r, torch.cat(pos_side_t), reg_max)
    norm = w.sum()
    return {
        "qfl": qfl * WEIGHTS["qfl"],
        "dfl": (dfl * w).sum() / norm * WEIGHTS["dfl"],
        "giou": (giou * w).sum() / norm * WEIGHTS["giou"],
    }
