"""What a prediction returns, per image: :class:`Result` (boxes) for detectors,
:class:`ClassResult` (probabilities) for classifiers. Each type also turns a backend's raw
outputs for a batch into results (``from_batch``), so the Predictor has no task forks."""

from __future__ import annotations

import json

import numpy as np
import torch

from detforge.data.viz import draw_boxes, draw_tracks


def nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> np.ndarray:
    """Class-wise NMS (torchvision's ``batched_nms``): indices kept, best first."""
    from torchvision.ops import batched_nms

    if len(boxes) == 0 or iou >= 1:
        return np.argsort(-scores, kind="stable")
    keep = batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), iou
    )
    return keep.numpy()


class Result:
    """Detections on one image: ``boxes`` float32 (N, 4) xyxy pixels of the original image,
    ``scores`` (N,), ``labels`` int64 (N,) 0-based, ``classes`` the model's class list."""

    __slots__ = (
        "boxes", "scores", "labels", "classes", "image", "source", "index", "time", "track_ids",
        "trails",
    )  # fmt: skip
    table_formats = ("jsonl", "csv", "coco")  # what `predict --format` can write
    has_boxes = True

    def __init__(self, boxes, scores, labels, classes, image=None, source="", index=0, time=None,
                 track_ids=None, trails=None):  # fmt: skip
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(scores, np.float32).reshape(-1)
        self.labels = np.asarray(labels, np.int64).reshape(-1)
        self.classes = classes
        self.image, self.source, self.index, self.time = image, source, index, time
        # set by tracking: an id per box (int64), and each id's recent centres (for drawing)
        self.track_ids = None if track_ids is None else np.asarray(track_ids, np.int64)
        self.trails = trails or {}

    def __len__(self) -> int:
        return len(self.boxes)

    names = property(lambda self: self.classes, doc="``classes``, by its name until 0.1.0")

    def __repr__(self) -> str:
        return f"Result({self.source!r}, {len(self)} detections)"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.image.shape[:2]) if self.image is not None else (0, 0)

    def to_dict(self) -> dict:
        """The prediction row every output shares (``predictions.jsonl``, the service's answer,
        ``predict --ray``'s columns): ``source``; ``boxes`` (x0 y0 x1 y1 pixels of the original
        image), ``scores``, ``labels`` (0-based), ``names`` as parallel lists, one entry per
        box; ``track_ids`` when tracked; ``frame`` and ``time`` for video."""
        d = {
            "source": self.source,
            "boxes": [[round(float(v), 2) for v in b] for b in self.boxes],
            "scores": [round(float(s), 5) for s in self.scores],
            "labels": [int(k) for k in self.labels],
            "names": [self.classes[int(k)] for k in self.labels],
        }
        if self.track_ids is not None:
            d["track_ids"] = [int(t) for t in self.track_ids]
        if self.time is not None or self.index:
            d["frame"] = self.index
        if self.time is not None:
            d["time"] = round(self.time, 4)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def box_masks(self, per_box: bool = False) -> np.ndarray:
        """Boolean HxW mask of the pixels inside any box (``per_box``: (N, H, W), one each)."""
        h, w = self.shape
        out = np.zeros((len(self), h, w) if per_box else (h, w), bool)
        for k, (x0, y0, x1, y1) in enumerate(np.rint(self.boxes).astype(int)):
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            (out[k] if per_box else out)[y0:y1, x0:x1] = True
        return out

    def crops(self) -> list[np.ndarray]:
        """The image region of each box (RGB uint8 copies)."""
        h, w = self.shape
        out = []
        for x0, y0, x1, y1 in np.rint(self.boxes).astype(int):
            x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
            out.append(self.image[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)].copy())
        return out

    def draw(self) -> np.ndarray:
        """The image with boxes, names and scores drawn (RGB uint8); tracked results show
        each box's id, in its id's colour, and a short trail of where it was."""

        if self.track_ids is not None:
            return draw_tracks(
                self.image, self.boxes, self.track_ids, self.labels, self.classes, self.trails
            )
        return draw_boxes(self.image, self.boxes, self.labels, self.classes, self.scores)

    def class_counts(self) -> dict[str, int]:
        """Detections per class name."""
        found, counts = np.unique(self.labels, return_counts=True)
        return {self.classes[int(k)]: int(c) for k, c in zip(found, counts)}

    def scored(self) -> dict:
        """What evaluation scores: ``boxes``, ``scores``, ``labels``."""
        return {"boxes": self.boxes, "scores": self.scores, "labels": self.labels}

    @classmethod
    def from_batch(cls, frames, raw, scales, classes, limits) -> list[Result]:
        """Results of one batch: ``raw[i]`` is (boxes, scores, labels) in model-input pixels
        of ``frames[i]``, brought to the input by ``scales[i]`` (sx, sy). Keeps scores >=
        ``limits.conf``, clips to the image's part of the input (letterbox: not the padding),
        runs class-wise NMS at ``limits.iou``, keeps ``limits.max_det`` and maps boxes to
        image pixels."""
        conf, iou, max_det = limits.conf, limits.iou, limits.max_det
        out = []
        for f, scale, (b, s, lab) in zip(frames, scales, raw):
            keep = s >= conf
            b, s, lab = b[keep].copy(), s[keep], lab[keep]
            h, w = f.hw
            b[:, 0::2] = b[:, 0::2].clip(0, w * scale[0])
            b[:, 1::2] = b[:, 1::2].clip(0, h * scale[1])
            keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])  # nothing left inside the image
            b, s, lab = b[keep], s[keep], lab[keep]
            keep = nms(b, s, lab, iou)[:max_det]
            b, s, lab = b[keep], s[keep], lab[keep].astype(np.int64)
            b = (b / np.tile(scale, 2)).clip(0, [w, h, w, h])
            out.append(cls(b, s, lab, classes, f.image, f.source, f.index, f.time))
        return out


