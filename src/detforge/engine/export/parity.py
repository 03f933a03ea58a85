"""The parity check run after every export: the exported graph against the PyTorch model on
the same images, through the same backend protocol the Predictor uses."""

from __future__ import annotations

import numpy as np
import torch

from detforge.data.synth import render
from detforge.errors import DetforgeError

PROB_TOL = 1e-4  # f32 runtimes agree to ~1e-6 on probabilities; this leaves room for kernels


def parity_images(n: int, size: int, seed: int = 1) -> np.ndarray:
    """``n`` deterministic uint8 (3, size, size) test images: synthetic shapes scenes."""

    rng = np.random.default_rng(seed)
    ims = [np.asarray(render(rng, size, size, 3)[0]) for _ in range(n)]
    return np.ascontiguousarray(np.stack(ims).transpose(0, 3, 1, 2))


def check(reference, exported, path, n: int, size: int, runtime: str = "ONNX") -> dict:
    """Run both backends on ``n`` test images and compare: detections must pair up (same
    class, IoU >= 0.99, score within 1e-3); probabilities must agree within 1e-4 with the
    same top-1. Raises with the figures when they do not."""
    x = parity_images(n, size)
    ref, got = reference(x), exported(x)
    if "batch_index" in reference.output_names:
        return _detections(ref, got, path, runtime)
    return _probs(np.stack(ref), np.stack(got), path, runtime)


def _detections(ref: list, got: list, path, runtime: str) -> dict:
    n = unmatched = 0
    worst_iou, worst_ds = 1.0, 0.0
    for r, g in zip(ref, got):
        for a, b in ((_safe(r), g), (_safe(g), r)):
            u, wi, wd = _match(a, b, 0.99, 1e-3)
            n += len(a[0])
            unmatched += u
            worst_iou, worst_ds = min(worst_iou, wi), max(worst_ds, wd)
    if unmatched:
        raise DetforgeError(
            f"{path}: {runtime} and PyTorch disagree on {unmatched} of {n} detections "
            f"(worst IoU {worst_iou:.4f}, score diff {worst_ds:.2g})",
            "try another --opset; please report the model and versions",
        )
    return {
        "detections": n,
        "unmatched": unmatched,
        "worst_iou": round(worst_iou, 6),
        "worst_score_diff": float(f"{worst_ds:.3g}"),
    }


def _probs(ref: np.ndarray, got: np.ndarray, path, runtime: str) -> dict:
    diff = float(np.abs(ref - got).max())
    # a top-1 that flips between two classes tied within the tolerance is not a disagreement
    top2 = np.sort(ref, 1)[:, -2:] if ref.shape[1] > 1 else np.zeros((len(ref), 2))
    tied = top2[:, 1] - top2[:, 0] <= 2 * PROB_TOL
    same = bool(((ref.argmax(1) == got.argmax(1)) | tied).all())
    if diff > PROB_TOL or not same:
        raise DetforgeError(
            f"{path}: {runtime} and PyTorch probabilities differ by {diff:.2g}",
            "try another --opset; please report the model and versions",
        )
    return {"images": len(ref), "max_prob_diff": float(f"{diff:.3g}"), "same_top1": same}


def _match(a, b, iou_min: float, score_tol: float) -> tuple[int, float, float]:
    """Each detection of ``a`` (above ``a``'s truncation margin) must have one in ``b`` of
    the same label; returns (unmatched, worst IoU, worst score difference)."""
    from torchvision.ops import box_iou

    (ba, sa, la), (bb, sb, lb) = a, b
    if len(ba) == 0:
        return 0, 1.0, 0.0
    if len(bb) == 0:
        return len(ba), 0.0, 1.0
    ious = np.nan_to_num(box_iou(torch.from_numpy(ba), torch.from_numpy(bb)).numpy())
    # boxes clipped flat at the border have no area: compare their corners instead
    flat = (ba[:, 2:] - ba[:, :2]).min(1)[:, None] < 1e-3
    same = np.abs(ba[:, None] - bb[None]).max(2) <= 1e-2
    ious[flat & same] = 1.0
    ious[la[:, None] != lb[None, :]] = 0
    ds = np.abs(sa[:, None] - sb[None, :])
    ok = (ious >= iou_min) & (ds <= score_tol)
    best = np.where(ok, ious, -1).max(1)
    unmatched = int((best < 0).sum())
    worst_iou = float(best[best >= 0].min()) if (best >= 0).any() else 0.0
    worst_ds = float(np.where(ok, ds, np.inf).min(1)[best >= 0].max()) if (best >= 0).any() else 1
    return unmatched, worst_iou, worst_ds


def _safe(dets, margin: float = 2e-3):
    """Drop each class's detections within ``margin`` of that class's lowest score: where a
    list was cut (top-k, max detections), a 1e-7 difference may put them on either side."""
    b, s, lab = dets
    keep = np.ones(len(s), bool)
    for c in np.unique(lab):
        k = lab == c
        if k.sum() > 1:  # a lone detection was not cut from a list
            keep[k] = s[k] > s[k].min() + margin
    return b[keep], s[keep], lab[keep]