class ClassResult:
    """Class probabilities for one image: ``probs`` (K,), ``top`` class indices best first,
    ``classes``; ``topk(k)`` gives ``[(name, probability), ...]``."""

    __slots__ = ("probs", "top", "classes", "image", "source", "index", "time")
    table_formats = ("jsonl",)  # top-5 classes per image
    has_boxes = False

    def __init__(self, probs, classes, image=None, source="", index=0, time=None):
        self.probs = np.asarray(probs, np.float32)
        self.top = np.argsort(-self.probs, kind="stable")
        self.classes = classes
        self.image, self.source, self.index, self.time = image, source, index, time

    def __len__(self) -> int:
        return 1

    names = property(lambda self: self.classes, doc="``classes``, by its name until 0.1.0")

    def __repr__(self) -> str:
        name, p = self.topk(1)[0]
        return f"ClassResult({self.source!r}, {name} {p:.3f})"

    def topk(self, k: int = 5) -> list[tuple[str, float]]:
        return [(self.classes[i], float(self.probs[i])) for i in self.top[:k]]

    def to_dict(self, k: int = 5) -> dict:
        """The prediction row (see :meth:`Result.to_dict`): no boxes; the top ``k`` classes as
        ``labels`` and ``names``, their probabilities as ``scores``, best first."""
        top = self.top[:k]
        d = {
            "source": self.source,
            "boxes": [],
            "scores": [round(float(self.probs[i]), 5) for i in top],
            "labels": [int(i) for i in top],
            "names": [self.classes[int(i)] for i in top],
        }
        if self.time is not None or self.index:
            d["frame"] = self.index
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def class_counts(self) -> dict[str, int]:
        """The top-1 class, counted once."""
        return {self.classes[int(self.top[0])]: 1}

    def scored(self) -> dict:
        """What evaluation scores: ``probs``."""
        return {"probs": self.probs}

    @classmethod
    def from_batch(cls, frames, raw, scales, classes, limits=None) -> list[ClassResult]:
        """Results of one batch: ``raw[i]`` is the (K,) probabilities of ``frames[i]``."""
        return [cls(p, classes, f.image, f.source, f.index, f.time) for f, p in zip(frames, raw)]

    def draw(self) -> np.ndarray:
        from PIL import Image, ImageDraw

        img = Image.fromarray(self.image)
        d = ImageDraw.Draw(img)
        for k, (n, p) in enumerate(self.topk(3)):
            d.text((6, 6 + 14 * k), f"{n} {p:.2f}", fill=(255, 255, 0) if k == 0 else (255,) * 3)
        return np.asarray(img)
